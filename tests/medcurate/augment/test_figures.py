"""Figures of the augmentation report: valid PNGs, the same bytes for the same inputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from medcurate.augment.figures import nearest_grid, paired_plot, sample_grid
from medcurate.augment.utility import AUGMENTED, REAL, UtilityResult
from tests.evaluate_helpers import blob_slices

PNG = b"\x89PNG\r\n\x1a\n"


def _pixels(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data.startswith(PNG)
    return imread(io.BytesIO(data), format="png")


def _pairs(n: int, seed: int) -> np.ndarray:
    s = blob_slices(n, size=32, seed=seed)
    return np.concatenate([s.images, s.masks.astype(np.float32)], axis=1)


def _utility() -> UtilityResult:
    runs = pd.DataFrame(
        {
            "seed": [0, 0, 1, 1, 2, 2],
            "arm": [REAL, AUGMENTED] * 3,
            "auc": [0.78, 0.84, 0.81, 0.80, 0.75, 0.83],
        }
    )
    paired = pd.DataFrame(
        [
            {"attribute": "overall", "group": "overall", "metric": "auc", "real": 0.78,
             "augmented": 0.823, "difference": 0.043, "low": -0.02, "high": 0.11, "p_holm": 0.41},
        ]
    )  # fmt: skip
    return UtilityResult(runs, pd.DataFrame(), paired, pd.DataFrame(), (0, 1, 2), 500)


def test_sample_grid_draws_two_labelled_rows_deterministically(tmp_path: Path) -> None:
    real, synth = _pairs(8, 1), _pairs(6, 2)
    first = sample_grid(real, synth, tmp_path / "a.png", n=8, title="Real vs synthetic")
    again = sample_grid(real, synth, tmp_path / "b.png", n=8, title="Real vs synthetic")
    assert first.read_bytes() == again.read_bytes()
    px = _pixels(first)
    assert px.shape[1] > px.shape[0] > 200  # eight columns, two rows
    # the mask outline is red; without a mask channel there is none
    red = (px[..., 0] > 0.7) & (px[..., 1] < 0.4) & (px[..., 2] < 0.4)
    assert red.sum() > 20
    plain = _pixels(sample_grid(real[:, :1], synth[:, :1], tmp_path / "c.png"))
    assert ((plain[..., 0] > 0.7) & (plain[..., 1] < 0.4) & (plain[..., 2] < 0.4)).sum() == 0
    with pytest.raises(ValueError, match="N, 1, S, S"):
        sample_grid(real[:, 0, 0], synth, tmp_path / "d.png")


def test_nearest_grid_pairs_each_sample_with_its_caption(tmp_path: Path) -> None:
    synth, near = _pairs(5, 3), _pairs(5, 4)
    captions = [f"NCC 0.{70 + k}, patient P00{k:02d}" for k in range(5)]
    out = nearest_grid(synth, near, captions, tmp_path / "n.png")
    px = _pixels(out)
    assert px.shape[1] > px.shape[0]  # four pairs to a row, two rows
    assert out.read_bytes() == nearest_grid(synth, near, captions, tmp_path / "m.png").read_bytes()
    changed = nearest_grid(synth, near, [*captions[:4], "NCC 0.99"], tmp_path / "o.png")
    assert changed.read_bytes() != out.read_bytes()
    with pytest.raises(ValueError, match="one of each"):
        nearest_grid(synth, near, captions[:3], tmp_path / "p.png")


def test_paired_plot_is_a_deterministic_png(tmp_path: Path) -> None:
    u = _utility()
    out = paired_plot(u, tmp_path / "paired.png")
    assert out.read_bytes() == paired_plot(u, tmp_path / "again.png").read_bytes()
    px = _pixels(out)
    assert px.shape[0] > 300 and px.shape[1] > 300
