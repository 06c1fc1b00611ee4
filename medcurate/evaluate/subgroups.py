"""Per-subgroup metrics and the gaps between subgroups.

A model that is good overall can still miss most positives of one site or one scanner. The
subgroup table gives every group its metrics with bootstrap intervals and its counts, so a small
group's wide interval is visible rather than hidden; fairness gaps summarise, per attribute, how
far the groups lie apart (through fairlearn's MetricFrame) and which group is worst off.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from medcurate.evaluate.metrics import binary_metrics, bootstrap

OVERALL = "overall"
UNKNOWN = "unknown"
CROSS = "×"
TABLE_METRICS = ("auc", "sensitivity", "specificity", "ppv", "npv", "fnr")
GAP_METRICS = ("sensitivity", "specificity", "fnr", "selection_rate")
# Which end of a metric is the worse one; selection rate has no good direction, and its lowest
# group (fewest flagged for follow-up) is reported.
_WORST_IS_HIGH = {"sensitivity": False, "specificity": False, "fnr": True, "selection_rate": False}


def _counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[int, int, int, int]:
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    return int((p & y).sum()), int((~p & y).sum()), int((~p & ~y).sum()), int((p & ~y).sum())


def _rate(num: int, den: int) -> float:
    return num / den if den else math.nan


def sensitivity(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Recall of the positives; NaN for a group without positives (no warning)."""
    tp, fn, _, _ = _counts(y_true, y_pred)
    return _rate(tp, tp + fn)


