"""A round's snapshot export -> one row per annotator per task, and per-annotator 3D label maps.

Brush regions come back as Label Studio's RLE and are decoded here into 2D masks.

Identity is the task's ``task_key`` (never Label Studio's ids, which sqlite reuses) and the
annotator's pseudonym (a keyed hash of the account e-mail, never the e-mail). When an annotator
has several annotations on one task (a resubmission), the latest one counts. Cancelled (skipped)
annotations are kept as rows with choice ``None`` but draw nothing. Everything is sorted, so the
same export gives byte-identical outputs however often it is decoded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from annotation.client import LabelStudioClient
from annotation.label_config import FINDING, LESION
from annotation.render import AXIAL_RAS, SliceMapping, masks_to_volume, write_label_nifti
from annotation.rle import rle_to_mask
from annotation.rounds import sample_mappings
from medcurate.config import Zones
from medcurate.io import atomic_write_parquet, atomic_write_text

ANNOTATION_COLUMNS = [
    "round", "task_key", "sample_id", "slice_k", "annotator", "choice", "has_mask",
    "mask_voxels", "mask_path", "lead_time", "created_at", "updated_at", "was_cancelled",
]  # fmt: skip


def annotator_pseudonym(keyer_digest: Callable[[str], str], email: str) -> str:
    """``ann-<keyed hash>`` of the account e-mail (stable for a salt, not reversible)."""
    return f"ann-{keyer_digest(email.strip().lower())}"


def choice_of(result: Iterable[Mapping[str, Any]], from_name: str = FINDING) -> str | None:
    for region in result:
        if region.get("from_name") == from_name and region.get("type") == "choices":
            chosen = region.get("value", {}).get("choices") or []
            return str(chosen[0]) if chosen else None
    return None


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


def _user_id(completed_by: Any) -> int | None:
    if isinstance(completed_by, Mapping):
        return int(completed_by["id"])
    return int(completed_by) if completed_by is not None else None


@dataclass
class DecodedRound:
    """Rows (one per annotator per task) and 2D masks keyed by (sample, annotator) -> {k: mask}."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    masks: dict[tuple[str, str], dict[int, NDArray[np.bool_]]] = field(default_factory=dict)


def decode_export(
    tasks: Iterable[Mapping[str, Any]],
    round: str,
    pseudonym_of: Callable[[int | None], str],
    sizes: Mapping[str, tuple[int, int]],
) -> DecodedRound:
    """Decode a snapshot export. ``sizes[task_key]`` is the (height, width) of its image;
    ``pseudonym_of`` maps a Label Studio user id to the annotator pseudonym."""
    latest: dict[tuple[str, str], tuple[str, Mapping[str, Any], Mapping[str, Any]]] = {}
    for task in tasks:
        data = task.get("data", {})
        key = str(data.get("task_key", ""))
        if key not in sizes:
            continue  # not one of this round's tasks
        for ann in task.get("annotations") or []:
            who = pseudonym_of(_user_id(ann.get("completed_by")))
            stamp = str(ann.get("updated_at") or ann.get("created_at") or "")
            prev = latest.get((key, who))
            if prev is None or (stamp, str(ann.get("id"))) > (prev[0], str(prev[2].get("id"))):
                latest[(key, who)] = (stamp, data, ann)
    out = DecodedRound()
    for (key, who), (_, data, ann) in sorted(latest.items()):
        height, width = sizes[key]
        sample, k = str(data["sample_id"]), int(data["slice_k"])
        cancelled = bool(ann.get("was_cancelled"))
        result = [] if cancelled else list(ann.get("result") or [])
        mask = union_mask(result, height, width)
        out.masks.setdefault((sample, who), {})[k] = mask
        lead = ann.get("lead_time")
        out.rows.append(
            {
                "round": round,
                "task_key": key,
                "sample_id": sample,
                "slice_k": k,
                "annotator": who,
                "choice": choice_of(result),
                "has_mask": bool(mask.any()),
                "mask_voxels": int(mask.sum()),
                "mask_path": None,
                "lead_time": float(lead) if lead is not None else None,
                "created_at": str(ann.get("created_at") or ""),
                "updated_at": str(ann.get("updated_at") or ""),
                "was_cancelled": cancelled,
            }
        )
    return out


