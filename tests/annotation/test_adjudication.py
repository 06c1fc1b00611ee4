"""Consensus tables of a round: per-slice majority, per-sample label and mask, kappa, and which
samples go to adjudication; adjudicated slices win (pure functions on hand-made annotations)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from annotation.adjudication import (
    Thresholds,
    adjudication_decisions,
    adjudication_tasks,
    round_kappa,
    run_consensus,
    sample_consensus,
    sample_label,
)
from annotation.agreement import cohen_kappa, fleiss_kappa_from_ratings
from annotation.render import AXIAL_RAS, LEGACY_AXIAL, pixel_to_voxel, volume_mask_slice
from annotation.rle import rle_to_mask
from medcurate.config import Zones
from medcurate.io import sha256_file

SHAPE = (8, 6, 4)  # volume (i, j, k); PNG slices are 6 x 8


def _rows(choices: dict[tuple[str, int], str | None], sample: str = "S1") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "task_key": f"{sample}:k{k:04d}",
                "sample_id": sample,
                "slice_k": k,
                "annotator": who,
                "choice": c,
                "was_cancelled": False,
                "updated_at": "2026-01-01",
            }
            for (who, k), c in sorted(choices.items())
        ]
    )


def _map(cells: list[tuple[int, int, int]]) -> np.ndarray:
    m = np.zeros(SHAPE, dtype=np.uint8)
    for c in cells:
        m[c] = 1
    return m


def test_majority_per_slice_and_sample_label() -> None:
    rows = _rows(
        {("a", 0): "normal", ("b", 0): "normal", ("c", 0): "abnormal",
         ("a", 2): "abnormal", ("b", 2): "abnormal", ("c", 2): "abnormal"}
    )  # fmt: skip
    lesion = [(2, 2, 2), (3, 2, 2), (2, 3, 2)]
    maps = {"a": _map(lesion), "b": _map(lesion[:2]), "c": _map([*lesion, (7, 5, 2)])}
    for method in ("majority", "staple"):
        sc = sample_consensus("S1", rows, maps, SHAPE, Thresholds(method=method))
        assert sc.slice_classes == {0: "normal", 2: "abnormal"}
        assert sc.label == "abnormal"
        assert sc.annotators == ["a", "b", "c"]
        assert np.array_equal(sc.mask, _map(lesion))  # 2-of-3 voxels only
        assert not sc.needs_adjudication
    # pairwise Dice on the annotated slices, by hand: a-b 2*2/5, a-c 2*3/7, b-c 2*2/6
    assert sc.mean_dice == pytest.approx((4 / 5 + 6 / 7 + 4 / 6) / 3)
    assert sc.agreement == sc.mean_dice
    # class agreement over the two slices, by hand (Fleiss): P_i = 1/3 and 1, P_bar = 2/3;
    # p_normal = 2/6, p_abnormal = 4/6, P_e = 5/9: kappa = (2/3 - 5/9) / (4/9) = 1/4
    assert sc.kappa == pytest.approx(0.25)


def test_no_majority_or_low_dice_goes_to_adjudication_and_decisions_win() -> None:
    rows = _rows({("a", 1): "normal", ("b", 1): "abnormal"})
    maps = {"a": _map([]), "b": _map([(1, 1, 1)])}
    sc = sample_consensus("S1", rows, maps, SHAPE, Thresholds(method="majority"))
    assert sc.slice_classes == {1: None} and sc.needs_adjudication
    # the reviewer says abnormal and draws two pixels on slice 1 (PNG rows x cols)
    drawn = np.zeros((SHAPE[1], SHAPE[0]), dtype=bool)
    drawn[4, 5] = drawn[4, 6] = True
    sc = sample_consensus("S1", rows, maps, SHAPE, Thresholds(), {1: ("abnormal", drawn)})
    assert sc.slice_classes == {1: "abnormal"} and sc.label == "abnormal"
    assert sc.adjudicated_slices == [1] and not sc.needs_adjudication
    # radiological axial (RAS volume): pixel (row, col) is voxel (ni-1-col, nj-1-row, k)
    assert pixel_to_voxel(4, 5, 1, SHAPE) == (2, 1, 1)
    assert np.array_equal(np.argwhere(sc.mask), [[1, 1, 1], [2, 1, 1]])
    assert np.array_equal(volume_mask_slice(sc.mask, 1, AXIAL_RAS), drawn)
    # a round rendered under the old transposed mapping still lands where it was drawn
    old = sample_consensus(
        "S1", rows, maps, SHAPE, Thresholds(), {1: ("abnormal", drawn)}, LEGACY_AXIAL
    )
    assert np.array_equal(np.argwhere(old.mask), [[5, 4, 1], [6, 4, 1]])

    agree_class = _rows({("a", 1): "abnormal", ("b", 1): "abnormal"})
    apart = {"a": _map([(0, 0, 1)]), "b": _map([(7, 5, 1)])}
    sc = sample_consensus("S1", agree_class, apart, SHAPE, Thresholds(min_dice=0.5))
    assert sc.mean_dice == 0.0 and sc.needs_adjudication


def test_sample_label_rules() -> None:
    empty = np.zeros(SHAPE)
    assert sample_label({0: "normal", 1: "normal"}, empty) == "normal"
    assert sample_label({0: "unreadable", 1: "unreadable", 2: "normal"}, empty) == "unreadable"
    assert sample_label({0: "unreadable", 1: "normal"}, empty) == "normal"
    assert sample_label({0: "normal", 1: None}, _map([(0, 0, 0)])) == "abnormal"


def test_round_kappa_matches_the_formulas() -> None:
    two = _rows(
        {("a", 0): "normal", ("b", 0): "normal", ("a", 1): "abnormal", ("b", 1): "normal",
         ("a", 2): "abnormal", ("b", 2): "abnormal", ("a", 3): "normal", ("b", 3): "normal"}
    )  # fmt: skip
    expected = cohen_kappa(
        ["normal", "abnormal", "abnormal", "normal"], ["normal", "normal", "abnormal", "normal"]
    )
    assert round_kappa(two) == pytest.approx(expected)
    assert expected == pytest.approx(0.5)  # p_o = 3/4, p_e = 1/2, by hand
    three = _rows({(w, k): ("abnormal" if (k + (w == "c")) % 2 else "normal")
                   for w in "abc" for k in range(4)})  # fmt: skip
    ratings = [["normal", "normal", "abnormal"], ["abnormal", "abnormal", "normal"]] * 2
    assert round_kappa(three) == pytest.approx(fleiss_kappa_from_ratings(ratings))
    assert round_kappa(_rows({("a", 0): "normal"})) is None


def test_adjudication_tasks_show_each_annotator_as_a_prediction() -> None:
    rows = _rows({("ann-1", 2): "abnormal", ("ann-2", 2): "normal"})
    slices = pd.DataFrame(
        [{"round": "round-2", "task_key": "S1:k0002", "sample_id": "S1", "slice_k": 2,
          "image_relpath": "round-2/images/S1/S1_k0002.png"}]
    )  # fmt: skip
    maps = {("S1", "ann-1"): _map([(3, 4, 2)]), ("S1", "ann-2"): _map([])}
    (task,) = adjudication_tasks(slices, rows, maps, ["S1"])
    assert task["data"]["task_key"] == "S1:k0002" and task["data"]["round"] == "round-2"
    versions = [p["model_version"] for p in task["predictions"]]
    assert versions == ["ann-1", "ann-2"]
    kinds = [[r["type"] for r in p["result"]] for p in task["predictions"]]
    assert kinds == [["choices", "brushlabels"], ["choices"]]
    assert adjudication_tasks(slices, rows, maps, ["OTHER"]) == []
    # a slices table of an older round (no mapping, no context strip): legacy mapping, and the
    # image stands in for the context strip so the label config's $context resolves
    assert task["data"]["context"] == task["data"]["image"]
    assert task["data"]["mapping"] == LEGACY_AXIAL.describe()


def test_adjudication_tasks_use_the_recorded_mapping_and_show_orientation() -> None:
    rows = _rows({("ann-1", 2): "abnormal"})
    slices = pd.DataFrame(
        [{"round": "round-2", "task_key": "S1:k0002", "sample_id": "S1", "slice_k": 2,
          "image_relpath": "round-2/images/S1/S1_k0002.png", "mapping": AXIAL_RAS.describe(),
          "context_relpath": "round-2/images/S1/S1_k0002_context.png", "window_name": "ct-lung",
          "window_center": -600.0, "window_width": 1500.0, "window_units": "HU"}]
    )  # fmt: skip
    maps = {("S1", "ann-1"): _map([(0, 0, 2)])}  # lowest x and y: patient's left, posterior
    (task,) = adjudication_tasks(slices, rows, maps, ["S1"])
    data = task["data"]
    assert data["context"] == "/data/local-files/?d=round-2/images/S1/S1_k0002_context.png"
    assert (data["left_side"], data["right_side"], data["top"]) == ("R", "L", "A")
    assert data["orientation"] == "R | L  (A up)"
    assert data["window"] == {"name": "ct-lung", "center": -600.0, "width": 1500.0, "units": "HU"}
    brush = task["predictions"][0]["result"][1]
    mask = rle_to_mask(brush["value"]["rle"], 6, 8)
    assert np.argwhere(mask).tolist() == [[5, 7]]  # bottom row (posterior), right column (L)


def test_latest_reviewer_decision_counts() -> None:
    m1, m2 = np.zeros((6, 8), bool), np.ones((6, 8), bool)
    decoded = [
        {"sample_id": "S1", "slice_k": 2, "annotator": "r1", "choice": "normal",
         "updated_at": "2026-01-02", "was_cancelled": False},
        {"sample_id": "S1", "slice_k": 2, "annotator": "r2", "choice": "abnormal",
         "updated_at": "2026-01-03", "was_cancelled": False},
        {"sample_id": "S1", "slice_k": 3, "annotator": "r1", "choice": None,
         "updated_at": "2026-01-04", "was_cancelled": True},
    ]  # fmt: skip
    out = adjudication_decisions(decoded, {("S1", "r1"): {2: m1}, ("S1", "r2"): {2: m2}})
    assert list(out) == ["S1"] and list(out["S1"]) == [2]
    choice, mask = out["S1"][2]
    assert choice == "abnormal" and mask.all()


# --------------------------------------------------------------------------- incremental consensus


def _consensus_home(root: Path, samples: int = 3) -> Zones:
    """A home with volumes and one exported round: three annotators per slice, two slices per
    sample, masks that mostly agree (no adjudication needed, no Label Studio)."""
    import nibabel as nib

    z = Zones(root)
    z.volumes.mkdir(parents=True)
    rdir = z.round_dir("round-1")
    rdir.mkdir(parents=True)
    vols, slices, rows = [], [], []
    for n in range(samples):
        sid = f"S{n}"
        nib.save(
            nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), z.volume_file(f"{sid}.nii.gz")
        )
        vols.append({"sample_id": sid, "nifti_path": f"{sid}.nii.gz",
                     "nifti_sha256": sha256_file(z.volume_file(f"{sid}.nii.gz"))})  # fmt: skip
        for k in (1, 2):
            slices.append({"round": "round-1", "task_key": f"{sid}:k{k:04d}", "sample_id": sid,
                           "slice_k": k, "shape": np.array(SHAPE), "nifti_path": f"{sid}.nii.gz",
                           "image_relpath": f"round-1/images/{sid}_k{k}.png"})  # fmt: skip
        for a in ("ann-a", "ann-b", "ann-c"):
            m = _map([(2, 2, 1), (2, 3, 1), (3, 2, 1)] + ([(4, 4, 2)] if a != "ann-c" else []))
            mp = f"round-1/masks/{sid}/{a}.nii.gz"
            (z.annotation / mp).parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(m, np.eye(4)), z.annotation / mp)
            for k in (1, 2):
                rows.append({"round": "round-1", "task_key": f"{sid}:k{k:04d}", "sample_id": sid,
                             "slice_k": k, "annotator": a, "choice": "abnormal", "has_mask": True,
                             "mask_voxels": 3, "mask_path": mp, "lead_time": 1.0,
                             "created_at": "2026-01-01", "updated_at": "2026-01-01",
                             "was_cancelled": False})  # fmt: skip
    pd.DataFrame(vols).to_parquet(z.volumes_table)
    pd.DataFrame(slices).to_parquet(z.round_slices("round-1"))
    pd.DataFrame(rows).to_parquet(z.round_annotations("round-1"))
    return z


def _outputs(z: Zones) -> dict[str, bytes]:
    files = [z.labels_table, *sorted(z.label_masks.glob("*.nii.gz"))]
    return {p.relative_to(z.labels).as_posix(): p.read_bytes() for p in files}


def test_consensus_reuses_unchanged_samples_with_the_same_bytes(tmp_path: Path) -> None:
    """A rerun with the same inputs recomputes nothing and writes what a run from scratch
    writes; a changed annotation (or a deleted mask file) is recomputed, the others are not."""
    import nibabel as nib

    z = _consensus_home(tmp_path / "a")
    first = run_consensus(z, Thresholds(method="majority"), None, b"")
    assert first.recomputed == 3 and first.reused == 0 and first.samples == 3
    assert first.metadata()["recomputed"] == 3
    scratch = _outputs(z)
    assert set(scratch) == {"labels.parquet", "masks/S0.nii.gz", "masks/S1.nii.gz",
                            "masks/S2.nii.gz"}  # fmt: skip

    again = run_consensus(z, Thresholds(method="majority"), None, b"")
    assert again.recomputed == 0 and again.reused == 3
    assert _outputs(z) == scratch
    assert again.rounds == first.rounds and again.labels == first.labels

    # other thresholds are other inputs: everything is recomputed
    assert run_consensus(z, Thresholds(method="staple"), None, b"").recomputed == 3
    assert run_consensus(z, Thresholds(method="majority"), None, b"").recomputed == 3
    assert _outputs(z) == scratch

    # a consensus mask removed by hand is written again, and only that sample is redone
    (z.label_masks / "S1.nii.gz").unlink()
    fixed = run_consensus(z, Thresholds(method="majority"), None, b"")
    assert fixed.recomputed == 1 and _outputs(z) == scratch

    # annotator ann-c now draws S2's second-slice voxel too: S2 alone is recomputed
    mp = z.annotation / "round-1/masks/S2/ann-c.nii.gz"
    m = _map([(2, 2, 1), (2, 3, 1), (3, 2, 1), (4, 4, 2), (5, 5, 2)])
    nib.save(nib.Nifti1Image(m, np.eye(4)), mp)
    changed = run_consensus(z, Thresholds(method="majority"), None, b"")
    assert changed.recomputed == 1 and changed.reused == 2
    out = _outputs(z)
    assert out["masks/S0.nii.gz"] == scratch["masks/S0.nii.gz"]
    assert out["labels.parquet"] != scratch["labels.parquet"]  # S2's agreement went up

    # ...and the result is byte for byte a fresh home's with the same inputs
    fresh = _consensus_home(tmp_path / "b")
    nib.save(nib.Nifti1Image(m, np.eye(4)), fresh.annotation / "round-1/masks/S2/ann-c.nii.gz")
    assert run_consensus(fresh, Thresholds(method="majority"), None, b"").recomputed == 3
    assert _outputs(fresh) == out


@pytest.mark.parametrize("samples", [3, 6])
def test_consensus_holds_one_sample_of_maps_and_masks_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, samples: int
) -> None:
    """Issue 16: a round's consensus goes sample by sample (its annotator maps read, its mask
    written, both dropped), so what is held does not grow with the round."""
    import gc
    import weakref

    from annotation import adjudication

    z = _consensus_home(tmp_path, samples)
    alive: list[weakref.ref[np.ndarray]] = []
    held: list[int] = []
    real = adjudication.sample_consensus

    def counting(sid, rows, maps, *args, **kwargs):  # type: ignore[no-untyped-def]
        gc.collect()
        held.append(sum(r() is not None for r in alive))  # maps and masks of earlier samples
        out = real(sid, rows, maps, *args, **kwargs)
        alive.extend(weakref.ref(m) for m in [*maps.values(), out.mask])
        return out

    monkeypatch.setattr(adjudication, "sample_consensus", counting)
    res = run_consensus(z, Thresholds(method="majority"), None, b"")
    assert res.recomputed == samples and len(held) == samples
    assert max(held) == 0
