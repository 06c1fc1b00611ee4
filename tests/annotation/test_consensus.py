from __future__ import annotations

import numpy as np
import pytest

from annotation.agreement import dice
from annotation.consensus import majority_class, majority_mask, staple


def test_majority_class() -> None:
    vote = majority_class(["abnormal", "abnormal", "normal"])
    assert (vote.label, vote.accepted) == ("abnormal", True)
    assert vote.support == pytest.approx(2 / 3)
    tie = majority_class(["abnormal", "normal"])
    assert (tie.label, tie.accepted) == (None, False)
    weak = majority_class(["a", "a", "b", "c"], min_support=0.5)  # 2 of 4 is not > half
    assert (weak.label, weak.accepted) == (None, False)
    assert majority_class(["a", "a", "b", "c"], min_support=0.4).label == "a"
    assert majority_class([]).accepted is False


def test_majority_mask() -> None:
    a = np.array([[1, 1, 0, 0]])
    b = np.array([[1, 0, 1, 0]])
    c = np.array([[1, 1, 0, 1]])
    assert majority_mask([a, b, c]).tolist() == [[1, 1, 0, 0]]
    assert majority_mask([a, b]).tolist() == [[1, 0, 0, 0]]  # a 1-1 tie is background
    with pytest.raises(ValueError):
        majority_mask([a, np.zeros((2, 2))])


def _disk(shape: tuple[int, int, int], center: tuple[int, int, int], r: float) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    cz, cy, cx = center
    return ((zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2) < r * r


def test_staple_recovers_truth_and_ranks_raters() -> None:
    rng = np.random.default_rng(5)
    truth = _disk((12, 40, 40), (6, 20, 20), 8)
    good1 = truth.copy()
    good2 = truth ^ (rng.random(truth.shape) < 0.01)
    noisy = truth ^ (rng.random(truth.shape) < 0.15)
    result = staple([good1, good2, noisy])
    assert result.mask.shape == truth.shape
    assert dice(result.mask, truth) > 0.97
    assert dice(result.mask, truth) > dice(noisy, truth)
    assert (
        result.sensitivity[2] < result.sensitivity[0]
        or result.specificity[2] < result.specificity[0]
    )
    assert result.specificity[2] < min(result.specificity[:2])
    assert ((result.probability >= 0) & (result.probability <= 1)).all()


def test_staple_all_empty() -> None:
    result = staple([np.zeros((3, 4)), np.zeros((3, 4))])
    assert result.mask.sum() == 0
    assert result.sensitivity == (1.0, 1.0)