def write_annotator_maps(
    decoded: DecodedRound,
    references: Mapping[str, Path],
    shapes: Mapping[str, tuple[int, int, int]],
    z: Zones,
    round: str,
    mappings: Mapping[str, SliceMapping] | None = None,
) -> int:
    """Write each annotator's 3D label map per sample (only the annotated slices carry labels)
    in the volume's exact geometry; fills ``mask_path`` (relative to ``annotation/``). Returns
    how many maps were written. ``mappings[sample]`` is the pixel/voxel mapping its slices were
    rendered with (slices.parquet's ``mapping``; default: axial of a RAS volume)."""
    written = 0
    paths: dict[tuple[str, str], str] = {}
    for (sample, who), per_slice in sorted(decoded.masks.items()):
        if sample not in references:
            continue
        mapping = (mappings or {}).get(sample, AXIAL_RAS)
        label = masks_to_volume(per_slice, shapes[sample], mapping)
        write_label_nifti(label, references[sample], z.annotator_mask(round, sample, who))
        paths[(sample, who)] = z.annotator_mask_relpath(round, sample, who)
        written += 1
    for row in decoded.rows:
        row["mask_path"] = paths.get((row["sample_id"], row["annotator"]))
    return written


# --------------------------------------------------------------------------- a whole round


def pseudonyms(client: LabelStudioClient, salt: bytes) -> Callable[[int | None], str]:
    """User id -> annotator pseudonym (keyed hash of the account e-mail under the salt)."""
    from medcurate.deid.pseudonyms import Keyer  # lazy: medcurate.deid loads pydicom

    keyer = Keyer(salt)
    users = client.users()

    def of(uid: int | None) -> str:
        email = users.get(uid, f"unknown-user-{uid}") if uid is not None else "unknown-user"
        return annotator_pseudonym(lambda e: keyer.hexcode("annotator", e, n=10), email)

    return of


def slice_sizes(slices: Any) -> dict[str, tuple[int, int]]:
    return {
        str(r["task_key"]): (int(r["height"]), int(r["width"])) for r in slices.to_dict("records")
    }


def export_round(
    client: LabelStudioClient, z: Zones, round: str, info: Mapping[str, Any], salt: bytes
) -> tuple[list[dict[str, Any]], int]:
    """Export, decode and write a round: ``annotations.parquet`` and the annotator maps.

    The raw export (it names accounts by e-mail) is kept under ``restricted/``, so a lost or
    rebuilt Label Studio does not lose what was already exported. Returns (rows, tasks that have
    their k annotations).
    """
    slices = pd.read_parquet(z.round_slices(round))
    exported = client.snapshot_export(int(info["project_id"]))
    atomic_write_text(z.round_export(round), json.dumps(exported, sort_keys=True), private=True)
    decoded = decode_export(exported, round, pseudonyms(client, salt), slice_sizes(slices))
    first = slices.drop_duplicates("sample_id").to_dict("records")
    refs = {str(r["sample_id"]): z.volume_file(str(r["nifti_path"])) for r in first}
    shapes = {str(r["sample_id"]): _shape3(r["shape"]) for r in first}
    write_annotator_maps(decoded, refs, shapes, z, round, sample_mappings(slices))
    table = pd.DataFrame(decoded.rows, columns=ANNOTATION_COLUMNS)
    atomic_write_parquet(table, z.round_annotations(round))
    k = int(info["annotators"])
    per_task = table[~table["was_cancelled"].astype(bool)].groupby("task_key")["annotator"]
    return decoded.rows, int((per_task.nunique() >= k).sum())


def _shape3(shape: Any) -> tuple[int, int, int]:
    a, b, c = (int(x) for x in shape)
    return (a, b, c)
