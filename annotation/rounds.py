"""Annotation rounds: the round's name, its files, its slices and its progress in Label Studio.

A round is a dynamic partition (``round-1``, ``round-2``...). Its files live in
``annotation/round-N/`` (paths from :class:`~medcurate.config.Zones`)::

    images/<sample_id>/<sample_id>_k<k>.png   windowed slices Label Studio serves as local files
    images/<sample_id>/<sample_id>_k<k>_context.png   the slice and its neighbours, side by side
    slices.parquet                            one row per task: the slice, its voxel mapping
                                              (radiological, from the affine), plane and window
    round.json                                project id, overlap k, samples and task keys
    model/pred/<sample_id>.nii.gz             pre-annotations, when the model asset made them
    model/scores.parquet                      their model_version and P(abnormal) per sample

Re-materializing a round changes nothing that exists: the project is found again (by the id in
round.json when the title still matches, else by title), and only tasks whose ``task_key`` the
project does not hold yet are imported (Label Studio's own ids are never trusted: sqlite reuses
them after deletes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from annotation.client import LabelStudioClient
from annotation.render import (
    AXIAL_RAS,
    LEGACY_AXIAL,
    RenderedSlice,
    SliceMapping,
    mapping_for,
    orientation_data,
    projection_mapping,
    render_volume,
    select_slices,
    volume_mask_slice,
)
from annotation.tasks import build_task, check_sample_id, local_file_url, prediction, task_key
from annotation.windows import choose_window
from medcurate.config import Zones
from medcurate.io import atomic_write_text, read_nifti

ROUND_RE = re.compile(r"^round-([1-9][0-9]{0,5})$")
# the mapping of a normalized (RAS) volume's axial slices; each row records its own (parsed back
# by SliceMapping.parse), so rounds rendered under another mapping still map back exactly
SLICE_MAPPING = AXIAL_RAS.describe()
PLANE = "axial"
KIND_PROJECTION = "projection2d"  # medcurate.normalize.assembly.KIND_PROJECTION
SLICE_COLUMNS = [
    "round", "task_key", "sample_id", "slice_k", "image_relpath", "height", "width",
    "shape", "nifti_path", "window_center", "window_width", "candidate", "mapping",
    "plane", "context_relpath", "window_name", "window_units",
]  # fmt: skip


def round_number(round: str | int) -> int:
    """``"round-3"`` (a partition key) or ``3`` -> 3; anything else is refused."""
    if isinstance(round, int) and not isinstance(round, bool):
        if round < 1:
            raise ValueError(f"round numbers start at 1, got {round}")
        return round
    m = ROUND_RE.match(str(round))
    if not m:
        raise ValueError(f"round {round!r} is not of the form round-N")
    return int(m.group(1))


def round_of(number: int) -> str:
    """3 -> ``"round-3"`` (the partition key)."""
    return f"round-{round_number(int(number))}"


def project_title(round: str, suffix: str = "") -> str:
    """Titles carry the round only (no sample, site or patient): 'medcurate round-1'."""
    round_number(round)
    return f"medcurate {round}" + (f" {suffix}" if suffix else "")


def existing_rounds(z: Zones) -> list[str]:
    """Rounds with a folder under ``annotation/``, in round order."""
    if not z.annotation.is_dir():
        return []
    found = [p.name for p in z.annotation.iterdir() if p.is_dir() and ROUND_RE.match(p.name)]
    return sorted(found, key=round_number)


# --------------------------------------------------------------------------- selection


def previous_samples(z: Zones, round: str) -> list[str]:
    """Samples already sent out in other rounds (round.json files), so rounds do not overlap."""
    seen: set[str] = set()
    for other in existing_rounds(z):
        info = read_round_info(z, other) if other != round else None
        if info:
            seen.update(info.get("samples", []))
    return sorted(seen)


# --------------------------------------------------------------------------- rendering


def _load_with_affine(path: Any) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray]:
    """A volume or mask as a 3D array (float64: the same values whatever the stored type)."""
    data, affine = read_nifti(path, dtype="float64")
    while data.ndim < 3:
        data = data[..., None]
    if data.ndim > 3:
        data = data.reshape(data.shape[:3])
    return data, (int(data.shape[0]), int(data.shape[1]), int(data.shape[2])), affine


def _load(path: Any) -> tuple[np.ndarray, tuple[int, int, int]]:
    data, shape, _ = _load_with_affine(path)
    return data, shape


def volume_mapping(row: Mapping[Any, Any], affine: np.ndarray) -> SliceMapping:
    """How a sample's axial slices are shown: radiological, from its affine (a projection's
    detector grid as acquired). Consensus stacks slices along the third array axis, so a volume
    whose S/I axis is another one is refused (normalization writes RAS)."""
    if str(row.get("kind") or "") == KIND_PROJECTION:
        return projection_mapping()
    mapping = mapping_for(affine, PLANE)
    if mapping.slice_axis != 2:
        raise ValueError(
            f"{row.get('sample_id')}: axial slices run along array axis {mapping.slice_axis} "
            f"(axes {mapping.axcodes}); rounds need S/I as the third axis: normalize to RAS"
        )
    return mapping


def slice_mapping(row: Mapping[Any, Any]) -> SliceMapping:
    """The mapping a slices.parquet row records (rows without one: the legacy mapping)."""
    text = row.get("mapping")
    return SliceMapping.parse(str(text)) if isinstance(text, str) and text else LEGACY_AXIAL


def sample_mappings(slices: pd.DataFrame) -> dict[str, SliceMapping]:
    """Per sample, the mapping its slices were rendered with."""
    first = slices.drop_duplicates("sample_id").to_dict("records")
    return {str(r["sample_id"]): slice_mapping(r) for r in first}


def slice_task_data(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The task data a slices.parquet row adds to the image (non-identifying): the context strip,
    the orientation markers, the mapping and the window. Older rows lack some: the image stands
    in for a missing context strip, so the label config's ``$context`` always resolves."""
    mapping = slice_mapping(row)
    context = row.get("context_relpath")
    center, width = row.get("window_center"), row.get("window_width")
    return {
        "round": str(row["round"]),
        "context": local_file_url(str(context) if context else str(row["image_relpath"])),
        **orientation_data(mapping),
        "mapping": mapping.describe(),
        "window": {
            "name": str(row.get("window_name") or "percentile"),
            "center": None if center is None else round(float(center), 4),
            "width": None if width is None else round(float(width), 4),
            "units": str(row.get("window_units") or "stored"),
        },
    }


