"""Display windows: HU presets and the series' own window converted into the stored units of a
normalized CT volume, percentiles for everything else."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.render import Window, window_to_uint8
from annotation.windows import (
    CT_PRESETS,
    HU,
    PERCENTILE,
    SERIES,
    STORED,
    choose_window,
    hu_to_stored,
)
from medcurate.normalize.config import load_config


def _ct_volume_from_hu(hu: np.ndarray) -> np.ndarray:
    """What normalization stores for these HU (the packaged hu_window spec, -1000..1000 -> 0..1)."""
    return np.clip((hu + 1000.0) / 2000.0, 0.0, 1.0)


def test_presets_and_conversion_into_stored_units() -> None:
    assert CT_PRESETS["ct-soft-tissue"] == Window(40.0, 400.0)
    assert CT_PRESETS["ct-lung"] == Window(-600.0, 1500.0)
    assert CT_PRESETS["ct-bone"] == Window(400.0, 1800.0)
    spec = load_config().settings("CT")["intensity"]
    stored = hu_to_stored(Window(40.0, 400.0), spec)
    assert stored is not None
    assert stored.center == pytest.approx(0.52) and stored.width == pytest.approx(0.2)
    assert hu_to_stored(Window(40.0, 400.0), {"kind": "none"}) == Window(40.0, 400.0)
    assert hu_to_stored(Window(40.0, 400.0), {"kind": "percentile_zscore"}) is None


def test_a_ct_volume_renders_as_its_hu_window_would() -> None:
    """Pixels of the stored volume through the converted window equal the HU through the HU
    window (within the int16 storage error of one grey level)."""
    hu = np.linspace(-1000.0, 1000.0, 401)
    vol = _ct_volume_from_hu(hu)
    for name, w in CT_PRESETS.items():
        dw = choose_window({"modality": "CT", "body_part": "CHEST" if "lung" in name else ""}, vol)
        if name == "ct-bone":
            dw = choose_window({"modality": "CT", "body_part": "SPINE"}, vol)
        assert (dw.name, dw.units, dw.center, dw.width) == (name, HU, w.center, w.width)
        got = window_to_uint8(vol, dw.stored).astype(int)
        want = window_to_uint8(hu, w).astype(int)
        assert np.abs(got - want).max() <= 1


def test_series_window_wins_and_others_use_percentiles() -> None:
    vol = _ct_volume_from_hu(np.linspace(-200, 300, 1000))
    dw = choose_window({"modality": "CT", "window_center": 50.0, "window_width": 350.0,
                        "body_part": "CHEST"}, vol)  # fmt: skip
    assert (dw.name, dw.center, dw.width, dw.units) == (SERIES, 50.0, 350.0, HU)
    assert dw.task_data() == {"name": SERIES, "center": 50.0, "width": 350.0, "units": HU}
    # a missing or broken series window: the body part's preset
    for bad in (None, float("nan"), 0.0):
        dw = choose_window({"modality": "CT", "window_center": 50.0, "window_width": bad}, vol)
        assert dw.name == "ct-soft-tissue"
    mr = np.random.default_rng(0).normal(0, 1, (8, 8, 4))
    dw = choose_window({"modality": "MR", "window_center": 600.0, "window_width": 1200.0}, mr)
    assert (dw.name, dw.units) == (PERCENTILE, STORED)
    lo, hi = np.percentile(mr, [1, 99])
    assert dw.stored.low == pytest.approx(lo) and dw.stored.high == pytest.approx(hi)
    assert choose_window({}, mr).name == PERCENTILE  # no modality known
    # a CT volume made under other normalization settings: its units are unknown
    other = choose_window({"modality": "CT", "transform_config_hash": "0" * 16}, vol)
    assert other.name == PERCENTILE
    same = choose_window(
        {"modality": "CT", "transform_config_hash": load_config().config_hash("CT")}, vol
    )
    assert same.name == "ct-soft-tissue"
