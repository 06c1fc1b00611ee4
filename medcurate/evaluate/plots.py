"""Figures of the evaluation report: ROC with its band, subgroup forest plot, reliability diagram.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so no
global figure state survives a call; they are drawn under matplotlib's default style with a fixed
dpi and no software stamp, so the same input gives the same PNG bytes (a report whose inputs did
not change must hash the same).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medcurate.evaluate.metrics import RocBand, brier, calibration
from medcurate.evaluate.subgroups import OVERALL
from medcurate.io import atomic_write_bytes

DPI = 100
_ROW_INCHES = 0.32
_LABELS = {
    "auc": "AUC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "fnr": "False negative rate",
}


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return atomic_write_bytes(path, buffer.getvalue())


def _percent(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def roc_plot(band: RocBand, path: str | Path, title: str) -> Path:
    """ROC curve with its shaded bootstrap band, the chance diagonal and AUC (CI) in the legend."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(5.0, 5.0), layout="constrained")
        ax = fig.add_subplot()
        level = _percent(band.confidence)
        ax.fill_between(
            band.fpr, band.tpr_low, band.tpr_high, color="tab:blue", alpha=0.2, lw=0,
            label=f"{level} CI",
        )  # fmt: skip
        ax.plot(band.fpr, band.tpr, color="tab:blue", lw=2, label=f"AUC {band.auc.fmt()}")
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="chance")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal", title=title)
        ax.set_xlabel("False positive rate (1 − specificity)")
        ax.set_ylabel("True positive rate (sensitivity)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", title=f"n = {band.auc.n}")
        return _save(fig, path)


def _row_label(row: pd.Series) -> str:
    if row["attribute"] == OVERALL:
        return f"overall (n={int(row['n'])})"
    return f"{row['attribute']}: {row['group']} (n={int(row['n'])})"


def forest_plot(
    table: pd.DataFrame,
    path: str | Path,
    metrics: Sequence[str] = ("sensitivity", "specificity"),
) -> Path:
    """One row per subgroup of a :func:`subgroup_table`, a panel per metric: the point with its
    interval as whiskers, the overall value as a dotted line, n in the row label, ``n/a`` where
    the metric is undefined. The figure grows with the rows so labels never crowd."""
    needed = {"attribute", "group", "n"} | {
        f"{m}{s}" for m in metrics for s in ("", "_low", "_high")
    }
    missing = sorted(needed - set(table.columns))
    if missing:
        raise ValueError(f"the subgroup table lacks column(s) {', '.join(missing)}")
    if not metrics:
        raise ValueError("name at least one metric to plot")
    rows = len(table)
    y = np.arange(rows)[::-1]  # first row at the top
    labels = [_row_label(r) for _, r in table.iterrows()]
    attribute = table["attribute"].to_numpy()
    breaks = [i for i in range(1, rows) if attribute[i] != attribute[i - 1]]
    with matplotlib.style.context("default"):
        height = 1.4 + _ROW_INCHES * max(rows, 1)
        # Room for the longest row label (about 0.075 inch a character at the default font).
        label_inches = 0.6 + 0.075 * max((len(s) for s in labels), default=0)
        width = label_inches + 3.2 * len(metrics)
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
        for ax, metric in zip(axes, metrics, strict=True):
            value = table[metric].to_numpy(dtype=float)
            low = table[f"{metric}_low"].to_numpy(dtype=float)
            high = table[f"{metric}_high"].to_numpy(dtype=float)
            shown = ~np.isnan(value)
            # A percentile interval may, rarely, not straddle its point; whiskers are never < 0.
            err = np.vstack([np.clip(value - low, 0, None), np.clip(high - value, 0, None)])
            err = np.nan_to_num(err)
            ax.errorbar(
                value[shown], y[shown], xerr=err[:, shown], fmt="o", color="tab:blue",
                ecolor="tab:blue", elinewidth=1.5, capsize=3, markersize=5,
            )  # fmt: skip
            for yy in y[~shown]:
                ax.text(0.5, yy, "n/a", ha="center", va="center", color="grey", fontsize=9)
            overall = table.loc[table["attribute"] == OVERALL, metric].to_numpy(dtype=float)
            if overall.size and not math.isnan(overall[0]):
                ax.axvline(overall[0], color="grey", ls=":", lw=1)
            for b in breaks:
                ax.axhline(y[b] + 0.5, color="lightgrey", lw=0.8)
            ax.set(xlim=(-0.04, 1.04), ylim=(-0.7, rows - 0.3), title=_LABELS.get(metric, metric))
            ax.set_xlabel("value (95% CI)")
            ax.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(y, labels)
        axes[0].set_ylabel("subgroup")
        return _save(fig, path)


def calibration_plot(y_true: object, prob: object, path: str | Path, bins: int = 10) -> Path:
    """Reliability diagram (observed fraction against mean predicted probability per bin, the
    diagonal as perfect calibration) over a histogram of the predictions; Brier score in the
    title."""
    mean_pred, observed, count = calibration(y_true, prob, bins=bins)
    score = brier(y_true, prob)
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(5.0, 6.0), layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
        top.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
        top.plot(mean_pred, observed, "o-", color="tab:blue", label="model")
        top.set(xlim=(0, 1), ylim=(-0.02, 1.02), ylabel="Observed fraction positive")
        brier_text = "n/a" if math.isnan(score) else f"{score:.3f}"
        top.set_title(f"Calibration (Brier {brier_text}, n = {int(count.sum())})")
        top.grid(alpha=0.3)
        top.legend(loc="upper left")
        edges = np.linspace(0, 1, bins + 1)
        bottom.hist(np.asarray(prob, dtype=float).ravel(), bins=edges, color="tab:blue", alpha=0.5)
        bottom.set(xlabel="Predicted probability", ylabel="count")
        return _save(fig, path)


def png_data_uri(path: str | Path) -> str:
    """The PNG as a ``data:`` URI, to embed in a markdown dataset card."""
    data = Path(path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
