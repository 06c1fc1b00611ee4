"""The annotation room's stages, one plain function each (the assets are thin wrappers):

========================  =====================================================================
``run_annotation_model``  pre-annotations and uncertainty of a round (:mod:`annotation.model`)
``run_annotation_tasks``  cut the round, render its slices, keep its Label Studio project in step
``run_annotations``       export the round, decode it into per-annotator maps, class agreement
``run_consensus``         consensus of all rounds, adjudication (:mod:`annotation.adjudication`)
========================  =====================================================================

Each returns a StageResult (:mod:`medcurate.stage`): typed counts, ``metadata()`` and
``summary_line()``. A stage that cannot start (no samples left, a round not cut yet) raises
:class:`RoundNotReady`: retrying it would not help, unlike a Label Studio that is restarting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from annotation.adjudication import ConsensusResult, Thresholds, round_kappa, run_consensus
from annotation.client import LabelStudioClient
from annotation.export import ANNOTATION_COLUMNS, export_round
from annotation.instructions import dagster_asset_url, project_description, project_instruction
from annotation.model import ModelConfig, ModelOutcome, read_outcome, run_annotation_model
from annotation.rounds import (
    RoundProgress,
    project_title,
    read_round_info,
    render_round,
    write_round_info,
)
from annotation.selection import choose_round_samples
from medcurate.config import Zones
from medcurate.io import atomic_write_parquet
from medcurate.stage import PathValue, UrlValue

__all__ = [
    "AnnotationsResult",
    "ConsensusResult",
    "ModelConfig",
    "ModelOutcome",
    "RoundNotReady",
    "TasksConfig",
    "TasksResult",
    "Thresholds",
    "run_annotation_model",
    "run_annotation_tasks",
    "run_annotations",
    "run_consensus",
]


class RoundNotReady(RuntimeError):
    """A round stage cannot run yet (or any more): a person has to do something first."""


# --------------------------------------------------------------------------- annotation_tasks


@dataclass(frozen=True)
class TasksConfig:
    """How a round is cut: samples per round, every k-th slice, annotators per task."""

    n_samples: int = 8
    every: int = 8
    max_findings: int = 4  # extra slices per sample, one per candidate finding of the model
    annotators: int = 3
    seed: int = 0


@dataclass(frozen=True)
class TasksResult:
    round: str
    project_id: int
    project_created: bool
    selection: str  # how the samples were chosen, e.g. "control: 2, uncertainty: 6"
    samples: int
    tasks: int
    tasks_imported: int
    tasks_already_there: int
    with_pre_annotations: int
    candidate_slices: int
    annotators_per_task: int
    # "offered: ..." / "withheld: validation Dice 0.26 < floor 0.50" (the model's outcome.json)
    pre_annotations: str = ""
    project_url: str = ""  # the project's tasks in Label Studio

    @property
    def problems(self) -> list[str]:
        return []

    def metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {
            "project_id": self.project_id,
            "project_created": self.project_created,
            "selection": self.selection,
            "samples": self.samples,
            "tasks": self.tasks,
            "tasks_imported": self.tasks_imported,
            "tasks_already_there": self.tasks_already_there,
            "with_pre_annotations": self.with_pre_annotations,
            "candidate_slices": self.candidate_slices,
            "annotators_per_task": self.annotators_per_task,
        }
        if self.pre_annotations:
            md["pre_annotations"] = self.pre_annotations
        if self.project_url:
            md["project_url"] = UrlValue(self.project_url)
        return md

    def summary_line(self) -> str:
        line = (
            f"{self.round}: project {self.project_id}, {self.tasks_imported} tasks imported, "
            f"{self.tasks_already_there} already there"
        )
        return f"{line}; pre-annotations {self.pre_annotations}" if self.pre_annotations else line


def pre_annotations_line(z: Zones, round: str, with_predictions: int) -> str:
    """What the round's model stage decided about pre-annotations (its ``outcome.json``)."""
    outcome = read_outcome(z, round)
    if outcome is not None:
        return str(outcome.get("pre_annotations", ""))
    if with_predictions:
        return "offered: model outcome not recorded (made before outcome.json existed)"
    return "none: annotation_model has not run for this round"


