"""Binary classification metrics at a stated threshold, with bootstrap confidence intervals.

Everything here is a pure function of labels and scores. A metric that is undefined on the data
(AUC of one class, a ratio with nothing in its denominator) is NaN, never an exception: a report
over many small subgroups must still be written, and NaN is shown there as "n/a".

Intervals come from a stratified bootstrap as pROC draws it: positives and negatives are resampled
separately with replacement, keeping their counts, so every resample has both classes. A resample
is represented by how often it draws each distinct score of each class; AUC (Mann-Whitney with
ties counted half), the confusion counts and the ROC all follow from those counts, vectorised over
resamples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_curve

METRICS = (
    "auc",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "fnr",
    "fpr",
    "accuracy",
    "prevalence",
)
RULES = ("youden", "sensitivity")
# Resamples are drawn in blocks so memory stays near this many cells whatever the data size.
_BLOCK_CELLS = 2_000_000


@dataclass(frozen=True)
class Estimate:
    """A point value with its confidence interval; ``n`` is the number of items it rests on."""

    value: float
    low: float
    high: float
    n: int

    def fmt(self, digits: int = 2) -> str:
        """``0.91 (0.80–0.98)``; ``n/a`` when the value is undefined."""
        if math.isnan(self.value):
            return "n/a"
        value = f"{self.value:.{digits}f}"
        if math.isnan(self.low) or math.isnan(self.high):
            return f"{value} (n/a)"
        return f"{value} ({self.low:.{digits}f}–{self.high:.{digits}f})"


@dataclass(frozen=True, eq=False)
class RocBand:
    """The ROC curve on a fixed FPR grid with its pointwise bootstrap percentile band (arrays, so
    compared by identity)."""

    fpr: np.ndarray
    tpr: np.ndarray
    tpr_low: np.ndarray
    tpr_high: np.ndarray
    auc: Estimate
    confidence: float = 0.95


def _inputs(y_true: object, score: object) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    s = np.asarray(score, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} items but score has {s.size}; they must pair up")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1 (negative and positive)")
    if np.isnan(s).any():
        raise ValueError("score contains NaN; drop or impute those items before computing metrics")
    return y.astype(bool), s


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted half (what roc_auc_score gives); NaN for one class."""
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    # Mid-ranks of tied scores, 1-based.
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    mid = first + (counts + 1) / 2.0
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(mid, counts)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _from_counts(tp: np.ndarray, fn: np.ndarray, tn: np.ndarray, fp: np.ndarray) -> dict:
    pos = tp + fn
    neg = tn + fp
    n = pos + neg
    return {
        "sensitivity": _ratio(tp, pos),
        "specificity": _ratio(tn, neg),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "fnr": _ratio(fn, pos),
        "fpr": _ratio(fp, neg),
        "accuracy": _ratio(tp + tn, n),
        "prevalence": _ratio(pos, n),
    }


def binary_metrics(y_true: object, score: object, threshold: float) -> dict[str, float]:
    """Metrics of ``score >= threshold`` as the positive prediction, plus n, n_pos, n_neg.

    Undefined values are NaN: AUC with one class, a rate whose denominator is empty.
    """
    y, s = _inputs(y_true, score)
    pred = s >= threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    counts = [np.asarray(v) for v in (tp, n_pos - tp, n_neg - fp, fp)]
    out: dict[str, float] = {"auc": _auc(y, s)}
    out.update({k: float(v) for k, v in _from_counts(*counts).items()})
    out.update({"n": y.size, "n_pos": n_pos, "n_neg": n_neg})
    return out


