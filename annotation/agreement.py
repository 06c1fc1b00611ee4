"""Inter-annotator agreement: Cohen's kappa (2 raters), Fleiss' kappa (k raters), pairwise Dice.

Label Studio's open-source edition computes no agreement, so we do: Cohen's kappa is
scikit-learn's ``cohen_kappa_score``; Fleiss' kappa is a small formula of ours (statsmodels, which
has one, is not a dependency), pinned by tests to hand-computed and published examples.

Conventions for degenerate cases, chosen so a round's report never shows NaN (scikit-learn
would say NaN):

- chance agreement 1 (every rating, of every rater, in one category): kappa is 1.0 when the
  raters agree perfectly, else 0.0. For Cohen's kappa that case always agrees perfectly (one
  category, two raters using only it), so it is 1.0;
- the Dice of two empty masks is 1.0 (both say "no lesion").
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import combinations

import numpy as np
from numpy.typing import NDArray


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two raters over the same items (nominal categories), by scikit-learn;
    1.0 when both raters put every item in one and the same category (see the module's
    conventions: scikit-learn calls that undefined)."""
    if len(a) != len(b):
        raise ValueError(f"raters rated different numbers of items: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("no items to compare")
    if len(set(a) | set(b)) == 1:  # chance agreement 1 and perfect agreement: the convention
        return 1.0
    from sklearn.metrics import cohen_kappa_score  # lazy: sklearn.metrics takes seconds

    return float(cohen_kappa_score(list(a), list(b)))


def rating_counts(
    ratings: Sequence[Sequence[Hashable]],
) -> tuple[NDArray[np.int64], list[Hashable]]:
    """Items x categories count table from per-item rating lists (one rating per rater)."""
    categories = sorted({r for item in ratings for r in item}, key=repr)
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(ratings), len(categories)), dtype=np.int64)
    for row, item in enumerate(ratings):
        for r in item:
            table[row, index[r]] += 1
    return table, categories


def fleiss_kappa(counts: NDArray[np.generic] | Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa from an items x categories table of counts (same raters-per-item count)."""
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError("counts must be a non-empty items x categories table")
    per_item = table.sum(axis=1)
    if not np.all(per_item == per_item[0]) or per_item[0] < 2:
        raise ValueError("every item needs the same number (>= 2) of ratings")
    n_items, n_raters = table.shape[0], per_item[0]
    p_j = table.sum(axis=0) / (n_items * n_raters)
    p_i = (np.sum(table * table, axis=1) - n_raters) / (n_raters * (n_raters - 1))
    p_bar = float(p_i.mean())
    p_e = float(np.sum(p_j * p_j))
    if p_e >= 1.0:
        return 1.0 if p_bar >= 1.0 else 0.0
    return (p_bar - p_e) / (1.0 - p_e)


def fleiss_kappa_from_ratings(ratings: Sequence[Sequence[Hashable]]) -> float:
    """Fleiss' kappa from per-item lists of ratings (e.g. each task's annotators' choices)."""
    table, _ = rating_counts(ratings)
    return fleiss_kappa(table)


def dice(a: NDArray[np.generic], b: NDArray[np.generic]) -> float:
    """Dice of two binary masks (nonzero is foreground); two empty masks score 1.0."""
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    x, y = np.asarray(a) != 0, np.asarray(b) != 0
    total = int(x.sum()) + int(y.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(x, y).sum()) / total


def pairwise_dice(masks: Sequence[NDArray[np.generic]]) -> dict[tuple[int, int], float]:
    """Dice for every pair of raters' masks, keyed by (rater index, rater index)."""
    return {(i, j): dice(masks[i], masks[j]) for i, j in combinations(range(len(masks)), 2)}


def mean_pairwise_dice(masks: Sequence[NDArray[np.generic]]) -> float:
    """Mean pairwise Dice; needs at least two masks."""
    if len(masks) < 2:
        raise ValueError("agreement needs at least two masks")
    values = list(pairwise_dice(masks).values())
    return float(np.mean(values))
