"""Annotation rounds as assets: ``annotation_tasks[round]`` -> ``annotations[round]`` ->
``consensus_labels``.

Thin: each asset calls its stage in :mod:`annotation.stages` with the Label Studio client of
``LabelStudioResource`` and returns the stage's result. Pre-annotations and uncertainty scores
come from the same round's ``annotation_model`` (``annotation/round-N/model/``); without them the
round has no pre-annotations and selection falls back to the stratified seed set. Assets that
talk to Label Studio retry with backoff (a server restarting is worth waiting for); a round that
is not ready fails at once. (No ``from __future__ import annotations`` here: an asset is
called ``annotations``.)
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dagster as dg
from requests import HTTPError

from annotation.client import LabelStudioUnreachable, refused_message
from annotation.rounds import RoundProgress, rounds_progress
from annotation.rounds import progress_summary as progress_summary  # the round sensor's words
from annotation.stages import (
    RoundNotReady,
    TasksConfig,
    Thresholds,
    run_annotation_tasks,
    run_annotations,
    run_consensus,
)
from assets.partitions import round_partitions
from assets.resources import DeidSecrets, LabelStudioResource, MedcurateHome
from assets.stage import materialized
from medcurate.config import ConfigError

GROUP = "annotation"
#: Label Studio restarting or busy: try again after 5, 10, 20 s (plus jitter)
LABEL_STUDIO_RETRY = dg.RetryPolicy(
    max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def open_rounds(
    home: MedcurateHome, labelstudio: LabelStudioResource, rounds: Sequence[str]
) -> list[RoundProgress] | str:
    """Each round's progress in Label Studio, or why it cannot be read (the round sensor's skip
    reason: a server that is down, not set up or refusing the token is a reason to wait, with the
    fix, not an error)."""
    try:
        return rounds_progress(home.zones(), rounds, labelstudio.client().check())
    except (ConfigError, LabelStudioUnreachable) as exc:
        return str(exc)
    except HTTPError as exc:  # it answers, but refuses
        return refused_message(exc.response.status_code if exc.response is not None else 0)


@contextmanager
def not_retried() -> Iterator[None]:
    """A round that is not ready, or settings that are missing or refused (no Label Studio
    configured, a weak salt), fail the run at once: no retry would change them. Only a server
    that is restarting or busy is worth the retry policy's wait."""
    try:
        yield
    except (RoundNotReady, ConfigError) as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None


class RoundTasksConfig(dg.Config):
    """How a round is cut: samples per round, every k-th slice, annotators per task."""

    n_samples: int = TasksConfig.n_samples
    every: int = TasksConfig.every
    max_findings: int = TasksConfig.max_findings  # one extra slice per candidate finding
    annotators: int = TasksConfig.annotators
    seed: int = TasksConfig.seed


@dg.asset(
    partitions_def=round_partitions,
    deps=[
        dg.AssetDep("series_volumes", partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep("annotation_model"),  # the same round's pre-annotations and scores
    ],
    group_name=GROUP,
    kinds={"labelstudio", "png", "parquet"},
    retry_policy=LABEL_STUDIO_RETRY,
    description=(
        "The round's samples rendered as windowed PNG slices (every k-th plus candidate slices) "
        "with their voxel mapping (round-N/slices.parquet), and the round's Label Studio project "
        "with tasks, validated pre-annotations (when the round's model cleared its floor: "
        "metadata pre_annotations says offered or withheld), instructions, k-fold overlap "
        "(round-N/round.json) and a link to the project (project_url)."
    ),
)
def annotation_tasks(
    context: dg.AssetExecutionContext,
    home: MedcurateHome,
    labelstudio: LabelStudioResource,
    config: RoundTasksConfig,
) -> dg.MaterializeResult:
    cut = TasksConfig(**config.model_dump())
    with not_retried():
        result = run_annotation_tasks(
            home.zones(), context.partition_key, cut, labelstudio.client()
        )
    return materialized(context, result)


@dg.asset(
    partitions_def=round_partitions,
    deps=[annotation_tasks],
    group_name=GROUP,
    kinds={"labelstudio", "nifti", "parquet"},
    retry_policy=LABEL_STUDIO_RETRY,
    description=(
        "The round's snapshot export decoded: one row per annotator per task "
        "(round-N/annotations.parquet, pseudonymous annotators) and each annotator's 3D label map "
        "per sample in the volume's geometry. Re-running re-exports and rewrites the same files."
    ),
)
def annotations(
    context: dg.AssetExecutionContext,
    home: MedcurateHome,
    labelstudio: LabelStudioResource,
    secrets: DeidSecrets,
) -> dg.MaterializeResult:
    with not_retried():
        result = run_annotations(
            home.zones(), context.partition_key, labelstudio.client(), secrets.salt()
        )
    return materialized(context, result)


class ConsensusConfig(dg.Config):
    method: str = "staple"
    min_dice: float = 0.5
    adjudicate: bool = True


@dg.asset(
    deps=[annotations],
    group_name=GROUP,
    kinds={"nifti", "parquet"},
    retry_policy=LABEL_STUDIO_RETRY,
    description=(
        "Consensus of every round: class by majority vote, masks by STAPLE; Fleiss' kappa and "
        "pairwise Dice; samples that disagree go to an adjudication project and adjudicated "
        "slices win. labels/labels.parquet + labels/masks/<sample_id>.nii.gz."
    ),
)
def consensus_labels(
    context: dg.AssetExecutionContext,
    home: MedcurateHome,
    labelstudio: LabelStudioResource,
    secrets: DeidSecrets,
    config: ConsensusConfig,
) -> dg.MaterializeResult:
    thresholds = Thresholds(min_dice=config.min_dice, method=config.method)
    with not_retried():
        client = labelstudio.client() if config.adjudicate else None
        salt = secrets.salt() if client else b""
    return materialized(context, run_consensus(home.zones(), thresholds, client, salt))
