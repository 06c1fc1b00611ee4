"""Assets: curated samples -> patient-level splits -> an immutable dataset release.

Thin wrappers over :mod:`medcurate.store.run`: each builds its inputs from resources and config,
calls the stage and returns its PHI-free metadata. A blocking check on the splits (no patient
in two splits) stands between them and the release.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from assets.resources import MedcurateHome
from assets.stage import checked, materialized
from medcurate.splits import SplitConfig
from medcurate.store.objects import StoreError
from medcurate.store.run import (
    DEFAULT_DATASET,
    MissingTableError,
    ReleaseSettings,
    check_splits,
    release_store,
    run_curate,
    run_release,
    run_splits,
)
from quality.runner import config_for
from quality.suites.splits import DEFAULT_EVALUATION_SPLITS as EVALUATION
from quality.suites.splits import DEFAULT_POSITIVE_CLASSES as POSITIVE


class SplitsConfig(dg.Config):
    """Split settings; the previous release of ``dataset`` fixes already-assigned patients."""

    dataset: str = DEFAULT_DATASET
    store: str = ""  # fsspec URL of the release store; default MEDCURATE_HOME/releases
    train: float = 0.70
    validation: float = 0.15
    test: float = 0.15
    folds: int = 5
    seed: int = 0
    holdout_sites: list[str] = []  # noqa: RUF012 (dagster Config fields are pydantic)

    def split_config(self) -> SplitConfig:
        """The split settings, with the evaluation splits' positive floor taken from the splits
        suite of quality.yaml: the assignment meets what the blocking check will ask of it."""
        ratios = (self.train, self.validation, self.test)
        holdout = tuple(self.holdout_sites)
        q = config_for("splits")
        return SplitConfig(
            ratios=ratios,
            folds=self.folds,
            seed=self.seed,
            holdout_sites=holdout,
            evaluation_splits=tuple(str(s) for s in q.get("evaluation_splits", EVALUATION)),
            positive_classes=tuple(str(c) for c in q.get("positive_classes", POSITIVE)),
            min_positives=int(q.get("min_positives", 1)),
        )


class ReleaseConfig(dg.Config):
    dataset: str = DEFAULT_DATASET
    store: str = ""
    description: str = ""


@contextmanager
def _one_line(store_step: str) -> Iterator[None]:
    """A missing upstream table, or a store that cannot be opened or read (unknown protocol,
    unsigned or forged version), fails the run with one line and no traceback."""
    try:
        yield
    except MissingTableError as exc:
        raise dg.Failure(str(exc)) from None
    except StoreError as exc:
        raise dg.Failure(f"{store_step} failed: {exc}") from None


@dg.asset(
    deps=[dg.AssetKey("series_volumes"), dg.AssetKey("consensus_labels")],
    group_name="release",
)
def curated_samples(context: dg.AssetExecutionContext, home: MedcurateHome) -> dg.MaterializeResult:
    """volumes.parquet joined with labels.parquet (samples without a label are 'unlabelled')."""
    with _one_line("curating"):
        result = run_curate(home.zones())
    return materialized(context, result)


@dg.asset(deps=[curated_samples], group_name="release")
def dataset_splits(
    context: dg.AssetExecutionContext, config: SplitsConfig, home: MedcurateHome
) -> dg.MaterializeResult:
    """Patient-level stratified splits; patients of the previous release keep their split."""
    z = home.zones()
    with _one_line("reading the previous release"):
        store = release_store(z, config.store)
        result = run_splits(z, config.split_config(), store, config.dataset)
    return materialized(context, result)


@dg.asset_check(asset=dataset_splits, blocking=True)
def no_patient_in_two_splits(home: MedcurateHome) -> dg.AssetCheckResult:
    """Every patient's samples sit in one split; a leak stops dataset_release."""
    return checked(check_splits(home.zones()))


@dg.asset(deps=[dataset_splits, dg.AssetKey("synthetic_samples")], group_name="release")
def dataset_release(
    context: dg.AssetExecutionContext, config: ReleaseConfig, home: MedcurateHome
) -> dg.MaterializeResult:
    """Publish ``releases/<dataset>/<vN>/`` atomically (a no-op when nothing changed)."""
    z = home.zones()
    settings = ReleaseSettings(config.dataset, config.description)
    with _one_line("publish"):
        result = run_release(z, settings, release_store(z, config.store), context.run_id)
    return materialized(context, result)
