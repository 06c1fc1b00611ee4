"""Consensus tables of a round: per-slice majority, per-sample label and mask, kappa, and which
samples go to adjudication; adjudicated slices win (pure functions on hand-made annotations)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from annotation.adjudication import (
    Thresholds,
    adjudication_decisions,
    adjudication_tasks,
    round_kappa,
    sample_consensus,
    sample_label,
)
from annotation.agreement import cohen_kappa, fleiss_kappa_from_ratings
from annotation.render import AXIAL_RAS, LEGACY_AXIAL, pixel_to_voxel, volume_mask_slice
from annotation.rle import rle_to_mask

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
