"""The MONAI chain for one assembled volume: load, reorient to RAS, resample, normalize, save.

Loading takes the slices one file at a time in the order assembly chose: MONAI's
``PydicomReader`` series path sorts by InstanceNumber and measures spacing on z only, which is
wrong for sagittal, oblique or reverse-numbered stacks. The arrays and the in-plane affine are
those ``PydicomReader(swap_ij=True, affine_lps_to_ras=True)`` gives for a single slice, computed
the same way here (bit for bit: tests compare them with the reader), without the reader itself:
its ``get_data`` builds a JSON dict of the whole dataset, pixels included, which cost more than
the rest of a slice's work. The slice axis is the measured step between slice positions (so a
gantry tilt gives a sheared affine rather than a silently wrong one).

Each file's header is parsed once, by assembly. Where it recorded a :class:`PixelLayout` (an
uncompressed little-endian grey frame), the pixels are read as bytes at their offset and decoded
as pydicom's decoder would (dtype, unused high bits, rescale, MONOCHROME1). The first slice of
every series is read whole and decoded both ways (the cross-check, about a millisecond a series);
if they differ the series falls back to ``pixel_array`` for every slice, as does any file without
a layout (compressed, big endian, colour...).

Saving is :func:`medcurate.io.write_nifti` (nibabel and gzip with mtime 0, not MONAI's SaveImage),
so the same input gives the same bytes. MONAI is imported inside functions: it costs seconds at
import.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medcurate.normalize.assembly import (
    KIND_PROJECTION,
    PixelLayout,
    VolumePlan,
    slice_step_lps,
)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_GEOM_TOL_MM = 1e-3
_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
# PydicomReader(swap_ij=True): the affine's first two columns trade places.
_SWAP_IJ = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


@dataclass
class Loaded:
    """A volume as read: array (i along rows' direction, j down columns, k slices) and affine."""

    array: np.ndarray
    affine: np.ndarray  # RAS, 4x4
    header: Any = field(default=None, repr=False)  # the first slice's dataset (display tags)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def load_plan(plan: VolumePlan) -> Loaded:
    """Read the plan's slices and stack them with the assembled affine.

    The first file is read whole (its pixels through ``pixel_array``, its affine, its display
    tags); the others, where assembly recorded their :class:`PixelLayout` and it decodes like the
    first one's, are read as bytes at that offset; any other file is read whole too.
    """
    import pydicom

    slices: list[np.ndarray] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings may quote header values
        header = pydicom.dcmread(plan.first.path)
        first_affine = reader_affine(header)
        slices.append(_slice_from_dataset(header))
        verified = plan.first.pixels
        if verified is not None and not _identical(
            _layout_slice(plan.first.path, verified), slices[0]
        ):
            verified = None  # the byte path would not give what pixel_array gives
        for inst in plan.instances[1:]:
            arr = None
            layout = inst.pixels
            if verified is not None and layout is not None and layout.decoding == verified.decoding:
                arr = _layout_slice(inst.path, layout)
            if arr is None:
                arr = _slice_from_dataset(pydicom.dcmread(inst.path))
            slices.append(arr)
    if plan.kind == KIND_PROJECTION:
        ps = plan.first.pixel_spacing or (1.0, 1.0)
        # No patient geometry: a detector grid, columns along i, rows along j.
        affine = np.diag([float(ps[1]), float(ps[0]), 1.0, 1.0])
        return Loaded(slices[0][:, :, None], affine, header)
    affine = first_affine.copy()
    _check_in_plane(plan, affine)
    affine[:3, 2] = _LPS_TO_RAS[:3, :3] @ slice_step_lps(plan)
    volume = np.stack(slices, axis=-1)
    return Loaded(volume, affine, header)


def _slice_from_dataset(ds: Any) -> np.ndarray:
    """One slice as PydicomReader decodes it, MONOCHROME1 turned the MONOCHROME2 way."""
    arr = _frame(ds)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        arr = float(arr.max() + arr.min()) - arr  # brighter means denser, as MONOCHROME2
    return arr


def _identical(a: np.ndarray | None, b: np.ndarray) -> bool:
    return (
        a is not None and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    )


def _layout_slice(path: str, layout: PixelLayout) -> np.ndarray | None:
    """:func:`_slice_from_layout`, or None when the bytes cannot be read as the layout says."""
    try:
        return _slice_from_layout(path, layout)
    except Exception:  # a file changed since its header was read: pydicom reads it whole
        return None


def _slice_from_layout(path: str, layout: PixelLayout) -> np.ndarray:
    """:func:`_slice_from_dataset` from the frame's bytes alone (same arithmetic: pydicom's
    DS values are float64 scalars, so the rescale runs in float64 before the float32 cast)."""
    count = layout.rows * layout.cols
    arr = np.fromfile(path, dtype=np.dtype(layout.dtype), count=count, offset=layout.offset)
    if arr.size != count:
        raise ValueError("pixel data shorter than its header says")
    arr = arr.reshape(layout.rows, layout.cols)
    if layout.shift:
        np.left_shift(arr, layout.shift, out=arr)
        np.right_shift(arr, layout.shift, out=arr)
    out: np.ndarray = arr
    if layout.rescale is not None:
        slope, intercept = (np.float64(v) for v in layout.rescale)
        out = arr.astype(np.float32) * slope + intercept
    out = np.ascontiguousarray(np.swapaxes(np.asarray(out, dtype=np.float32), 0, 1))
    if layout.monochrome1:
        out = float(out.max() + out.min()) - out
    return out


def _numbers(ds: Any, keyword: str) -> list[float]:
    """A multi-valued numeric element as floats, as PydicomReader's JSON dict holds it."""
    elem = ds[keyword]
    if elem.is_empty:
        raise ValueError(f"{keyword} is empty")
    return [float(v) for v in (elem.value if elem.VM > 1 else [elem.value])]


def reader_affine(ds: Any) -> np.ndarray:
    """The RAS affine ``PydicomReader(swap_ij=True, affine_lps_to_ras=True).get_data`` gives one
    slice, by the same arithmetic (MONAI 1.6 ``_get_affine``): identity (then swapped) without
    orientation or position; non-finite values raise."""
    affine: np.ndarray = np.eye(4)
    if "ImageOrientationPatient" in ds and "ImagePositionPatient" in ds:
        rx, ry, rz, cx, cy, cz = _numbers(ds, "ImageOrientationPatient")
        sx, sy, sz = _numbers(ds, "ImagePositionPatient")
        spacing = _numbers(ds, "PixelSpacing") if "PixelSpacing" in ds else [1.0, 1.0]
        if not np.isfinite((rx, ry, rz, cx, cy, cz, sx, sy, sz, *spacing)).all():
            raise ValueError("non-finite orientation, position or spacing")
        dr, dc = spacing[:2]
        affine[0, 0] = cx * dr
        affine[0, 1] = rx * dc
        affine[0, 3] = sx
        affine[1, 0] = cy * dr
        affine[1, 1] = ry * dc
        affine[1, 3] = sy
        affine[2, 0] = cz * dr
        affine[2, 1] = rz * dc
        affine[2, 2] = 1.0
        affine[2, 3] = sz
        affine = np.diag([-1, -1, 1, 1]).astype(affine.dtype) @ affine  # LPS -> RAS
    return affine @ _SWAP_IJ


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
    """The first file's in-plane affine, read again with its pixels, must agree with the header
    assembly read (a file changed in between, or PixelSpacing missing where assembly fell back
    to ImagerPixelSpacing, fails the series)."""
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
    a = np.array(array, dtype=np.float64).ravel()  # our own copy: the percentiles reorder it
    out = {
        "intensity_min": float(a.min()),
        "intensity_max": float(a.max()),
        "intensity_mean": float(a.mean()),
        "intensity_std": float(a.std()),
    }
    p01, p99 = np.percentile(a, [1.0, 99.0], overwrite_input=True)  # last: sums see a in order
    return {**out, "p01": float(p01), "p99": float(p99)}
