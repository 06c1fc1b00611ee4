"""Display windows per modality and body region, in the units the normalized volume stores.

A radiologist reads CT through a fixed window in Hounsfield units (soft tissue, lung, bone), or
the one the series itself names (DICOM WindowCenter/WindowWidth); MR and other modalities have no
absolute units, so their window comes from the volume's own percentiles.

Normalized CT volumes are NOT in HU: normalization maps a HU range to ``b_min..b_max``
(``hu_window`` in ``medcurate/data/normalize.yaml``), so a HU window is converted with that same
intensity spec, read through :func:`medcurate.normalize.config.load_config`. A volume made under
other settings than the current ones (its ``transform_config_hash`` differs), or a CT spec that is
not a linear HU map, falls back to the percentile window rather than show a wrong one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annotation.render import Window, auto_window
from medcurate.normalize.config import NormalizeConfig, load_config

HU = "HU"
STORED = "stored"  # the normalized volume's own units

# name -> window in HU
CT_PRESETS: dict[str, Window] = {
    "ct-soft-tissue": Window(40.0, 400.0),
    "ct-lung": Window(-600.0, 1500.0),
    "ct-bone": Window(400.0, 1800.0),
}
# BodyPartExamined values (upper case) read best through a preset other than soft tissue
BODY_PART_PRESET = {
    "CHEST": "ct-lung",
    "LUNG": "ct-lung",
    "THORAX": "ct-lung",
    "BONE": "ct-bone",
    "SPINE": "ct-bone",
    "CSPINE": "ct-bone",
    "TSPINE": "ct-bone",
    "LSPINE": "ct-bone",
    "PELVIS_BONE": "ct-bone",
    "EXTREMITY": "ct-bone",
}
SERIES = "series"  # the series' own WindowCenter/WindowWidth
PERCENTILE = "percentile"


@dataclass(frozen=True)
class DisplayWindow:
    """A chosen window: its name, centre and width in ``units`` (HU or the stored units), and
    the same window in the stored units, which is what renders the pixels."""

    name: str
    center: float
    width: float
    units: str
    stored: Window

    def task_data(self) -> dict[str, Any]:
        """What the task shows and records: ``{"name", "center", "width", "units"}``."""
        return {
            "name": self.name,
            "center": round(float(self.center), 4),
            "width": round(float(self.width), 4),
            "units": self.units,
        }


def hu_to_stored(window: Window, spec: Mapping[str, Any]) -> Window | None:
    """A HU window in the units a CT intensity spec stores (None when the spec is not a linear
    map of HU): ``hu_window`` maps ``a_min..a_max`` onto ``b_min..b_max``; ``none`` keeps HU."""
    kind = spec.get("kind", "none")
    if kind == "none":
        return window
    if kind != "hu_window":
        return None
    a_min, a_max = float(spec["a_min"]), float(spec["a_max"])
    b_min, b_max = float(spec.get("b_min", 0.0)), float(spec.get("b_max", 1.0))
    if a_max == a_min or b_max == b_min:
        return None
    scale = (b_max - b_min) / (a_max - a_min)
    return Window(b_min + (window.center - a_min) * scale, window.width * abs(scale))


@lru_cache(maxsize=1)
def _default_config() -> NormalizeConfig:
    return load_config()


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def ct_window_hu(row: Mapping[Any, Any]) -> tuple[str, Window]:
    """The HU window of a CT series: its own (WindowCenter/WindowWidth, when present and sane),
    else the preset of its body part, else soft tissue."""
    center, width = _number(row.get("window_center")), _number(row.get("window_width"))
    if center is not None and width is not None and width > 0:
        return SERIES, Window(center, width)
    part = str(row.get("body_part") or "").strip().upper()
    name = BODY_PART_PRESET.get(part, "ct-soft-tissue")
    return name, CT_PRESETS[name]


def choose_window(
    row: Mapping[Any, Any],
    volume: NDArray[np.generic],
    config: NormalizeConfig | None = None,
) -> DisplayWindow:
    """The window one sample's slices are shown in, from its volumes-table row (modality,
    window_center/window_width in HU, body_part, transform_config_hash; missing ones are fine)
    and, for the percentile fallback, its voxels."""
    modality = str(row.get("modality") or "").upper()
    if modality == "CT":
        cfg = config or _default_config()
        made_with = row.get("transform_config_hash")
        same = not isinstance(made_with, str) or not made_with or made_with == cfg.config_hash("CT")
        name, hu = ct_window_hu(row)
        stored = hu_to_stored(hu, cfg.settings("CT").get("intensity") or {}) if same else None
        if stored is not None:
            return DisplayWindow(name, hu.center, hu.width, HU, stored)
    w = auto_window(volume)
    return DisplayWindow(PERCENTILE, w.center, w.width, STORED, w)