def choose_threshold(
    y_true: object, score: object, rule: str = "youden", target_sensitivity: float = 0.9
) -> float:
    """An operating threshold chosen on the data (usually the validation split).

    ``youden`` maximises sensitivity + specificity - 1 over the ROC thresholds, preferring the
    higher threshold on ties (fewer false positives for the same J). ``sensitivity`` is the highest
    threshold whose sensitivity reaches ``target_sensitivity``. One class or no data: 0.5, the
    conventional cut of a probability, since nothing on the data can choose.
    """
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; use one of {', '.join(RULES)}")
    if rule == "sensitivity" and not 0.0 < target_sensitivity <= 1.0:
        raise ValueError("target_sensitivity must be in (0, 1]")
    y, s = _inputs(y_true, score)
    if y.size == 0 or y.all() or not y.any():
        return 0.5
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    # roc_curve lists thresholds from high to low, so the first maximum is the highest threshold.
    if rule == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    # Sensitivity can only grow as the threshold falls; the lowest threshold gives 1.
    return float(thresholds[int(np.argmax(tpr >= target_sensitivity - 1e-12))])


class _Resampler:
    """Stratified bootstrap of one data set, as per-resample counts over its distinct scores."""

    def __init__(self, y: np.ndarray, s: np.ndarray) -> None:
        self.values, inverse = np.unique(s, return_inverse=True)  # ascending distinct scores
        self.pos_index = inverse[y]
        self.neg_index = inverse[~y]
        self.n_pos = self.pos_index.size
        self.n_neg = self.neg_index.size

    def _counts(self, index: np.ndarray, rng: np.random.Generator, rows: int) -> np.ndarray:
        u = self.values.size
        draws = index[rng.integers(0, index.size, size=(rows, index.size))]
        flat = (draws + u * np.arange(rows)[:, None]).ravel()
        return np.bincount(flat, minlength=rows * u).reshape(rows, u)

    def blocks(self, n_resamples: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positives, negatives) count arrays of shape (rows, distinct scores), block by block."""
        rng = np.random.default_rng(seed)
        cells = max(self.values.size, self.n_pos + self.n_neg, 1)
        block = max(1, _BLOCK_CELLS // cells)
        done = 0
        while done < n_resamples:
            rows = min(block, n_resamples - done)
            yield self._counts(self.pos_index, rng, rows), self._counts(self.neg_index, rng, rows)
            done += rows

    def auc(self, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
        """Mann-Whitney per resample: each positive beats the negatives below it, ties half."""
        below = np.cumsum(neg, axis=1) - neg
        wins = (pos * (below + 0.5 * neg)).sum(axis=1)
        return wins / (self.n_pos * self.n_neg)

    def roc_on_grid(self, pos: np.ndarray, neg: np.ndarray, grid: np.ndarray) -> np.ndarray:
        """TPR at each FPR of ``grid`` per resample, linear between ROC vertices."""
        # Items at or above each distinct score, from the highest score down; a leading 0 is the
        # threshold above every score.
        zero = np.zeros((pos.shape[0], 1))
        tpr = np.hstack([zero, np.cumsum(pos[:, ::-1], axis=1) / self.n_pos])
        fpr = np.hstack([zero, np.cumsum(neg[:, ::-1], axis=1) / self.n_neg])
        return np.vstack([_interp_roc(grid, f, t) for f, t in zip(fpr, tpr, strict=True)])


def _interp_roc(grid: np.ndarray, fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """TPR on the grid, linear along the ROC's sloped segments; at a vertical step the grid point
    takes the top of the step, except at FPR 0, where the curve starts at (0, 0)."""
    out = np.interp(grid, fpr, tpr)
    # Which end of a vertical step np.interp returns is unspecified; take the step's top.
    at = np.searchsorted(fpr, grid, side="right") - 1
    exact = (at >= 0) & (fpr[np.clip(at, 0, None)] == grid)
    out[exact] = tpr[at[exact]]
    out[grid <= 0] = 0.0
    return out


def _check_resampling(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be between 0 and 1, e.g. 0.95")


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bounds along axis 0, over the resamples where the value is defined."""
    alpha = (1.0 - confidence) / 2.0
    defined = ~np.isnan(samples)
    low = np.full(samples.shape[1:], np.nan)
    high = np.full(samples.shape[1:], np.nan)
    has = defined.any(axis=0)
    if has.any():
        cols = samples[:, has]
        # nanquantile warns on all-NaN columns only; those were excluded above.
        low[has], high[has] = np.nanquantile(cols, [alpha, 1.0 - alpha], axis=0)
    return low, high


