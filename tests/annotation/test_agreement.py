from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from annotation.agreement import (
    cohen_kappa,
    dice,
    fleiss_kappa,
    fleiss_kappa_from_ratings,
    mean_pairwise_dice,
    pairwise_dice,
    rating_counts,
)

# Fleiss (1971)-style worked example as tabulated on Wikipedia's "Fleiss' kappa" page:
# 10 subjects, 14 raters each, 5 categories; P-bar = 0.378, P-e = 0.213, kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_cohen_hand_computed() -> None:
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    # p_o = 35/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = (0.7-0.5)/(1-0.5) = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_matches_sklearn_on_three_classes() -> None:
    rng = np.random.default_rng(0)
    a = rng.choice(["normal", "abnormal", "unreadable"], 200).tolist()
    b = [x if rng.random() < 0.7 else "normal" for x in a]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_cohen_degenerate_and_errors() -> None:
    assert cohen_kappa(["a", "a"], ["a", "a"]) == 1.0
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


def test_fleiss_published_table() -> None:
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.2099, abs=5e-4)


def test_fleiss_small_hand_example() -> None:
    # 3 items, 3 raters, 2 categories: [3,0], [2,1], [0,3].
    # P_i = 1, 1/3, 1 -> P-bar = 7/9; p_j = 5/9, 4/9 -> P-e = 41/81; kappa = (22/81)/(40/81) = 0.55
    ratings = [["n", "n", "n"], ["n", "n", "a"], ["a", "a", "a"]]
    table, cats = rating_counts(ratings)
    assert cats == ["a", "n"]
    assert table.tolist() == [[0, 3], [1, 2], [3, 0]]
    assert fleiss_kappa_from_ratings(ratings) == pytest.approx(0.55)


def test_fleiss_with_two_raters_is_close_to_scotts_pi() -> None:
    with pytest.raises(ValueError):
        fleiss_kappa([[1, 1], [2, 1]])  # unequal number of ratings
    assert fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)


def test_dice_hand_computed() -> None:
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    a[0, :4] = True  # 4 voxels
    b[0, 1:4] = True  # 3 of them ...
    b[1, 0:3] = True  # ... plus 3 others: 6 voxels, overlap 3 -> 2*3/10
    assert dice(a, b) == pytest.approx(0.6)
    assert dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0


def test_pairwise_dice() -> None:
    a = np.array([1, 1, 0, 0])
    b = np.array([1, 0, 0, 0])
    c = np.array([1, 1, 0, 0])
    pairs = pairwise_dice([a, b, c])
    assert pairs == {(0, 1): pytest.approx(2 / 3), (0, 2): 1.0, (1, 2): pytest.approx(2 / 3)}
    assert mean_pairwise_dice([a, b, c]) == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    with pytest.raises(ValueError):
        mean_pairwise_dice([a])


def test_cohen_degenerate_convention_is_ours_not_sklearns() -> None:
    """Both raters put everything in one category: chance agreement is 1, sklearn says the
    kappa is undefined (NaN); our convention (module docstring) makes it 1.0, so a round's
    report never shows NaN. Any other input is sklearn's value."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(cohen_kappa_score(["normal"] * 3, ["normal"] * 3))
    assert cohen_kappa(["normal"] * 3, ["normal"] * 3) == 1.0
    # one rater uses a second category: defined, and sklearn's
    a, b = ["normal", "normal", "normal"], ["normal", "normal", "abnormal"]
    assert cohen_kappa(a, b) == cohen_kappa_score(a, b) == 0.0
    # Fleiss' kappa keeps the same convention
    assert fleiss_kappa([[3, 0], [3, 0]]) == 1.0
