"""The MONAI chain for one assembled volume: load, reorient to RAS, resample, normalize, save.

Loading goes through MONAI's ``PydicomReader`` one file at a time, in the order assembly chose:
the reader's own series path sorts by InstanceNumber and measures spacing on z only, which is
wrong for sagittal, oblique or reverse-numbered stacks. The in-plane axes and origin come from
the reader's affine; the slice axis is the measured step between slice positions (so a gantry
tilt gives a sheared affine rather than a silently wrong one).

Saving is :func:`medcurate.io.write_nifti` (nibabel and gzip with mtime 0, not MONAI's SaveImage),
so the same input gives the same bytes. MONAI is imported inside functions: it costs seconds at
import.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcurate.normalize.assembly import KIND_PROJECTION, VolumePlan, slice_step_lps

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_GEOM_TOL_MM = 1e-3
_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass
class Loaded:
    """A volume as read: array (i along rows' direction, j down columns, k slices) and affine."""

    array: np.ndarray
    affine: np.ndarray  # RAS, 4x4

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def load_plan(plan: VolumePlan) -> Loaded:
    """Read the plan's slices with PydicomReader and stack them with the assembled affine."""
    from monai.data import PydicomReader

    reader = PydicomReader(swap_ij=True, affine_lps_to_ras=True)
    slices: list[np.ndarray] = []
    first_affine: np.ndarray | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # projections have no IOP/IPP: handled below
        for inst in plan.instances:
            ds = reader.read(inst.path)
            arr = _frame(ds)
            if first_affine is None:
                # The reader's get_data builds a JSON dict of the whole dataset (pixels too):
                # once per series for its affine and as a cross-check of our decoding.
                ref, meta = reader.get_data(ds)
                if not np.array_equal(np.asarray(ref, dtype=np.float32), arr):
                    raise ValueError("pixel decoding disagrees with PydicomReader")
                first_affine = np.asarray(meta["affine"], dtype=float)
            if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
                arr = float(arr.max() + arr.min()) - arr  # brighter means denser, as MONOCHROME2
            slices.append(arr)
    assert first_affine is not None
    if plan.kind == KIND_PROJECTION:
        ps = plan.first.pixel_spacing or (1.0, 1.0)
        # No patient geometry: a detector grid, columns along i, rows along j.
        affine = np.diag([float(ps[1]), float(ps[0]), 1.0, 1.0])
        return Loaded(slices[0][:, :, None], affine)
    affine = first_affine.copy()
    _check_in_plane(plan, affine)
    affine[:3, 2] = _LPS_TO_RAS[:3, :3] @ slice_step_lps(plan)
    volume = np.stack(slices, axis=-1)
    return Loaded(volume, affine)


def _frame(ds: Any) -> np.ndarray:
    """One frame as PydicomReader returns it: rescaled float32, axes swapped to (col, row)."""
    arr = ds.pixel_array
    if arr.ndim != 2:
        raise ValueError(f"expected one 2D frame, got shape {arr.shape}")
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        slope = ds.RescaleSlope if "RescaleSlope" in ds else 1.0
        offset = ds.RescaleIntercept if "RescaleIntercept" in ds else 0.0
        arr = arr.astype(np.float32) * slope + offset
    return np.ascontiguousarray(np.swapaxes(np.asarray(arr, dtype=np.float32), 0, 1))


def _check_in_plane(plan: VolumePlan, ras_affine: np.ndarray) -> None:
    """The reader's in-plane affine must agree with the header assembly read (same file)."""
    first = plan.first
    assert first.iop is not None and first.ipp is not None and first.pixel_spacing is not None
    row, col = np.asarray(first.iop[:3]), np.asarray(first.iop[3:])
    dr, dc = first.pixel_spacing
    expected = np.column_stack([row * dc, col * dr, np.asarray(first.ipp)])
    got = _LPS_TO_RAS[:3, :3] @ ras_affine[:3, [0, 1, 3]]
    if not np.allclose(got, expected, atol=_GEOM_TOL_MM):
        raise ValueError("reader affine disagrees with the assembled header geometry")


def run_chain(loaded: Loaded, settings: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Orientation -> Spacing -> intensity, per the modality's settings. Returns (array, affine)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    torch.set_num_threads(1)  # one series per worker; workers are the parallelism
    img: Any = MetaTensor(
        torch.from_numpy(np.ascontiguousarray(loaded.array, dtype=np.float32))[None],
        affine=torch.as_tensor(loaded.affine, dtype=torch.float64),
    )
    is_2d = loaded.array.shape[-1] == 1 and settings.get("spacing") is None
    if not is_2d:
        img = Orientation(axcodes=str(settings.get("orientation", "RAS")), labels=_LABELS)(img)
        spacing = settings.get("spacing")
        if spacing is not None:
            img = Spacing(
                pixdim=tuple(float(v) for v in spacing),
                mode=str(settings.get("interpolation", "bilinear")),
                padding_mode="border",
                dtype=torch.float32,  # type: ignore[arg-type]
            )(img)
    img = _intensity(img, settings.get("intensity") or {})
    array = np.asarray(img.detach().cpu().numpy()[0], dtype=np.float32)
    affine = np.asarray(img.affine.detach().cpu().numpy(), dtype=np.float64)
    return array, affine


def _intensity(img: Any, spec: dict[str, Any]) -> Any:
    from monai.transforms import (
        ClipIntensityPercentiles,
        NormalizeIntensity,
        ScaleIntensity,
        ScaleIntensityRange,
    )

    kind = spec.get("kind", "none")
    if kind == "hu_window":
        return ScaleIntensityRange(
            a_min=float(spec["a_min"]),
            a_max=float(spec["a_max"]),
            b_min=float(spec.get("b_min", 0.0)),
            b_max=float(spec.get("b_max", 1.0)),
            clip=True,
        )(img)
    if kind == "percentile_zscore":
        img = ClipIntensityPercentiles(
            lower=float(spec.get("lower", 0.5)), upper=float(spec.get("upper", 99.5))
        )(img)
        return NormalizeIntensity(nonzero=True)(img)
    if kind == "percentile_minmax":
        img = ClipIntensityPercentiles(
            lower=float(spec.get("lower", 0.5)), upper=float(spec.get("upper", 99.5))
        )(img)
        return ScaleIntensity(minv=0.0, maxv=1.0)(img)
    if kind == "none":
        return img
    raise ValueError(f"unknown intensity kind {kind!r}")


def intensity_stats(array: np.ndarray) -> dict[str, float]:
    a = np.asarray(array, dtype=np.float64).ravel()
    p01, p99 = np.percentile(a, [1.0, 99.0])
    return {
        "intensity_min": float(a.min()),
        "intensity_max": float(a.max()),
        "intensity_mean": float(a.mean()),
        "intensity_std": float(a.std()),
        "p01": float(p01),
        "p99": float(p99),
    }