def _prediction_mask(
    z: Zones, round: str, sample_id: str, shape: tuple[int, ...]
) -> np.ndarray | None:
    path = z.round_prediction(round, sample_id)
    if not path.exists():
        return None
    data, got = _load(path)
    if got != tuple(shape):
        raise ValueError(f"{path}: prediction shape {got} differs from the volume's {shape}")
    return data


def model_scores(z: Zones, round: str) -> dict[str, tuple[str, float]]:
    """Per sample, the pre-annotating model's version and P(abnormal), from the model asset's
    ``model/scores.parquet`` (empty when the round has no model output)."""
    path = z.round_scores(round)
    if not path.exists():
        return {}
    scores = pd.read_parquet(path)
    return {
        str(r["sample_id"]): (str(r["model_version"]), float(r["p_abnormal"]))
        for r in scores.to_dict("records")
    }


def finding_slices(pred: np.ndarray, limit: int) -> list[int]:
    """One slice per candidate finding (3D component of the prediction): the slice where it is
    largest; the ``limit`` largest findings only, so a noisy proposal cannot flood a round."""
    labels, n = ndimage.label(np.asarray(pred) > 0.5)
    found = []
    for comp in range(1, n + 1):
        areas = (labels == comp).sum(axis=(0, 1))
        found.append((-int(areas.sum()), int(np.argmax(areas))))
    return sorted({k for _, k in sorted(found)[: max(limit, 0)]})


def _slice_prediction(
    pred: np.ndarray, k: int, version: str, p_abnormal: float, mapping: SliceMapping = AXIAL_RAS
) -> dict[str, Any]:
    """The pre-annotation of slice ``k``: the predicted mask and the class it implies."""
    m = volume_mask_slice(pred > 0.5, k, mapping)
    choice = "abnormal" if m.any() else "normal"
    score = p_abnormal if choice == "abnormal" else 1.0 - p_abnormal
    return prediction(version, round(score, 4), choice=choice, mask=m)


def _read_ahead(load: Callable[[str], Any], keys: Sequence[str]) -> Iterator[Any]:
    """``load(key)`` for each key in order, the next one loaded by a thread while the caller
    renders the current one (gzip inflation and PNG deflation release the GIL: on two cores
    the reads hide behind the rendering). At most two samples are held at a time."""
    if not keys:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, keys[0])
        for nxt in [*keys[1:], None]:
            current = pending.result()
            if nxt is not None:
                pending = pool.submit(load, nxt)
            yield current


