"""Talking to Label Studio: projects, local-files storage, task import, snapshot export, and
decoding exported brush regions back into masks.

Exports go through the snapshot API because the quick export lists predictions as ids only and
skips unlabelled tasks; the snapshot carries full predictions and annotations.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annotation.label_config import LABEL_CONFIG, LESION
from annotation.rle import rle_to_mask


class ExportError(RuntimeError):
    """A snapshot export failed or did not finish in time."""


def create_project(client: Any, title: str, config: str = LABEL_CONFIG, **options: Any) -> int:
    """Create a project with the round's label config; returns its id. ``title`` must carry
    pseudonymous round names only."""
    project = client.projects.create(title=title, label_config=config, **options)
    return int(project.id)


def add_local_storage(client: Any, project_id: int, path: Path, title: str = "images") -> int:
    """Attach a local-files import storage so ``/data/local-files/?d=...`` URLs resolve.

    ``path`` must lie under the server's LOCAL_FILES_DOCUMENT_ROOT; no sync is needed because the
    tasks are imported with their URLs.
    """
    storage = client.import_storage.local.create(
        project=project_id, path=str(path), title=title, use_blob_urls=False
    )
    return int(storage.id)


def import_tasks(
    client: Any, project_id: int, tasks: Sequence[Mapping[str, Any]], chunk: int = 1000
) -> int:
    """Import tasks (with predictions) in chunks; returns how many the server took."""
    total = 0
    for start in range(0, len(tasks), chunk):
        part = [dict(t) for t in tasks[start : start + chunk]]
        resp = client.projects.import_tasks(id=project_id, request=part, return_task_ids=True)
        count = getattr(resp, "task_count", None)
        total += int(count) if count is not None else len(part)
    return total


def snapshot_export(
    client: Any, project_id: int, timeout: float = 300.0, poll: float = 0.2
) -> list[dict[str, Any]]:
    """Export every task with full predictions and annotations through the snapshot API."""
    export = client.projects.exports.create(
        id=project_id,
        title="medcurate snapshot",
        serialization_options={"predictions": {"only_id": False}},
    )
    deadline = time.monotonic() + timeout
    while True:
        state = client.projects.exports.get(id=project_id, export_pk=export.id)
        status = str(getattr(state, "status", ""))
        if status.endswith("completed"):
            break
        if status.endswith("failed"):
            raise ExportError(f"snapshot export {export.id} of project {project_id} failed")
        if time.monotonic() > deadline:
            raise ExportError(f"snapshot export {export.id} not done after {timeout:.0f} s")
        time.sleep(poll)
    raw = b"".join(
        client.projects.exports.download(id=project_id, export_pk=export.id, export_type="JSON")
    )
    tasks = json.loads(raw)
    if not isinstance(tasks, list):
        raise ExportError("snapshot export is not a list of tasks")
    return tasks


def brush_masks(
    results: Iterable[Mapping[str, Any]], from_name: str = LESION
) -> list[NDArray[np.bool_]]:
    """Decode the brush regions of one annotation's or prediction's result list."""
    masks = []
    for region in results:
        if region.get("from_name") != from_name or region.get("type") != "brushlabels":
            continue
        value = region["value"]
        if value.get("format") != "rle":
            raise ValueError(f"brush region format {value.get('format')!r} is not 'rle'")
        masks.append(
            rle_to_mask(value["rle"], int(region["original_height"]), int(region["original_width"]))
        )
    return masks


def union_mask(
    results: Iterable[Mapping[str, Any]], height: int, width: int, from_name: str = LESION
) -> NDArray[np.bool_]:
    """All brush regions of a result list merged into one (height, width) mask."""
    out = np.zeros((height, width), dtype=bool)
    for mask in brush_masks(results, from_name):
        if mask.shape != out.shape:
            raise ValueError(f"brush region of shape {mask.shape} on a {out.shape} image")
        out |= mask
    return out
