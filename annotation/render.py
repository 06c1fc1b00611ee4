"""Volumes -> windowed 8-bit PNG slices for Label Studio, and masks back into the volume.

Label Studio shows 2D images only, so a volume is rendered as slices of one plane, in the
radiological convention annotators read every day: axial and coronal slices show the patient's
right on the image's left; axial slices have anterior up, coronal and sagittal slices superior
up, and sagittal slices anterior on the image's left. Nothing is burned into the pixels: the
orientation travels as text in the task data (:func:`orientation_data`).

The pixel/voxel mapping is exact and explicit so that a brush mask drawn on a PNG lands on exactly
the voxels it covered. A :class:`SliceMapping` is derived from the volume's affine (nibabel's
axis codes, so a flipped or permuted volume is shown the same way as a RAS one) and is recorded
with every slice as text (:meth:`SliceMapping.describe`, parsed back by :meth:`SliceMapping.parse`).
For a normalized (RAS) volume of shape ``(ni, nj, nk)``, axial slice ``s``::

    png[row, col] = volume[ni - 1 - col, nj - 1 - row, s]

Label maps are written with the reference volume's affine and header, so they share its geometry
voxel for voxel.

Which slices: every ``every``-th slice plus each slice holding a candidate finding (from the
model's proposal), so small lesions between the regular slices are not skipped.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------- orientation

PLANES = ("axial", "coronal", "sagittal")
PROJECTION = "projection"
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
# per plane: (the direction the slices are stacked along, the direction at the image's top,
# the direction at the image's left) -- the radiological convention
_LAYOUT = {
    "axial": ("S", "A", "R"),
    "coronal": ("A", "S", "R"),
    "sagittal": ("R", "S", "A"),
}
_AXIS_NAMES = ("i", "j", "k")
_MAPPING_RE = re.compile(
    r"^(?P<plane>[a-z]+) (?P<codes>[A-Z?]{3}): png\(row, col\) of slice s = voxel "
    r"\(i=[^,]+, j=[^,]+, k=[^)]+\)"
)
LEGACY_MAPPING_TEXT = "png(row, col) of slice k = voxel (i=col, j=row, k)"


@dataclass(frozen=True)
class SliceMapping:
    """How a 2D slice image relates to the volume's array: which array axis the slices run
    along, which axes are the image's rows and columns, and whether each is reversed.

    ``top``/``left`` name the patient direction at row 0 / column 0 (empty when the volume has
    no patient geometry, e.g. a projection's detector grid).
    """

    plane: str
    axcodes: str
    slice_axis: int
    row_axis: int
    col_axis: int
    row_flip: bool
    col_flip: bool
    top: str = ""
    left: str = ""

    @property
    def bottom(self) -> str:
        return _OPPOSITE.get(self.top, "")

    @property
    def right(self) -> str:
        return _OPPOSITE.get(self.left, "")

    def image_shape(self, shape: Sequence[int]) -> tuple[int, int]:
        """(rows, cols) of a slice image of a volume of ``shape``."""
        return int(shape[self.row_axis]), int(shape[self.col_axis])

    def n_slices(self, shape: Sequence[int]) -> int:
        return int(shape[self.slice_axis])

    def describe(self) -> str:
        """The mapping as one line of text (recorded per slice; :meth:`parse` reads it back)."""
        if self == LEGACY_AXIAL:
            return LEGACY_MAPPING_TEXT
        terms = {self.slice_axis: "s"}
        for axis, var, flip in (
            (self.row_axis, "row", self.row_flip),
            (self.col_axis, "col", self.col_flip),
        ):
            terms[axis] = f"n{_AXIS_NAMES[axis]}-1-{var}" if flip else var
        voxel = ", ".join(f"{_AXIS_NAMES[a]}={terms[a]}" for a in range(3))
        where = f"; row 0 = {self.top}, col 0 = {self.left}" if self.top else ""
        return f"{self.plane} {self.axcodes}: png(row, col) of slice s = voxel ({voxel}){where}"

    @classmethod
    def parse(cls, text: str) -> SliceMapping:
        """The mapping a :meth:`describe` line states (also the one line rounds wrote before
        the radiological convention: transposed, no flips)."""
        if text == LEGACY_MAPPING_TEXT:
            return LEGACY_AXIAL
        m = _MAPPING_RE.match(text)
        if not m:
            raise ValueError(f"not a slice mapping: {text!r}")
        plane, codes = m.group("plane"), m.group("codes")
        found = projection_mapping() if plane == PROJECTION else mapping_for(codes, plane)
        if found.describe() != text:
            raise ValueError(f"slice mapping {text!r} is not one this code writes")
        return found


def _axcodes(orientation: Any) -> tuple[str, str, str]:
    if isinstance(orientation, str):
        codes = tuple(orientation)
    elif isinstance(orientation, np.ndarray) and orientation.shape == (4, 4):
        import nibabel.orientations as nio

        codes = tuple(str(c) for c in nio.aff2axcodes(orientation))
    else:
        codes = tuple(str(c) for c in orientation)
    if len(codes) != 3:
        raise ValueError(f"need three axis codes, got {codes}")
    return codes[0], codes[1], codes[2]


def mapping_for(orientation: Any, plane: str = "axial") -> SliceMapping:
    """The radiological mapping of ``plane`` for a volume with this affine (4x4) or these axis
    codes (``"RAS"``, ``("L", "P", "S")``...): nibabel's ``aff2axcodes``, so any flip or
    permutation of the array axes is shown the same way. Refuses axes that do not point along
    R/L, A/P and S/I once each (e.g. a projection's detector grid or a broken affine)."""
    if plane not in _LAYOUT:
        raise ValueError(f"unknown plane {plane!r}; expected one of {PLANES}")
    codes = _axcodes(orientation)
    pairs = [frozenset((c, _OPPOSITE.get(c, "?"))) for c in codes]
    if any("?" in p for p in pairs) or len(set(pairs)) != 3:
        raise ValueError(
            f"volume axes {''.join(codes)} do not point along R/L, A/P and S/I once each: "
            "cannot orient its slices"
        )

    def axis_of(direction: str) -> int:
        return next(a for a, p in enumerate(pairs) if direction in p)

    stack, top, left = _LAYOUT[plane]
    row_axis, col_axis = axis_of(top), axis_of(left)
    return SliceMapping(
        plane=plane,
        axcodes="".join(codes),
        slice_axis=axis_of(stack),
        row_axis=row_axis,
        col_axis=col_axis,
        # index 0 of a reversed axis shows the voxel at its high end, which lies towards
        # ``codes[axis]``: reverse when that is the direction wanted at the top / on the left
        row_flip=codes[row_axis] == top,
        col_flip=codes[col_axis] == left,
        top=top,
        left=left,
    )


def projection_mapping() -> SliceMapping:
    """A 2D projection (CR/DX: a detector grid, not patient axes) shown as acquired: rows along
    j, columns along i, no patient directions claimed."""
    return SliceMapping(PROJECTION, "???", 2, 1, 0, False, False)


AXIAL_RAS = mapping_for("RAS", "axial")
# what rounds rendered before the radiological convention: png = volume[:, :, k].T
LEGACY_AXIAL = SliceMapping("axial", "RAS", 2, 1, 0, False, False, top="P", left="L")


def orientation_data(mapping: SliceMapping) -> dict[str, str]:
    """Task data naming what the image's sides show (the markers a reader expects; nothing is
    burned into pixels): e.g. ``{"orientation": "R | L  (A up)", "left_side": "R", ...}``."""
    if not mapping.top:
        return {"plane": mapping.plane, "orientation": "detector grid as acquired",
                "left_side": "", "right_side": "", "top": "", "bottom": ""}  # fmt: skip
    return {
        "plane": mapping.plane,
        "orientation": f"{mapping.left} | {mapping.right}  ({mapping.top} up)",
        "left_side": mapping.left,
        "right_side": mapping.right,
        "top": mapping.top,
        "bottom": mapping.bottom,
    }


def _check(shape: Sequence[int], s: int, mapping: SliceMapping) -> None:
    if len(shape) != 3:
        raise ValueError(f"volume must be 3D, got shape {tuple(shape)}")
    n = mapping.n_slices(shape)
    if not 0 <= int(s) < n:
        raise IndexError(f"slice {s} outside 0..{n - 1} of the {mapping.plane} plane")


def slice_pixels(
    volume: NDArray[np.generic], s: int, mapping: SliceMapping = AXIAL_RAS
) -> NDArray[np.generic]:
    """The 2D image of slice ``s``: ``png[row, col] = volume[pixel_to_voxel(row, col, s)]``."""
    volume = np.asarray(volume)
    _check(volume.shape, s, mapping)
    index: list[int | slice] = [slice(None)] * 3
    index[mapping.slice_axis] = int(s)
    plane = volume[tuple(index)]  # a view (masks_to_volume writes through it)
    if mapping.row_axis > mapping.col_axis:  # the remaining axes keep their order
        plane = plane.T
    if mapping.row_flip:
        plane = plane[::-1, :]
    if mapping.col_flip:
        plane = plane[:, ::-1]
    return plane


def pixel_to_voxel(
    row: int, col: int, s: int, shape: Sequence[int], mapping: SliceMapping = AXIAL_RAS
) -> tuple[int, int, int]:
    """Voxel (i, j, k) shown at PNG ``(row, col)`` of slice ``s`` of a volume of ``shape``."""
    _check(shape, s, mapping)
    ijk = [0, 0, 0]
    ijk[mapping.slice_axis] = int(s)
    n_row, n_col = mapping.image_shape(shape)
    ijk[mapping.row_axis] = n_row - 1 - int(row) if mapping.row_flip else int(row)
    ijk[mapping.col_axis] = n_col - 1 - int(col) if mapping.col_flip else int(col)
    return ijk[0], ijk[1], ijk[2]


def voxel_to_pixel(
    i: int, j: int, k: int, shape: Sequence[int], mapping: SliceMapping = AXIAL_RAS
) -> tuple[int, int, int]:
    """(row, col, s) of the PNG pixel showing voxel (i, j, k) (inverse of :func:`pixel_to_voxel`;
    the flips are their own inverses)."""
    ijk = (int(i), int(j), int(k))
    s = ijk[mapping.slice_axis]
    _check(shape, s, mapping)
    n_row, n_col = mapping.image_shape(shape)
    row = n_row - 1 - ijk[mapping.row_axis] if mapping.row_flip else ijk[mapping.row_axis]
    col = n_col - 1 - ijk[mapping.col_axis] if mapping.col_flip else ijk[mapping.col_axis]
    return row, col, s


def candidate_slices(
    candidates: NDArray[np.generic], mapping: SliceMapping = AXIAL_RAS
) -> list[int]:
    """Slices (along the mapping's slice axis) where a 3D candidate mask has any voxel."""
    c = np.moveaxis(np.asarray(candidates), mapping.slice_axis, -1)
    return [int(s) for s in np.flatnonzero(c.reshape(-1, c.shape[-1]).any(axis=0))]


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


# --------------------------------------------------------------------------- context strips

CONTEXT_RADIUS = 2  # neighbours shown on each side of the annotated slice
CONTEXT_TILE = 128  # longest side of one tile, in pixels (at most)
_PAD = 2  # border around each tile; the annotated slice's border is white


def downsample(image: NDArray[np.uint8], factor: int) -> NDArray[np.uint8]:
    """Mean of ``factor`` x ``factor`` blocks (edge-padded), rounded: exact integers, so the same
    image always gives the same bytes."""
    if factor <= 1:
        return np.asarray(image, dtype=np.uint8)
    h, w = image.shape
    H, W = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.pad(np.asarray(image, dtype=np.int64), ((0, H - h), (0, W - w)), mode="edge")
    blocks = padded.reshape(H // factor, factor, W // factor, factor).sum(axis=(1, 3))
    n = factor * factor
    return ((blocks * 2 + n) // (2 * n)).astype(np.uint8)  # round half up, in integers


def context_strip(
    volume: NDArray[np.generic],
    s: int,
    window: Window,
    mapping: SliceMapping = AXIAL_RAS,
    radius: int = CONTEXT_RADIUS,
    tile: int = CONTEXT_TILE,
) -> NDArray[np.uint8]:
    """Slices ``s - radius .. s + radius`` side by side (lower slice index on the left), each
    reduced to at most ``tile`` pixels a side, in the same window and orientation as the
    annotated image; the annotated slice framed in white, slices beyond the volume black.

    So an annotator can follow a structure through neighbouring slices (a vessel runs on, a
    nodule ends) without a 3D viewer.
    """
    shape = np.asarray(volume).shape
    n_row, n_col = mapping.image_shape(shape)
    factor = max(1, math.ceil(max(n_row, n_col) / tile))
    th, tw = -(-n_row // factor), -(-n_col // factor)
    cells = []
    for t in range(int(s) - radius, int(s) + radius + 1):
        cell = np.zeros((th + 2 * _PAD, tw + 2 * _PAD), dtype=np.uint8)
        if t == int(s):
            cell[:, :] = 255
        if 0 <= t < mapping.n_slices(shape):
            img = downsample(window_to_uint8(slice_pixels(volume, t, mapping), window), factor)
        else:
            img = np.zeros((th, tw), dtype=np.uint8)
        cell[_PAD : _PAD + th, _PAD : _PAD + tw] = img
        cells.append(cell)
    return np.concatenate(cells, axis=1)


@dataclass(frozen=True)
class RenderedSlice:
    """One PNG written for Label Studio; ``relpath`` is relative to the local-files root.
    ``context_relpath`` is the slice's neighbour strip (empty when none was written)."""

    sample_id: str
    k: int
    relpath: str
    height: int
    width: int
    context_relpath: str = ""


def _write_png(out_dir: Path, rel_dir: str, name: str, image: NDArray[np.uint8]) -> str:
    data = png_bytes(image)
    target = out_dir / name
    if not target.exists() or target.read_bytes() != data:
        atomic_write_bytes(target, data)
    return f"{rel_dir.strip('/')}/{name}" if rel_dir.strip("/") else name


def render_volume(
    volume: NDArray[np.generic],
    sample_id: str,
    root: Path,
    rel_dir: str,
    slices: Iterable[int],
    window: Window,
    mapping: SliceMapping = AXIAL_RAS,
    context: bool = False,
) -> list[RenderedSlice]:
    """Write ``root/rel_dir/<sample_id>_k<k>.png`` per slice (and ``..._k<k>_context.png``, the
    neighbour strip, when ``context``); names carry the pseudonym only."""
    check_sample_id(sample_id)
    out_dir = root / rel_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = []
    for k in slices:
        image = window_to_uint8(slice_pixels(volume, k, mapping), window)
        rel = _write_png(out_dir, rel_dir, f"{sample_id}_k{k:04d}.png", image)
        ctx = ""
        if context:
            strip = context_strip(volume, k, window, mapping)
            ctx = _write_png(out_dir, rel_dir, f"{sample_id}_k{k:04d}_context.png", strip)
        rendered.append(RenderedSlice(sample_id, int(k), rel, image.shape[0], image.shape[1], ctx))
    return rendered


def masks_to_volume(
    slice_masks: Mapping[int, NDArray[np.generic]],
    shape: tuple[int, int, int],
    mapping: SliceMapping = AXIAL_RAS,
) -> NDArray[np.uint8]:
    """Put 2D PNG-space masks back into a 3D label map of the volume's shape (1 = lesion)."""
    label = np.zeros(shape, dtype=np.uint8)
    expected = mapping.image_shape(shape)
    for s, mask in slice_masks.items():
        if np.shape(mask) != expected:
            raise ValueError(f"mask of slice {s} has shape {np.shape(mask)}, expected {expected}")
        # slice_pixels of the label is a view: writing through it lands on the mapped voxels
        view = slice_pixels(label, s, mapping)
        view[...] = np.asarray(mask) != 0
    return label


def volume_mask_slice(
    label: NDArray[np.generic], s: int, mapping: SliceMapping = AXIAL_RAS
) -> NDArray[np.bool_]:
    """The PNG-space mask of slice ``s`` of a 3D label map (inverse of :func:`masks_to_volume`)."""
    return np.asarray(slice_pixels(label, s, mapping)) != 0


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
