"""Volumes -> windowed 8-bit PNG slices for Label Studio, and masks back into the volume.

Label Studio shows 2D images only, so a volume is rendered as axial slices. The pixel/voxel
mapping is fixed and explicit so that a brush mask drawn on a PNG lands on exactly the voxels it
covered: PNG row ``r``, column ``c`` of slice ``k`` is voxel ``(i, j, k) = (c, r, k)`` of the
array as nibabel loads it (``png = volume[:, :, k].T``). Label maps are written with the
reference volume's affine and header, so they share its geometry voxel for voxel.

Which slices: every ``every``-th slice plus each slice holding a candidate finding (from the
model's proposal), so small lesions between the regular slices are not skipped.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from annotation.tasks import check_sample_id
from medcurate.io import NIBABEL_GZIP_OS, atomic_write_bytes, nifti_geometry, write_nifti


@dataclass(frozen=True)
class Window:
    """A display window (centre and width, in the volume's units, e.g. HU)."""

    center: float
    width: float

    @property
    def low(self) -> float:
        return self.center - self.width / 2

    @property
    def high(self) -> float:
        return self.center + self.width / 2


CT_SOFT_TISSUE = Window(40.0, 400.0)


def auto_window(
    volume: NDArray[np.generic], low_pct: float = 1.0, high_pct: float = 99.0
) -> Window:
    """A window from the whole volume's percentiles (MR, CR): the same for every slice."""
    lo, hi = np.percentile(np.asarray(volume, dtype=np.float64), [low_pct, high_pct])
    width = float(hi - lo) if hi > lo else 1.0
    return Window(float(lo) + width / 2, width)


def window_to_uint8(pixels: NDArray[np.generic], window: Window) -> NDArray[np.uint8]:
    """Map values through the window to 0..255 (clipped, rounded half to even)."""
    x = (np.asarray(pixels, dtype=np.float64) - window.low) / window.width * 255.0
    return np.rint(np.clip(x, 0.0, 255.0)).astype(np.uint8)


def slice_pixels(volume: NDArray[np.generic], k: int) -> NDArray[np.generic]:
    """The 2D image of slice ``k``: rows are ``j``, columns are ``i``."""
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D, got shape {volume.shape}")
    return np.asarray(volume[:, :, k]).T


def pixel_to_voxel(row: int, col: int, k: int) -> tuple[int, int, int]:
    return (col, row, k)


def voxel_to_pixel(i: int, j: int, k: int) -> tuple[int, int, int]:
    """(row, col, k) of the PNG pixel showing voxel (i, j, k)."""
    return (j, i, k)


def candidate_slices(candidates: NDArray[np.generic]) -> list[int]:
    """Slices (k) where a 3D candidate mask has any voxel."""
    return [
        int(k)
        for k in np.flatnonzero(np.asarray(candidates).reshape(-1, candidates.shape[2]).any(axis=0))
    ]


def select_slices(n_slices: int, every: int, candidates: Iterable[int] = ()) -> list[int]:
    """Every ``every``-th slice (centred, so both ends are covered alike) plus candidate slices."""
    if n_slices <= 0:
        return []
    if every < 1:
        raise ValueError("every must be >= 1")
    start = (n_slices - 1) % every // 2
    chosen = set(range(start, n_slices, every))
    chosen.update(int(k) for k in candidates if 0 <= int(k) < n_slices)
    return sorted(chosen)


def png_bytes(image: NDArray[np.uint8]) -> bytes:
    """A grayscale PNG; no timestamps or text chunks, so the bytes are deterministic."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class RenderedSlice:
    """One PNG written for Label Studio; ``relpath`` is relative to the local-files root."""

    sample_id: str
    k: int
    relpath: str
    height: int
    width: int


def render_volume(
    volume: NDArray[np.generic],
    sample_id: str,
    root: Path,
    rel_dir: str,
    slices: Iterable[int],
    window: Window,
) -> list[RenderedSlice]:
    """Write ``root/rel_dir/<sample_id>_k<k>.png`` per slice; names carry the pseudonym only."""
    check_sample_id(sample_id)
    out_dir = root / rel_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = []
    for k in slices:
        image = window_to_uint8(slice_pixels(volume, k), window)
        name = f"{sample_id}_k{k:04d}.png"
        data = png_bytes(image)
        target = out_dir / name
        if not target.exists() or target.read_bytes() != data:
            atomic_write_bytes(target, data)
        rel = f"{rel_dir.strip('/')}/{name}" if rel_dir.strip("/") else name
        rendered.append(RenderedSlice(sample_id, int(k), rel, image.shape[0], image.shape[1]))
    return rendered


def masks_to_volume(
    slice_masks: Mapping[int, NDArray[np.generic]], shape: tuple[int, int, int]
) -> NDArray[np.uint8]:
    """Put 2D PNG-space masks back into a 3D label map of the volume's shape (1 = lesion)."""
    label = np.zeros(shape, dtype=np.uint8)
    for k, mask in slice_masks.items():
        if mask.shape != (shape[1], shape[0]):
            raise ValueError(
                f"mask of slice {k} has shape {mask.shape}, expected {(shape[1], shape[0])}"
            )
        label[:, :, k] = (np.asarray(mask) != 0).T
    return label


def volume_mask_slice(label: NDArray[np.generic], k: int) -> NDArray[np.bool_]:
    """The PNG-space mask of slice ``k`` of a 3D label map (inverse of :func:`masks_to_volume`)."""
    return np.asarray(slice_pixels(label, k)) != 0


def write_label_nifti(label: NDArray[np.generic], reference: Path, out: Path) -> Path:
    """Write a uint8 label map in the reference volume's exact geometry (its affine as sform and
    qform, scanner codes, mm), deterministically and atomically.

    These files reach releases (consensus masks), so their bytes are pinned: they are exactly
    what ``nib.save`` wrote for the same image before the project had one NIfTI writer (the
    gzip header's OS byte included, :data:`medcurate.io.NIBABEL_GZIP_OS`), for every reference
    that normalization writes (codes 1, mm).
    """
    shape, affine = nifti_geometry(reference)
    if tuple(shape[:3]) != tuple(label.shape):
        raise ValueError(f"label shape {label.shape} differs from volume shape {shape[:3]}")
    write_nifti(out, np.asarray(label, dtype=np.uint8), affine, dtype="uint8",
                gzip_os=NIBABEL_GZIP_OS)  # fmt: skip
    return out