def bootstrap(
    y_true: object,
    score: object,
    threshold: float,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Every metric of :func:`binary_metrics` (not the counts) with a stratified bootstrap
    percentile interval. A metric undefined on the full data has NaN value and bounds; one that is
    undefined in some resamples (PPV with no predicted positive) takes its bounds from the rest.
    With class counts fixed, prevalence has a zero-width interval, as in pROC."""
    _check_resampling(n_resamples, confidence)
    y, s = _inputs(y_true, score)
    point = binary_metrics(y, s, threshold)
    n = y.size
    nan = {k: Estimate(point[k], math.nan, math.nan, n) for k in METRICS}
    if n == 0:
        return nan
    resampler = _Resampler(y, s)
    predicted = resampler.values >= threshold
    samples: dict[str, list[np.ndarray]] = {k: [] for k in METRICS}
    for pos, neg in resampler.blocks(n_resamples, seed):
        tp = pos[:, predicted].sum(axis=1)
        fp = neg[:, predicted].sum(axis=1)
        counts = _from_counts(tp, resampler.n_pos - tp, resampler.n_neg - fp, fp)
        for key, values in counts.items():
            samples[key].append(values)
        if resampler.n_pos and resampler.n_neg:
            samples["auc"].append(resampler.auc(pos, neg))
    out = {}
    for key in METRICS:
        if math.isnan(point[key]) or not samples[key]:
            out[key] = nan[key]
            continue
        low, high = _percentiles(np.concatenate(samples[key])[:, None], confidence)
        out[key] = Estimate(point[key], float(low[0]), float(high[0]), n)
    return out


def roc_band(
    y_true: object,
    score: object,
    n_resamples: int = 2000,
    seed: int = 0,
    grid: int = 101,
    confidence: float = 0.95,
) -> RocBand:
    """The data's ROC on ``grid`` evenly spaced FPRs from 0 to 1, with a pointwise stratified
    bootstrap percentile band of the TPR, and the AUC with its interval. Needs both classes."""
    _check_resampling(n_resamples, confidence)
    if grid < 2:
        raise ValueError("grid must have at least 2 points (FPR 0 and 1)")
    y, s = _inputs(y_true, score)
    if y.size == 0 or y.all() or not y.any():
        raise ValueError("an ROC needs both positive and negative items; this data has one class")
    fpr_grid = np.linspace(0.0, 1.0, grid)
    resampler = _Resampler(y, s)
    u = resampler.values.size
    pos_all = np.bincount(resampler.pos_index, minlength=u)[None, :]
    neg_all = np.bincount(resampler.neg_index, minlength=u)[None, :]
    tpr = resampler.roc_on_grid(pos_all, neg_all, fpr_grid)[0]
    curves, aucs = [], []
    for pos, neg in resampler.blocks(n_resamples, seed):
        curves.append(resampler.roc_on_grid(pos, neg, fpr_grid))
        aucs.append(resampler.auc(pos, neg))
    low, high = _percentiles(np.vstack(curves), confidence)
    auc_low, auc_high = _percentiles(np.concatenate(aucs)[:, None], confidence)
    auc = Estimate(_auc(y, s), float(auc_low[0]), float(auc_high[0]), y.size)
    return RocBand(fpr_grid, tpr, low, high, auc, confidence)


def calibration(
    y_true: object, prob: object, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability table over ``bins`` equal-width bins of [0, 1]: mean predicted probability,
    observed fraction positive and item count, for the non-empty bins only."""
    if bins < 1:
        raise ValueError("bins must be at least 1")
    y, p = _inputs(y_true, prob)
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("calibration needs probabilities in [0, 1], not raw scores")
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    total_p = np.bincount(which, weights=p, minlength=bins)
    total_y = np.bincount(which, weights=y.astype(float), minlength=bins)
    keep = count > 0
    return total_p[keep] / count[keep], total_y[keep] / count[keep], count[keep]


def brier(y_true: object, prob: object) -> float:
    """Mean squared difference between probability and outcome; NaN with no data."""
    y, p = _inputs(y_true, prob)
    if y.size == 0:
        return math.nan
    return float(np.mean((p - y) ** 2))
