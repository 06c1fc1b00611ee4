"""Decoding a snapshot export: brush regions back into masks, one row per annotator per task,
the latest annotation wins, pseudonyms instead of accounts, masks back in the volume's exact
geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from annotation.export import (
    annotator_pseudonym,
    brush_masks,
    choice_of,
    decode_export,
    union_mask,
    write_annotator_maps,
)
from annotation.render import volume_mask_slice
from annotation.tasks import brush_result, choice_result
from medcurate.config import Zones

H, W = 6, 5  # PNG rows, cols: the volume is (W, H, K) = (5, 6, 3)


def _mask(r0: int, c0: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[r0 : r0 + 2, c0 : c0 + 2] = True
    return m


def _ann(uid: int, ident: int, stamp: str, choice: str | None, mask=None, cancelled=False):  # type: ignore[no-untyped-def]
    result = [choice_result(choice)] if choice else []
    if mask is not None:
        result.append(brush_result(mask))
    return {
        "id": ident,
        "completed_by": uid,
        "created_at": stamp,
        "updated_at": stamp,
        "lead_time": 3.5,
        "was_cancelled": cancelled,
        "result": result,
    }


def _export() -> list[dict]:  # type: ignore[type-arg]
    return [
        {
            "id": 7,
            "data": {"task_key": "S1:k0001", "sample_id": "S1", "slice_k": 1},
            "annotations": [
                _ann(1, 10, "2026-01-01T10:00:00Z", "abnormal", _mask(0, 0)),
                _ann(1, 11, "2026-01-01T11:00:00Z", "abnormal", _mask(3, 2)),  # resubmission
                _ann(2, 12, "2026-01-01T10:30:00Z", "normal"),
            ],
        },
        {
            "id": 8,
            "data": {"task_key": "S1:k0002", "sample_id": "S1", "slice_k": 2},
            "annotations": [_ann(2, 13, "2026-01-01T10:40:00Z", None, cancelled=True)],
        },
        {"id": 9, "data": {"task_key": "OTHER:k0000", "sample_id": "OTHER", "slice_k": 0}},
    ]


SIZES = {"S1:k0001": (H, W), "S1:k0002": (H, W)}
NAMES = {1: "ann-one", 2: "ann-two"}


def test_latest_annotation_per_annotator_wins() -> None:
    out = decode_export(_export(), "round-3", lambda uid: NAMES[uid or 0], SIZES)
    rows = {(r["task_key"], r["annotator"]): r for r in out.rows}
    assert set(rows) == {("S1:k0001", "ann-one"), ("S1:k0001", "ann-two"), ("S1:k0002", "ann-two")}
    one = rows[("S1:k0001", "ann-one")]
    assert one["choice"] == "abnormal" and one["has_mask"] and one["mask_voxels"] == 4
    assert np.array_equal(out.masks[("S1", "ann-one")][1], _mask(3, 2))  # not the first draft
    assert rows[("S1:k0001", "ann-two")]["choice"] == "normal"
    skipped = rows[("S1:k0002", "ann-two")]
    assert skipped["was_cancelled"] and skipped["choice"] is None and not skipped["has_mask"]
    assert all(r["round"] == "round-3" for r in out.rows)


def test_decoding_is_order_independent() -> None:
    tasks = _export()
    shuffled = [tasks[2], tasks[1], {**tasks[0], "annotations": tasks[0]["annotations"][::-1]}]
    a = decode_export(tasks, "round-3", lambda uid: NAMES[uid or 0], SIZES)
    b = decode_export(shuffled, "round-3", lambda uid: NAMES[uid or 0], SIZES)
    assert a.rows == b.rows


def test_annotator_maps_share_the_volume_geometry(tmp_path: Path) -> None:
    affine = np.array([[-0.8, 0, 0, 10], [0, -0.8, 0, 20], [0, 0, 2.5, -30], [0, 0, 0, 1]])
    ref = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((W, H, 3), dtype=np.float32), affine), ref)
    out = decode_export(_export(), "round-3", lambda uid: NAMES[uid or 0], SIZES)
    z = Zones(tmp_path)
    n = write_annotator_maps(out, {"S1": ref}, {"S1": (W, H, 3)}, z, "round-3")
    assert n == 2
    row = next(r for r in out.rows if r["annotator"] == "ann-one")
    assert row["mask_path"] == "round-3/masks/S1/ann-one.nii.gz"
    img = nib.load(z.annotation / row["mask_path"])
    assert np.allclose(img.affine, affine)
    label = np.asarray(img.dataobj)
    assert np.array_equal(volume_mask_slice(label, 1), _mask(3, 2))
    assert not label[:, :, 0].any() and not label[:, :, 2].any()


def test_pseudonym_hides_the_account() -> None:
    name = annotator_pseudonym(lambda e: f"h{len(e)}", "Jane.Doe@Hospital.org")
    assert name.startswith("ann-") and "jane" not in name.lower()
    assert name == annotator_pseudonym(lambda e: f"h{len(e)}", " jane.doe@hospital.org")


def test_choice_of() -> None:
    assert choice_of([brush_result(_mask(0, 0)), choice_result("unreadable")]) == "unreadable"
    assert choice_of([]) is None


def test_union_of_brush_regions_ignores_other_controls() -> None:
    a = np.zeros((5, 6), dtype=bool)
    b = np.zeros((5, 6), dtype=bool)
    a[0, :2] = True
    b[4, 5] = True
    results = [choice_result("abnormal"), brush_result(a), brush_result(b)]
    masks = brush_masks(results)
    assert len(masks) == 2 and np.array_equal(masks[0], a)
    assert np.array_equal(union_mask(results, 5, 6), a | b)
    assert not union_mask([choice_result("normal")], 5, 6).any()


def test_bad_regions_fail_loudly() -> None:
    region = brush_result(np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="on a"):
        union_mask([region], 3, 3)
    region["value"]["format"] = "polygon"
    with pytest.raises(ValueError, match="not 'rle'"):
        brush_masks([region])
