"""Assets: GAN augmentation, checked. Thin wrappers over :mod:`medcurate.augment`.

``gan_model`` trains on the train split only; ``synthetic_samples`` keeps only samples that pass
the privacy filter and its blocking check stops the release when too many were dropped or a
synthetic sample sits outside train; ``augmentation_report`` trains the evaluation classifier on
real and on real+synthetic data, paired across seeds, and attaches the verdict to the card.
"""

from dataclasses import replace

import dagster as dg

from assets.resources import MedcurateHome
from assets.stage import checked, materialized
from medcurate.augment.report import AugmentationSettings, run_augmentation_report
from medcurate.augment.run import (
    AugmentConfig,
    AugmentError,
    augment_preset,
    check_synthetic,
    run_gan_model,
    run_synthetic_samples,
)
from medcurate.evaluate import EvaluationError
from medcurate.store.objects import StoreError
from medcurate.store.run import DEFAULT_DATASET


class AugmentAssetConfig(dg.Config):
    preset: str = "small"  # small: this CPU in a minute; full: a GPU
    seed: int = 0
    gan_epochs: int = 0  # > 0 overrides the preset's epochs

    def augment(self) -> AugmentConfig:
        try:
            cfg = augment_preset(self.preset, self.seed)
        except AugmentError as exc:
            raise dg.Failure(str(exc)) from None
        if self.gan_epochs > 0:
            cfg = replace(cfg, gan=replace(cfg.gan, epochs=self.gan_epochs))
        return cfg


@dg.asset(deps=[dg.AssetKey("dataset_splits")], group_name="augmentation")
def gan_model(
    context: dg.AssetExecutionContext, config: AugmentAssetConfig, home: MedcurateHome
) -> dg.MaterializeResult:
    """A class-conditional GAN (MONAI Generator/Discriminator, hinge loss, spectral norm) on
    image+mask patches of the train split; checkpoint with config, data fingerprint, losses."""
    try:
        result = run_gan_model(home.zones(), config.augment())
    except AugmentError as exc:
        raise dg.Failure(f"gan_model: {exc}") from None
    return materialized(context, result)


@dg.asset(deps=[gan_model], group_name="augmentation")
def synthetic_samples(
    context: dg.AssetExecutionContext, config: AugmentAssetConfig, home: MedcurateHome
) -> dg.MaterializeResult:
    """Lesions generated, checked (MMD, MS-SSIM, diversity, precision/recall/density/coverage;
    nearest training record per patient) and pasted into real normal train slices."""
    try:
        result = run_synthetic_samples(home.zones(), config.augment())
    except AugmentError as exc:
        raise dg.Failure(f"synthetic_samples: {exc}") from None
    return materialized(context, result)


@dg.asset_check(asset=synthetic_samples, blocking=True)
def synthetic_train_only_and_not_memorized(home: MedcurateHome) -> dg.AssetCheckResult:
    """Every synthetic sample is in train, and the share dropped as too close to a training
    record is within the limit; else the release does not take them."""
    return checked(check_synthetic(home.zones()))


class AugmentationReportConfig(dg.Config):
    dataset: str = DEFAULT_DATASET
    version: str = "latest"
    store: str = ""
    preset: str = "small"
    seeds: list[int] = [0, 1]  # noqa: RUF012 (dagster Config fields are pydantic)


@dg.asset(deps=[dg.AssetKey("baseline_evaluation")], group_name="augmentation")
def augmentation_report(
    context: dg.AssetExecutionContext, config: AugmentationReportConfig, home: MedcurateHome
) -> dg.MaterializeResult:
    """Real vs real+synthetic training, paired across seeds, on the real test split: did the
    synthetic samples help? Attached to the release's dataset card."""
    settings = AugmentationSettings(
        config.dataset, config.version, config.store, config.preset, tuple(config.seeds)
    )
    try:
        result = run_augmentation_report(home.zones(), settings)
    except (EvaluationError, StoreError, ValueError) as exc:
        raise dg.Failure(f"augmentation_report: {exc}") from None
    return materialized(context, result)
