"""Figures of the augmentation report: real beside synthetic, each synthetic sample beside its
nearest training record, and the per-seed AUC of both arms.

A reviewer judges synthetic images by eye before trusting any score, and judges memorisation by
looking at the closest real record, so these are the figures the report leads with. Figures are
built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state), under matplotlib's
default style, a fixed dpi and no software stamp: the same inputs give the same PNG bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medcurate.augment.utility import AUGMENTED, REAL, UtilityResult
from medcurate.io import atomic_write_bytes

DPI = 100
_CELL = 1.3  # inches per image
_PAIRS_PER_ROW = 4
_OUTLINE = "tab:red"


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return atomic_write_bytes(path, buffer.getvalue())


def _images(x: Any, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, S, S) images and (N, S, S) masks (None without a mask channel) from (N, S, S),
    (N, 1, S, S) or (N, 2, S, S) arrays."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 3:
        return a, None
    if a.ndim != 4 or a.shape[1] not in (1, 2):
        raise ValueError(
            f"{what} must be (N, 1, S, S) images or (N, 2, S, S) image and mask, got shape "
            f"{a.shape}"
        )
    return a[:, 0], (a[:, 1] if a.shape[1] == 2 else None)


def _show(ax: Any, image: np.ndarray, mask: np.ndarray | None) -> None:
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    if mask is not None and mask.max() > 0.5 > mask.min():
        ax.contour(mask, levels=[0.5], colors=_OUTLINE, linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])


def sample_grid(
    real: Any,
    synth: Any,
    path: str | Path,
    n: int = 8,
    title: str = "Real and synthetic samples",
) -> Path:
    """Up to ``n`` real samples in a row labelled "real" above up to ``n`` synthetic ones labelled
    "synthetic"; a mask channel is drawn as a red outline."""
    if n < 1:
        raise ValueError("n must be at least 1")
    rows = [("real", *_images(real, "real")), ("synthetic", *_images(synth, "synth"))]
    cols = max(1, min(n, max(len(r[1]) for r in rows)))
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(_CELL * cols + 0.6, 2 * _CELL + 0.6), layout="constrained")
        axes = fig.subplots(2, cols, squeeze=False)
        for r, (label, images, masks) in enumerate(rows):
            for c in range(cols):
                ax = axes[r, c]
                if c < len(images):
                    _show(ax, images[c], None if masks is None else masks[c])
                else:
                    ax.set_axis_off()
            axes[r, 0].set_axis_on()
            axes[r, 0].set_ylabel(label, fontsize=11)
            if len(images) == 0:
                for side in axes[r, 0].spines.values():
                    side.set_visible(False)
                axes[r, 0].set_xticks([])
                axes[r, 0].set_yticks([])
        fig.suptitle(title)
        return _save(fig, path)


def nearest_grid(
    synth: Any,
    nearest_real: Any,
    captions: Sequence[str],
    path: str | Path,
    title: str = "Synthetic samples and their nearest training records",
) -> Path:
    """Each synthetic sample beside its nearest real training record, the pair's caption (e.g.
    ``NCC 0.71, patient P0012``) under it; four pairs to a row."""
    s_img, s_mask = _images(synth, "synth")
    r_img, r_mask = _images(nearest_real, "nearest_real")
    if not len(s_img) == len(r_img) == len(captions):
        raise ValueError(
            f"{len(s_img)} synthetic sample(s), {len(r_img)} nearest record(s) and "
            f"{len(captions)} caption(s): give one of each per pair"
        )
    if len(s_img) == 0:
        raise ValueError("no pairs to draw")
    count = len(s_img)
    cols = min(count, _PAIRS_PER_ROW)
    rows = math.ceil(count / cols)
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(2 * _CELL * cols + 0.4, (_CELL + 0.45) * rows + 0.4))
        fig.set_layout_engine("constrained")
        subs = np.asarray(fig.subfigures(rows, cols, squeeze=False))
        for k in range(rows * cols):
            sub = subs[k // cols, k % cols]
            if k >= count:
                continue
            left, right = sub.subplots(1, 2)
            _show(left, s_img[k], None if s_mask is None else s_mask[k])
            _show(right, r_img[k], None if r_mask is None else r_mask[k])
            left.set_title("synthetic", fontsize=9)
            right.set_title("nearest real", fontsize=9)
            sub.supxlabel(str(captions[k]), fontsize=9)
        fig.suptitle(title)
        return _save(fig, path)


def paired_plot(utility: UtilityResult, path: str | Path) -> Path:
    """Test AUC of both arms per seed joined by a line (one line per seed), their means in
    black, and the mean difference with its paired-bootstrap 95% CI in the title."""
    runs = utility.runs.set_index(["seed", "arm"])["auc"]
    r = utility.overall("auc")
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(4.8, 4.6), layout="constrained")
        ax = fig.add_subplot()
        # seeds often tie on a small test set, so they are told apart by colour, not by labels
        # placed beside the points (which would overprint each other)
        for k, seed in enumerate(utility.seeds):
            values = [float(runs.loc[(seed, arm)]) for arm in (REAL, AUGMENTED)]
            ax.plot([0, 1], values, marker="o", color=f"C{k % 10}", lw=1.2, ms=5, alpha=0.8,
                    label=f"seed {seed}")  # fmt: skip
        means = [float(r["real"]), float(r["augmented"])]
        ax.plot([0, 1], means, marker="s", color="black", lw=2.5, ms=7, label="mean over seeds")
        ax.set_xticks([0, 1], [REAL, AUGMENTED])
        ax.set_xlim(-0.3, 1.3)
        ax.set_ylabel("test AUC")
        low = min(float(np.nanmin(utility.runs["auc"])), 0.5)
        ax.set_ylim(max(0.0, low - 0.05), 1.02)
        ax.axhline(0.5, color="0.8", lw=1, ls="--", zorder=0)
        ax.legend(loc="lower left", fontsize=8, frameon=False)
        k = len(utility.seeds)
        ax.set_title(
            f"AUC difference {r['difference']:+.3f} "
            f"(95% CI {r['low']:+.3f} to {r['high']:+.3f})\n"
            f"{utility.verdict}, Holm-adjusted p {_p(r['p_holm'])}, {k} seed{'s' * (k != 1)}",
            fontsize=10,
        )
        return _save(fig, path)


def _p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.2f}"