def run_annotation_tasks(
    z: Zones,
    round: str,
    config: TasksConfig,
    client: LabelStudioClient,
    dagster_url: str | None = None,
) -> TasksResult:
    """Cut the round (a round keeps its samples once cut: round.json wins over a new selection),
    render its slices into ``slices.parquet`` and ``images/``, and bring its Label Studio project
    in step (created once; only missing tasks imported; instructions, and a description that
    links back to this asset in Dagster at ``dagster_url``); then write ``round.json``."""
    volumes = pd.read_parquet(z.volumes_table)
    info = read_round_info(z, round)
    if info:
        samples, how = list(info["samples"]), "kept from round.json"
    else:
        samples, how = choose_round_samples(volumes, z, round, config.n_samples, config.seed)
    if not samples:
        raise RoundNotReady(f"{round}: no samples left to annotate")
    slices, tasks = render_round(volumes, samples, z, round, config.every, config.max_findings)
    atomic_write_parquet(slices, z.round_slices(round))
    asset_url = dagster_asset_url("annotation_tasks", round, base=dagster_url)
    project, created = client.ensure_project(
        project_title(round),
        config.annotators,
        z.round_dir(round),
        known_id=int(info["project_id"]) if info else None,
        description=project_description(f"annotation {round}", asset_url),
        instruction=project_instruction(asset_url),
    )
    imported, existing = client.sync_tasks(project, tasks)
    write_round_info(z, round, project, config.annotators, slices)
    with_pred = sum(bool(t["predictions"]) for t in tasks)
    return TasksResult(
        round=round,
        project_id=project,
        project_created=created,
        selection=how,
        samples=len(samples),
        tasks=len(tasks),
        tasks_imported=imported,
        tasks_already_there=existing,
        with_pre_annotations=with_pred,
        candidate_slices=int(slices["candidate"].sum()),
        annotators_per_task=config.annotators,
        pre_annotations=pre_annotations_line(z, round, with_pred),
        project_url=client.project_url(project),
    )


# --------------------------------------------------------------------------- annotations


@dataclass(frozen=True)
class AnnotationsResult:
    round: str
    annotations: int
    annotators: int
    tasks: int
    tasks_complete: int
    with_mask: int
    kappa: float  # class agreement of the round (NaN with fewer than two raters)
    path: str
    project_id: int = 0

    @property
    def round_key(self) -> str:
        """The round sensor's run key for this state of the round (the same string as
        :attr:`annotation.rounds.RoundProgress.run_key`): a sensor that finds it on the latest
        materialization with every task complete knows that state was already exported."""
        return RoundProgress(self.round, self.project_id, self.tasks_complete, self.tasks).run_key

    @property
    def problems(self) -> list[str]:
        return []

    def metadata(self) -> dict[str, Any]:
        return {
            "round_key": self.round_key,
            "annotations": self.annotations,
            "annotators": self.annotators,
            "tasks": self.tasks,
            "tasks_complete": self.tasks_complete,
            "with_mask": self.with_mask,
            "kappa": self.kappa,
            "path": PathValue(self.path),
        }

    def summary_line(self) -> str:
        return (
            f"{self.round}: {self.annotations} annotations by {self.annotators} annotators, "
            f"{self.tasks_complete}/{self.tasks} tasks complete, kappa {self.kappa:.3f}"
        )


def run_annotations(
    z: Zones, round: str, client: LabelStudioClient, salt: bytes
) -> AnnotationsResult:
    """Export the round from Label Studio into ``annotations.parquet`` and each annotator's label
    maps (pseudonymous annotators: keyed by ``salt``), with the round's class agreement."""
    info = read_round_info(z, round)
    if info is None:
        raise RoundNotReady(f"{round}: no round.json; materialize annotation_tasks[{round}] first")
    rows, complete = export_round(client, z, round, info, salt)
    table = pd.DataFrame(rows, columns=ANNOTATION_COLUMNS)
    kappa = round_kappa(table) if len(table) else None
    return AnnotationsResult(
        round=round,
        annotations=len(table),
        annotators=int(table["annotator"].nunique()) if len(table) else 0,
        tasks=len(info["task_keys"]),
        tasks_complete=complete,
        with_mask=int(table["has_mask"].sum()) if len(table) else 0,
        kappa=float(kappa) if kappa is not None else float("nan"),
        path=str(z.round_annotations(round)),
        project_id=int(info["project_id"]),
    )
