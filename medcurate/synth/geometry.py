"""Where each voxel of a generated series sits in the patient, in DICOM's LPS millimetres.

One :class:`SeriesGeometry` drives both the DICOM attributes (ImagePositionPatient per slice,
ImageOrientationPatient, PixelSpacing) and the ground-truth NIfTI affine, so the two cannot drift.

Conventions (the same as MONAI's ``PydicomReader``, so its output lines up voxel for voxel):

* pixel ``(row r, column c)`` of the slice with InstanceNumber ``k + 1`` lies at
  ``IPP_k + c * PixelSpacing[1] * row_dir + r * PixelSpacing[0] * col_dir``, where ``row_dir``
  is the first triplet of ImageOrientationPatient (along a row) and ``col_dir`` the second;
* ``IPP_k = IPP_0 + k * step``: ``step`` is ``+/- SpacingBetweenSlices`` times the slice normal
  ``row_dir x col_dir``; a negative sign is a series stored in reversed slice order;
* truth masks are arrays indexed ``[c, r, k]`` with the affine ``diag(-1, -1, 1, 1) @ A_lps``
  (RAS, as NIfTI and nibabel expect), ``A_lps = [row_dir*dc | col_dir*dr | step | IPP_0]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class SeriesGeometry:
    """A stack of parallel, equally spaced slices (or one projection image when ``slices == 1``)."""

    rows: int
    cols: int
    slices: int
    row_spacing: float  # PixelSpacing[0]: between rows, along col_dir
    col_spacing: float  # PixelSpacing[1]: between columns, along row_dir
    slice_spacing: float  # SpacingBetweenSlices (positive)
    row_dir: tuple[float, float, float]
    col_dir: tuple[float, float, float]
    origin: tuple[float, float, float]  # IPP of the first slice (InstanceNumber 1)
    reversed_order: bool = False  # slices advance against the normal

    @property
    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.row_dir), np.asarray(self.col_dir))

    @property
    def step(self) -> np.ndarray:
        sign = -1.0 if self.reversed_order else 1.0
        return sign * self.slice_spacing * self.normal

    @property
    def orientation(self) -> list[float]:
        """ImageOrientationPatient."""
        return [*self.row_dir, *self.col_dir]

    def position(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice ``k`` (0-based, InstanceNumber ``k + 1``)."""
        return np.asarray(self.origin) + k * self.step

    def affine_lps(self) -> np.ndarray:
        a = np.eye(4)
        a[:3, 0] = np.asarray(self.row_dir) * self.col_spacing
        a[:3, 1] = np.asarray(self.col_dir) * self.row_spacing
        a[:3, 2] = self.step
        a[:3, 3] = self.origin
        return a

    def affine_ras(self) -> np.ndarray:
        """The NIfTI affine of an array indexed ``[c, r, k]``."""
        return LPS_TO_RAS @ self.affine_lps()

    def voxel_centers(self) -> np.ndarray:
        """LPS coordinates of every voxel, shaped ``(slices, rows, cols, 3)`` (float32)."""
        k = np.arange(self.slices, dtype=np.float32)[:, None, None, None]
        r = np.arange(self.rows, dtype=np.float32)[None, :, None, None]
        c = np.arange(self.cols, dtype=np.float32)[None, None, :, None]
        o = np.asarray(self.origin, dtype=np.float32)
        rd = np.asarray(self.row_dir, dtype=np.float32) * np.float32(self.col_spacing)
        cd = np.asarray(self.col_dir, dtype=np.float32) * np.float32(self.row_spacing)
        st = self.step.astype(np.float32)
        return o + c * rd + r * cd + k * st

    def lps_to_index(self, point: np.ndarray) -> np.ndarray:
        """Continuous ``(c, r, k)`` index of an LPS point."""
        inv = np.linalg.inv(self.affine_lps())
        return (inv @ np.append(np.asarray(point, dtype=float), 1.0))[:3]


def centered(
    center: np.ndarray,
    row_dir: tuple[float, float, float],
    col_dir: tuple[float, float, float],
    rows: int,
    cols: int,
    slices: int,
    row_spacing: float,
    col_spacing: float,
    slice_spacing: float,
    reversed_order: bool = False,
) -> SeriesGeometry:
    """A geometry whose block of voxels is centred on ``center`` (LPS mm)."""
    rd, cd = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(rd, cd)
    sign = -1.0 if reversed_order else 1.0
    half = (
        rd * col_spacing * (cols - 1) / 2
        + cd * row_spacing * (rows - 1) / 2
        + sign * normal * slice_spacing * (slices - 1) / 2
    )
    origin = np.round(np.asarray(center, float) - half, 3)
    return SeriesGeometry(
        rows=rows,
        cols=cols,
        slices=slices,
        row_spacing=row_spacing,
        col_spacing=col_spacing,
        slice_spacing=slice_spacing,
        row_dir=tuple(float(v) for v in rd),  # type: ignore[arg-type]
        col_dir=tuple(float(v) for v in cd),  # type: ignore[arg-type]
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        reversed_order=reversed_order,
    )
