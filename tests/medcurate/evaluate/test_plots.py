from __future__ import annotations

import base64
import math
import struct
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from medcurate.evaluate.metrics import roc_band
from medcurate.evaluate.plots import calibration_plot, forest_plot, png_data_uri, roc_plot
from medcurate.evaluate.subgroups import TABLE_METRICS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    assert data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _scores(n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (np.arange(n) % 2).astype(int)
    return y, 1 / (1 + np.exp(-rng.normal(y * 2.0 - 1.0, 1.0)))


def _table(rows: int, nan_row: int | None = None) -> pd.DataFrame:
    records = []
    for i in range(rows):
        record: dict[str, object] = {
            "attribute": "overall" if i == 0 else "site",
            "group": "overall" if i == 0 else f"site-{i}",
            "n": 10 + i,
        }
        for metric in TABLE_METRICS:
            value = math.nan if i == nan_row else 0.5 + 0.04 * i
            record[metric] = value
            record[f"{metric}_low"] = value - 0.1
            record[f"{metric}_high"] = value + 0.1
        records.append(record)
    return pd.DataFrame(records)


def test_roc_plot_is_a_deterministic_png(tmp_path: Path) -> None:
    y, p = _scores()
    band = roc_band(y, p, n_resamples=200)
    first = roc_plot(band, tmp_path / "a" / "roc.png", "Slice classifier")
    second = roc_plot(band, tmp_path / "roc2.png", "Slice classifier")
    width, height = _png_size(first)
    assert 300 <= width <= 2000 and 300 <= height <= 2000
    assert first.read_bytes() == second.read_bytes()
    assert plt.get_fignums() == []  # no pyplot state left behind


def test_forest_plot_grows_with_rows_and_survives_nan(tmp_path: Path) -> None:
    small = forest_plot(_table(3), tmp_path / "small.png")
    large = forest_plot(_table(12, nan_row=4), tmp_path / "large.png")
    again = forest_plot(_table(12, nan_row=4), tmp_path / "again.png")
    (w_small, h_small), (_, h_large) = _png_size(small), _png_size(large)
    assert h_large > h_small + 200
    assert large.read_bytes() == again.read_bytes()
    one = forest_plot(_table(3), tmp_path / "one.png", metrics=("fnr",))
    w_one, h_one = _png_size(one)
    assert abs(w_small - 320 - w_one) <= 1 and h_one == h_small  # a panel is 3.2 in at 100 dpi


def test_forest_plot_of_an_all_nan_metric(tmp_path: Path) -> None:
    table = _table(3)
    table.loc[:, ["auc", "auc_low", "auc_high"]] = math.nan
    _png_size(forest_plot(table, tmp_path / "nan.png", metrics=("auc", "sensitivity")))


def test_calibration_plot_is_a_deterministic_png(tmp_path: Path) -> None:
    y, p = _scores()
    first = calibration_plot(y, p, tmp_path / "cal.png", bins=8)
    second = calibration_plot(y, p, tmp_path / "cal2.png", bins=8)
    width, height = _png_size(first)
    assert height > width >= 300
    assert first.read_bytes() == second.read_bytes()


def test_png_data_uri_round_trips(tmp_path: Path) -> None:
    y, p = _scores()
    path = calibration_plot(y, p, tmp_path / "cal.png")
    uri = png_data_uri(path)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == path.read_bytes()
