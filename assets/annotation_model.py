"""``annotation_model[round]``: pre-annotations and uncertainty for a round's samples.

Thin on purpose: the stage is :func:`annotation.model.run_annotation_model` (round 1: the
intensity proposal of :mod:`annotation.proposal`; later rounds: a small UNet trained on the labels
of the earlier rounds). Outputs, under ``annotation/round-N/model/``: ``pred/<sample_id>.nii.gz``
(uint8 masks in each volume's geometry) for every sample without a label, ``scores.parquet``
(sample_id, uncertainty, calibrated p_abnormal, raw score, model_version), ``outcome.json`` and,
from round 2, ``model.pt``. A trained model whose held-out Dice is below ``min_validation_dice``
writes no masks: the metadata's ``pre_annotations`` says "withheld: ..." and the round goes
without them. ``annotation_tasks[round]`` reads these files to pick samples and attach
pre-annotations.
"""

import dagster as dg

from annotation.model import ModelConfig, run_annotation_model
from assets.partitions import round_partitions
from assets.resources import MedcurateHome
from assets.stage import materialized


class AnnotationModelConfig(dg.Config):
    """Training knobs exposed in the launchpad (the rest of ModelConfig keeps its defaults)."""

    epochs: int = ModelConfig.epochs
    steps_per_epoch: int = ModelConfig.steps_per_epoch
    seed: int = ModelConfig.seed
    # below this held-out Dice the round goes without pre-annotations (0: always offered)
    min_validation_dice: float = ModelConfig.min_validation_dice


@dg.asset(
    partitions_def=round_partitions,
    # no declared edge to series_volumes: it reads volumes.parquet, but a batch -> round edge
    # would pull this asset into the inbox sensor's batch job (a job cannot mix partitions)
    group_name="annotation",
    kinds={"pytorch", "nifti", "parquet"},
    description=(
        "Pre-annotation masks and per-sample uncertainty for an annotation round: an intensity "
        "proposal in round 1, a small MONAI 2D UNet trained on earlier rounds' consensus labels "
        "afterwards, offered only when its held-out Dice clears min_validation_dice. "
        "annotation/round-N/model/{pred/*.nii.gz, scores.parquet, outcome.json, model.pt}."
    ),
)
def annotation_model(
    context: dg.AssetExecutionContext, home: MedcurateHome, config: AnnotationModelConfig
) -> dg.MaterializeResult:
    cfg = ModelConfig(
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        seed=config.seed,
        min_validation_dice=config.min_validation_dice,
    )
    return materialized(context, run_annotation_model(home.zones(), context.partition_key, cfg))
