"""Annotation rounds: pick the samples, render their slices, and keep one Label Studio project per
round in step with them.

A round is a dynamic partition (``round-1``, ``round-2``...). Its files live in
``annotation/round-N/``::

    images/<sample_id>/<sample_id>_k<k>.png   windowed slices Label Studio serves as local files
    slices.parquet                            one row per task: the slice and its voxel mapping
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from annotation.label_config import LABEL_CONFIG
from annotation.render import (
    RenderedSlice,
    auto_window,
    render_volume,
    select_slices,
    volume_mask_slice,
)
from annotation.tasks import build_task, check_sample_id, prediction, task_key

ROUND_RE = re.compile(r"^round-([1-9][0-9]{0,5})$")
SLICE_MAPPING = "png(row, col) of slice k = voxel (i=col, j=row, k)"
SLICE_COLUMNS = [
    "round", "task_key", "sample_id", "slice_k", "image_relpath", "height", "width",
    "shape", "nifti_path", "window_center", "window_width", "candidate", "mapping",
]  # fmt: skip


def round_number(round_key: str) -> int:
    m = ROUND_RE.match(round_key)
    if not m:
        raise ValueError(f"round key {round_key!r} is not of the form round-N")
    return int(m.group(1))


def project_title(round_key: str, suffix: str = "") -> str:
    """Titles carry the round only (no sample, site or patient): 'medcurate round-1'."""
    round_number(round_key)
    return f"medcurate {round_key}" + (f" {suffix}" if suffix else "")


# --------------------------------------------------------------------------- selection


def previous_samples(annotation_root: Path, round_key: str) -> list[str]:
    """Samples already sent out in other rounds (round.json files), so rounds do not overlap."""
    seen: set[str] = set()
    for info in sorted(annotation_root.glob("round-*/round.json")):
        if info.parent.name != round_key:
            seen.update(json.loads(info.read_text()).get("samples", []))
    return sorted(seen)


# --------------------------------------------------------------------------- rendering


def _load(path: Path) -> tuple[np.ndarray, tuple[int, int, int]]:
    import nibabel as nib

    img: Any = nib.load(str(path))
    data = np.asarray(img.dataobj)
    while data.ndim < 3:
        data = data[..., None]
    if data.ndim > 3:
        data = data.reshape(data.shape[:3])
    return data, (int(data.shape[0]), int(data.shape[1]), int(data.shape[2]))


def _prediction_mask(pred_dir: Path, sample_id: str, shape: tuple[int, ...]) -> np.ndarray | None:
    path = pred_dir / f"{sample_id}.nii.gz"
    if not path.exists():
        return None
    data, got = _load(path)
    if got != tuple(shape):
        raise ValueError(f"{path}: prediction shape {got} differs from the volume's {shape}")
    return data


def model_scores(round_dir: Path) -> dict[str, tuple[str, float]]:
    """Per sample, the pre-annotating model's version and P(abnormal), from the model asset's
    ``model/scores.parquet`` (empty when the round has no model output)."""
    path = round_dir / "model" / "scores.parquet"
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
    from scipy import ndimage

    labels, n = ndimage.label(np.asarray(pred) > 0.5)
    found = []
    for comp in range(1, n + 1):
        areas = (labels == comp).sum(axis=(0, 1))
        found.append((-int(areas.sum()), int(np.argmax(areas))))
    return sorted({k for _, k in sorted(found)[: max(limit, 0)]})


def render_round(
    volumes: pd.DataFrame,
    samples: Sequence[str],
    volumes_root: Path,
    annotation_root: Path,
    round_key: str,
    every: int,
    max_findings: int = 4,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Render every selected sample's slices (every ``every``-th plus one per candidate finding,
    at most ``max_findings`` per sample); returns (slices table, Label Studio tasks)."""
    round_dir = annotation_root / round_key
    pred_dir = round_dir / "model" / "pred"
    scores = model_scores(round_dir)
    by_id = {str(r["sample_id"]): r for r in volumes.to_dict("records")}
    rows: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    for sid in sorted(samples):
        check_sample_id(sid)
        row = by_id[sid]
        volume, shape = _load(volumes_root / str(row["nifti_path"]))
        pred = _prediction_mask(pred_dir, sid, shape)
        cand = finding_slices(pred, max_findings) if pred is not None else []
        window = auto_window(volume)
        slices = select_slices(shape[2], every, cand)
        rendered: list[RenderedSlice] = render_volume(
            volume, sid, annotation_root, f"{round_key}/images/{sid}", slices, window
        )
        for r in rendered:
            preds = []
            if pred is not None:
                m = volume_mask_slice(pred > 0.5, r.k)
                version, p_abnormal = scores.get(sid, (f"proposal-{round_key}", 0.5))
                choice = "abnormal" if m.any() else "normal"
                score = p_abnormal if choice == "abnormal" else 1.0 - p_abnormal
                preds.append(prediction(version, round(score, 4), choice=choice, mask=m))
            tasks.append(build_task(sid, r.k, r.relpath, preds, extra={"round": round_key}))
            rows.append(
                {
                    "round": round_key,
                    "task_key": task_key(sid, r.k),
                    "sample_id": sid,
                    "slice_k": r.k,
                    "image_relpath": r.relpath,
                    "height": r.height,
                    "width": r.width,
                    "shape": list(shape),
                    "nifti_path": str(row["nifti_path"]),
                    "window_center": window.center,
                    "window_width": window.width,
                    "candidate": r.k in set(cand),
                    "mapping": SLICE_MAPPING,
                }
            )
    return pd.DataFrame(rows, columns=SLICE_COLUMNS), tasks