def render_round(
    volumes: pd.DataFrame,
    samples: Sequence[str],
    z: Zones,
    round: str,
    every: int,
    max_findings: int = 4,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Render every selected sample's slices (every ``every``-th plus one per candidate finding,
    at most ``max_findings`` per sample) in the radiological orientation and the sample's window,
    each with its neighbour strip; returns (slices table, Label Studio tasks). Without model
    output (no prediction file) the tasks carry no pre-annotation."""
    scores = model_scores(z, round)
    by_id = {str(r["sample_id"]): r for r in volumes.to_dict("records")}
    rows: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    order = sorted(samples)
    for sid in order:
        check_sample_id(sid)

    def load(sid: str) -> tuple[Any, ...]:
        volume, shape, affine = _load_with_affine(z.volume_file(str(by_id[sid]["nifti_path"])))
        return volume, shape, affine, _prediction_mask(z, round, sid, shape)

    for sid, (volume, shape, affine, pred) in zip(order, _read_ahead(load, order), strict=True):
        row = by_id[sid]
        mapping = volume_mapping({**row, "sample_id": sid}, affine)
        cand = finding_slices(pred, max_findings) if pred is not None else []
        window = choose_window(row, volume)
        slices = select_slices(shape[2], every, cand)
        images = z.round_images(round, sid).relative_to(z.annotation).as_posix()
        rendered: list[RenderedSlice] = render_volume(
            volume, sid, z.annotation, images, slices, window.stored, mapping, context=True
        )
        for r in rendered:
            slice_row = {
                "round": round,
                "task_key": task_key(sid, r.k),
                "sample_id": sid,
                "slice_k": r.k,
                "image_relpath": r.relpath,
                "height": r.height,
                "width": r.width,
                "shape": list(shape),
                "nifti_path": str(row["nifti_path"]),
                "window_center": float(window.center),
                "window_width": float(window.width),
                "candidate": r.k in set(cand),
                "mapping": mapping.describe(),
                "plane": mapping.plane,
                "context_relpath": r.context_relpath,
                "window_name": window.name,
                "window_units": window.units,
            }
            preds = []
            if pred is not None:
                version, p_abnormal = scores.get(sid, (f"proposal-{round}", 0.5))
                preds.append(_slice_prediction(pred, r.k, version, p_abnormal, mapping))
            tasks.append(build_task(sid, r.k, r.relpath, preds, extra=slice_task_data(slice_row)))
            rows.append(slice_row)
    return pd.DataFrame(rows, columns=SLICE_COLUMNS), tasks


# --------------------------------------------------------------------------- round.json


def write_round_info(
    z: Zones, round: str, project_id: int, annotators: int, slices: pd.DataFrame
) -> dict[str, Any]:
    info = {
        "round": round,
        "project_id": int(project_id),
        "title": project_title(round),
        "annotators": int(annotators),
        "samples": sorted(set(slices["sample_id"].astype(str))),
        "task_keys": sorted(slices["task_key"].astype(str)),
    }
    atomic_write_text(z.round_info(round), json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def read_round_info(z: Zones, round: str) -> dict[str, Any] | None:
    path = z.round_info(round)
    return json.loads(path.read_text()) if path.exists() else None


# --------------------------------------------------------------------------- progress


def round_progress(client: LabelStudioClient, info: Mapping[str, Any]) -> tuple[int, int]:
    """(tasks with their k non-cancelled annotations, tasks) of a round's project."""
    keys = set(info["task_keys"])
    k = int(info["annotators"])
    done = 0
    for t in client.tasks(int(info["project_id"])):
        if str(t["data"].get("task_key")) not in keys:
            continue
        anns = [a for a in t.get("annotations") or [] if not a.get("was_cancelled")]
        done += len({str(a.get("completed_by")) for a in anns}) >= k
    return done, len(keys)


@dataclass(frozen=True)
class RoundProgress:
    """How far a round's annotators are, as the round sensor sees it."""

    round: str
    project_id: int
    done: int
    total: int

    @property
    def finished(self) -> bool:
        return bool(self.total) and self.done == self.total

    @property
    def run_key(self) -> str:
        """Changes when the round's project changes (e.g. tasks were added)."""
        return f"{self.round}-project-{self.project_id}-tasks-{self.total}"

    def line(self) -> str:
        return f"{self.round}: {self.done}/{self.total}"


def rounds_progress(
    z: Zones, rounds: Sequence[str], client: LabelStudioClient
) -> list[RoundProgress]:
    """Progress of every given round that has a round.json (others are not cut yet)."""
    out = []
    for r in sorted(rounds):
        info = read_round_info(z, r)
        if info is not None:
            done, total = round_progress(client, info)
            out.append(RoundProgress(r, int(info["project_id"]), done, total))
    return out


def progress_summary(
    rounds: Sequence[str], progress: Sequence[RoundProgress], exported: set[str]
) -> str:
    """``round-2: 80/117 tasks done; round-1: exported`` (newest round first): the round
    sensor's skip reason. ``rounds`` are every round known (some may have no tasks yet)."""
    by_round = {p.round: p for p in progress}
    parts = []
    for r in sorted(rounds, key=_order, reverse=True):
        p = by_round.get(r)
        if p is None:
            parts.append(f"{r}: no tasks yet (run annotation_round)")
        elif r in exported:
            parts.append(f"{r}: exported")
        else:
            parts.append(f"{r}: {p.done}/{p.total} tasks done")
    return "; ".join(parts) or "no annotation round yet (run annotation_round for round-1)"


def _order(round: str) -> tuple[int, str]:
    """Round number order; a partition key that is not ``round-N`` sorts first."""
    m = ROUND_RE.match(round)
    return (int(m.group(1)) if m else -1, round)