def specificity(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Recall of the negatives; NaN for a group without negatives."""
    _, _, tn, fp = _counts(y_true, y_pred)
    return _rate(tn, tn + fp)


def fnr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of positives missed; NaN for a group without positives."""
    tp, fn, _, _ = _counts(y_true, y_pred)
    return _rate(fn, tp + fn)


def selection_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share predicted positive; NaN for an empty group."""
    p = np.asarray(y_pred).astype(bool)
    return _rate(int(p.sum()), p.size)


_GAP_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "sensitivity": sensitivity,
    "specificity": specificity,
    "fnr": fnr,
    "selection_rate": selection_rate,
}


def _check_frame(frame: pd.DataFrame, attributes: Sequence[str]) -> None:
    if isinstance(attributes, str):
        raise ValueError("attributes must be a list of column names, not one string")
    missing = [c for c in ("y_true", "score", *attributes) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"the frame lacks column(s) {', '.join(missing)}; it needs y_true, score and each "
            "attribute asked for"
        )


def group_labels(column: pd.Series) -> pd.Series:
    """Group names as text, with missing values named ``unknown``."""
    return column.astype(object).where(column.notna(), UNKNOWN).astype(str)


def _group_order(names: pd.Series) -> list[str]:
    # Sorted by name, with "unknown" last so it does not sit among real groups.
    return sorted(names.unique(), key=lambda g: (g == UNKNOWN, g))


def _row(
    attribute: str,
    group: str,
    part: pd.DataFrame,
    threshold: float,
    n_resamples: int,
    seed: int,
) -> dict[str, object]:
    y = part["y_true"].to_numpy()
    s = part["score"].to_numpy(dtype=float)
    point = binary_metrics(y, s, threshold)
    row: dict[str, object] = {
        "attribute": attribute,
        "group": group,
        "n": int(point["n"]),
        "n_pos": int(point["n_pos"]),
        "n_neg": int(point["n_neg"]),
        "prevalence": point["prevalence"],
    }
    estimates = bootstrap(y, s, threshold, n_resamples=n_resamples, seed=seed)
    for metric in TABLE_METRICS:
        est = estimates[metric]
        row[metric] = est.value
        row[f"{metric}_low"] = est.low
        row[f"{metric}_high"] = est.high
    return row


def subgroup_table(
    frame: pd.DataFrame,
    attributes: Sequence[str],
    threshold: float,
    min_n: int = 5,
    n_resamples: int = 2000,
    seed: int = 0,
    intersections: bool = True,
) -> pd.DataFrame:
    """Metrics with bootstrap intervals overall, per group of each attribute, and (when
    ``intersections``) per group of each pair of attributes, e.g. attribute ``sex×site`` and group
    ``F×site-a``. Intersections with fewer than ``min_n`` items are left out: they are noise.
    Single-attribute groups are all kept, however small, with their n beside their intervals.

    ``frame`` has columns y_true (0/1), score and the attributes. Rows come overall first, then
    attributes in the order given, groups by name with ``unknown`` last.
    """
    _check_frame(frame, attributes)
    labels = {a: group_labels(frame[a]) for a in attributes}
    rows = [_row(OVERALL, OVERALL, frame, threshold, n_resamples, seed)]
    for attribute in attributes:
        for group in _group_order(labels[attribute]):
            part = frame[labels[attribute] == group]
            rows.append(_row(attribute, group, part, threshold, n_resamples, seed))
    if intersections:
        for first, second in itertools.combinations(attributes, 2):
            combined = labels[first] + CROSS + labels[second]
            for group in sorted(combined.unique(), key=lambda g: (UNKNOWN in g.split(CROSS), g)):
                part = frame[combined == group]
                if len(part) >= min_n:
                    name = f"{first}{CROSS}{second}"
                    rows.append(_row(name, group, part, threshold, n_resamples, seed))
    return pd.DataFrame(rows).reset_index(drop=True)


def _worst(groups: list[str], values: np.ndarray, metric: str) -> tuple[str | None, float]:
    """The worst-off group; on ties the first in group order."""
    defined = ~np.isnan(values)
    if not defined.any():
        return None, math.nan
    masked = np.where(defined, values, -np.inf if _WORST_IS_HIGH[metric] else np.inf)
    at = int(np.argmax(masked) if _WORST_IS_HIGH[metric] else np.argmin(masked))
    return groups[at], float(values[at])


def fairness_gaps(frame: pd.DataFrame, attributes: Sequence[str], threshold: float) -> pd.DataFrame:
    """One row per (attribute, metric) for sensitivity, specificity, FNR and selection rate of
    ``score >= threshold``: difference (max - min over groups where the metric is defined), ratio
    (min / max), the worst-off group with its value, its n and n_pos, and n_groups (groups where
    the metric is defined). Computed with fairlearn's MetricFrame; groups of one class give NaN
    for the metrics they cannot have and are left out of the gap.
    """
    _check_frame(frame, attributes)
    y_true = frame["y_true"].to_numpy().astype(int)
    y_pred = (frame["score"].to_numpy(dtype=float) >= threshold).astype(int)
    rows = []
    for attribute in attributes:
        labels = group_labels(frame[attribute])
        with warnings.catch_warnings():
            # fairlearn and scikit-learn warn about one-class groups; those are NaN by design.
            warnings.simplefilter("ignore")
            mf = MetricFrame(
                metrics=_GAP_FUNCTIONS,
                y_true=y_true,
                y_pred=y_pred,
                sensitive_features=labels.rename(attribute),
            )
            by_group = mf.by_group
        sizes = labels.value_counts()
        positives = pd.Series(y_true, index=labels.index).groupby(labels).sum()
        for metric in GAP_METRICS:
            series = by_group[metric].astype(float)
            series.index = series.index.astype(str)
            groups = _group_order(pd.Series(series.index))
            values = series.reindex(groups).to_numpy(dtype=float)
            defined = values[~np.isnan(values)]
            high = float(defined.max()) if len(defined) else math.nan
            low = float(defined.min()) if len(defined) else math.nan
            worst, worst_value = _worst(groups, values, metric)
            rows.append(
                {
                    "attribute": attribute,
                    "metric": metric,
                    "difference": high - low if len(defined) >= 2 else math.nan,
                    "ratio": low / high if len(defined) >= 2 and high > 0 else math.nan,
                    "worst_group": worst,
                    "worst_value": worst_value,
                    "worst_n": int(sizes[worst]) if worst is not None else 0,
                    "worst_n_pos": int(positives[worst]) if worst is not None else 0,
                    "n_groups": len(defined),
                }
            )
    return pd.DataFrame(rows)


def flag_gaps(
    gaps: pd.DataFrame,
    tolerance: float = 0.2,
    metrics: Sequence[str] = ("fnr", "specificity"),
) -> list[str]:
    """Plain sentences for the gaps of ``metrics`` wider than ``tolerance``, e.g.
    ``fnr differs by 0.50 across site (worst: site-b 0.67, n=6)``. A gap that cannot be measured
    (fewer than two groups with the metric defined) is not flagged."""
    messages = []
    for row in gaps.to_dict("records"):
        difference = float(row["difference"])
        if row["metric"] not in metrics or not difference > tolerance:
            continue
        messages.append(
            f"{row['metric']} differs by {difference:.2f} across {row['attribute']} "
            f"(worst: {row['worst_group']} {float(row['worst_value']):.2f}, n={row['worst_n']})"
        )
    return messages