# --------------------------------------------------------------------------- Label Studio


class Api:
    """The few plain REST calls the SDK makes awkward (listing with filters), as one user."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self._key = key

    def __repr__(self) -> str:
        return f"Api(url={self.url!r}, key=***)"

    def get(self, path: str, **params: Any) -> Any:
        import requests

        resp = requests.get(
            self.url + path,
            params=params,
            headers={"Authorization": f"Token {self._key}"},
            timeout=60,
        )
        resp.raise_for_status()
        return resp.json()

    def client(self) -> Any:
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self._key)

    def projects(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.get("/api/projects", page=page, page_size=100)
            items = body.get("results", []) if isinstance(body, dict) else body
            out.extend(items)
            if not isinstance(body, dict) or not body.get("next"):
                return out
            page += 1

    def project_by_title(self, title: str, known_id: int | None = None) -> int | None:
        projects = {int(p["id"]): p for p in self.projects()}
        if known_id is not None and known_id in projects and projects[known_id]["title"] == title:
            return known_id
        ids = sorted(i for i, p in projects.items() if p["title"] == title)
        return ids[0] if ids else None

    def tasks(self, project: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            import requests

            try:
                body = self.get(
                    "/api/tasks", project=project, page=page, page_size=500, fields="all"
                )
            except requests.HTTPError as e:  # past the last page
                if e.response is not None and e.response.status_code == 404:
                    return out
                raise
            items = body.get("tasks", []) if isinstance(body, dict) else body
            out.extend(items)
            total = body.get("total") if isinstance(body, dict) else None
            if not items or total is None or len(out) >= int(total):
                return out
            page += 1

    def users(self) -> dict[int, str]:
        """Label Studio user id -> e-mail (only ever turned into pseudonyms)."""
        return {int(u["id"]): str(u.get("email", "")) for u in self.get("/api/users")}


@dataclass(frozen=True)
class SyncResult:
    project_id: int
    created: bool
    imported: int
    existing: int


def ensure_project(
    api: Api,
    title: str,
    annotators: int,
    storage_path: Path,
    known_id: int | None = None,
) -> tuple[int, bool]:
    """The round's project with overlap ``annotators`` and a local-files storage; created once."""
    from annotation.sync import add_local_storage, create_project

    client = api.client()
    pid = api.project_by_title(title, known_id)
    created = pid is None
    if pid is None:
        pid = create_project(
            client,
            title,
            LABEL_CONFIG,
            maximum_annotations=annotators,
            overlap_cohort_percentage=100,
            show_collab_predictions=True,
        )
    else:
        client.projects.update(
            id=pid, maximum_annotations=annotators, overlap_cohort_percentage=100
        )
    if not client.import_storage.local.list(project=pid):
        add_local_storage(client, pid, storage_path)
    return pid, created


def sync_tasks(api: Api, project: int, tasks: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """Import the tasks whose task_key the project lacks; returns (imported, already there)."""
    from annotation.sync import import_tasks

    have = {str(t["data"].get("task_key")) for t in api.tasks(project)}
    missing = [t for t in tasks if str(t["data"]["task_key"]) not in have]
    imported = import_tasks(api.client(), project, missing) if missing else 0
    return imported, len(tasks) - len(missing)


def write_round_info(
    path: Path, round_key: str, project_id: int, annotators: int, slices: pd.DataFrame
) -> dict[str, Any]:
    info = {
        "round": round_key,
        "project_id": int(project_id),
        "title": project_title(round_key),
        "annotators": int(annotators),
        "samples": sorted(set(slices["sample_id"].astype(str))),
        "task_keys": sorted(slices["task_key"].astype(str)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def read_round_info(annotation_root: Path, round_key: str) -> dict[str, Any] | None:
    path = annotation_root / round_key / "round.json"
    return json.loads(path.read_text()) if path.exists() else None


def round_progress(api: Api, info: Mapping[str, Any]) -> tuple[int, int]:
    """(tasks with their k non-cancelled annotations, tasks) of a round's project."""
    keys = set(info["task_keys"])
    k = int(info["annotators"])
    done = 0
    for t in api.tasks(int(info["project_id"])):
        if str(t["data"].get("task_key")) not in keys:
            continue
        anns = [a for a in t.get("annotations") or [] if not a.get("was_cancelled")]
        done += len({str(a.get("completed_by")) for a in anns}) >= k
    return done, len(keys)
