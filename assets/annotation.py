"""Annotation rounds as assets: ``annotation_tasks[round]`` -> ``annotations[round]`` ->
``consensus_labels``.

Thin: selection, rendering, Label Studio sync, export decoding, consensus and adjudication are
plain functions in :mod:`annotation`; these assets read inputs, call them, write the files and
report PHI-free counts. Pre-annotations and uncertainty scores come from the same round's
``annotation_model`` (``annotation/round-N/model/``); without them the round has no
pre-annotations and selection falls back to the stratified seed set.
"""

import dagster as dg
import pandas as pd

from assets.partitions import round_partitions
from assets.resources import DeidSecrets, LabelStudioResource, MedcurateHome

GROUP = "annotation"


class RoundTasksConfig(dg.Config):
    """How a round is cut: samples per round, every k-th slice, annotators per task."""

    n_samples: int = 8
    every: int = 8
    max_findings: int = 4  # extra slices per sample, one per candidate finding of the model
    annotators: int = 3
    seed: int = 0


@dg.asset(
    partitions_def=round_partitions,
    deps=[
        dg.AssetDep("series_volumes", partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep("annotation_model"),  # the same round's pre-annotations and scores
    ],
    group_name=GROUP,
    kinds={"labelstudio", "png", "parquet"},
    description=(
        "The round's samples rendered as windowed PNG slices (every k-th plus candidate slices) "
        "with their voxel mapping (round-N/slices.parquet), and the round's Label Studio project "
        "with tasks, validated pre-annotations and k-fold overlap (round-N/round.json)."
    ),
)
def annotation_tasks(
    context: dg.AssetExecutionContext,
    home: MedcurateHome,
    labelstudio: LabelStudioResource,
    config: RoundTasksConfig,
) -> dg.MaterializeResult:
    from annotation.rounds import (
        Api,
        ensure_project,
        project_title,
        read_round_info,
        render_round,
        sync_tasks,
        write_round_info,
    )
    from annotation.selection import choose_round_samples

    z = home.zones()
    rk = context.partition_key
    volumes = pd.read_parquet(z.volumes / "volumes.parquet")
    info = read_round_info(z.annotation, rk)
    if info:  # a round keeps its samples once cut
        samples, how = list(info["samples"]), "kept from round.json"
    else:
        samples, how = choose_round_samples(
            volumes, z.annotation, z.labels / "labels.parquet", rk, config.n_samples, config.seed
        )
    if not samples:
        raise dg.Failure(f"{rk}: no samples left to annotate")
    slices, tasks = render_round(
        volumes, samples, z.volumes, z.annotation, rk, config.every, config.max_findings
    )
    round_dir = z.annotation / rk
    slices.to_parquet(round_dir / "slices.parquet", index=False)
    api = Api(*labelstudio.connection())
    pid, created = ensure_project(
        api,
        project_title(rk),
        config.annotators,
        round_dir,
        known_id=int(info["project_id"]) if info else None,
    )
    imported, existing = sync_tasks(api, pid, tasks)
    write_round_info(round_dir / "round.json", rk, pid, config.annotators, slices)
    context.log.info(f"{rk}: project {pid}, {imported} tasks imported, {existing} already there")
    return dg.MaterializeResult(
        metadata={
            "project_id": pid,
            "project_created": created,
            "selection": how,
            "samples": len(samples),
            "tasks": len(tasks),
            "tasks_imported": imported,
            "tasks_already_there": existing,
            "with_pre_annotations": sum(bool(t["predictions"]) for t in tasks),
            "candidate_slices": int(slices["candidate"].sum()),
            "annotators_per_task": config.annotators,
        }
    )


@dg.asset(
    partitions_def=round_partitions,
    deps=[annotation_tasks],
    group_name=GROUP,
    kinds={"labelstudio", "nifti", "parquet"},
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
    from annotation.adjudication import round_kappa
    from annotation.export import ANNOTATION_COLUMNS, export_round
    from annotation.rounds import Api, read_round_info

    z = home.zones()
    rk = context.partition_key
    info = read_round_info(z.annotation, rk)
    if info is None:
        raise dg.Failure(f"{rk}: no round.json; materialize annotation_tasks[{rk}] first")
    api = Api(*labelstudio.connection())
    rows, complete = export_round(api, z, rk, info, secrets.salt())
    table = pd.DataFrame(rows, columns=ANNOTATION_COLUMNS)
    kappa = round_kappa(table) if len(table) else None
    return dg.MaterializeResult(
        metadata={
            "annotations": len(table),
            "annotators": int(table["annotator"].nunique()) if len(table) else 0,
            "tasks": len(info["task_keys"]),
            "tasks_complete": complete,
            "with_mask": int(table["has_mask"].sum()) if len(table) else 0,
            "kappa": float(kappa) if kappa is not None else float("nan"),
            "path": dg.MetadataValue.path(str(z.annotation / rk / "annotations.parquet")),
        }
    )


class ConsensusConfig(dg.Config):
    method: str = "staple"
    min_dice: float = 0.5
    adjudicate: bool = True


@dg.asset(
    deps=[annotations],
    group_name=GROUP,
    kinds={"nifti", "parquet"},
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
    from annotation.adjudication import Thresholds, build_consensus

    z = home.zones()
    thresholds = Thresholds(min_dice=config.min_dice, method=config.method)
    api = None
    if config.adjudicate:
        from annotation.rounds import Api

        api = Api(*labelstudio.connection())
    summary = build_consensus(z, thresholds, api, secrets.salt() if api else b"")
    context.log.info(
        f"consensus: {summary['samples']} samples over {len(summary['rounds'])} rounds, "
        f"{summary['pending_adjudication']} pending adjudication"
    )
    return dg.MaterializeResult(
        metadata={
            "samples": summary["samples"],
            "rounds": dg.MetadataValue.json(summary["rounds"]),
            "labels": dg.MetadataValue.json(summary["labels"]),
            "kappa": summary["kappa"],
            "mean_dice": summary["mean_dice"],
            "pending_adjudication": summary["pending_adjudication"],
            "adjudicated_samples": summary["adjudicated"],
            "path": dg.MetadataValue.path(str(z.labels / "labels.parquet")),
        }
    )
