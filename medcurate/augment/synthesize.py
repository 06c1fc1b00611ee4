"""Synthetic abnormal samples: a generated lesion (image and mask) pasted into a normal train slice.

The GAN makes 2-channel patches (image, soft lesion mask). Only the lesion itself is pasted, with
a soft edge inside the mask, into a soft-tissue point of a real normal slice from the train split;
everything outside the lesion keeps the background's exact voxels, so the mask written beside the
image is exactly the region that changed. Each synthetic sample is one axial slice (X, Y, 1) with
the background volume's affine moved to that slice, so it overlays its source in any viewer.

Synthetic rows follow the samples table contract (``medcurate.store.manifest.SAMPLE_COLUMNS``):
``patient`` is ``SYN-<generator_id>`` (no real patient: the patient-level leak check must not tie
them to one), while modality, manufacturer, site, sex and age are the background's: the anatomy,
scanner and intensities a model sees in a synthetic sample are the background's, so subgroup
reports (by site, sex, age band, manufacturer) count it where its pixels come from.
``background_sample_id``/``background_slice`` keep the provenance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage

from medcurate.augment.patches import (
    BODY_THRESHOLD,
    NORMAL,
    as_3d,
    body_fraction,
    check_training_rows,
    fitting_centres,
    intensity_window,
    largest_component,
    to_unit,
    window_start,
)
from medcurate.io import read_nifti, write_nifti
from medcurate.store.manifest import SAMPLE_COLUMNS

#: Columns copied from the background's row into a synthetic one.
INHERITED = ("modality", "manufacturer", "site", "sex", "age_years", "transform_config_hash")
EXTRA_COLUMNS = ("background_sample_id", "background_slice")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Background:
    """One normal train slice: ``image`` in the volume's own units, ``(lo, hi)`` mapping them to
    [0, 1] (:func:`medcurate.augment.patches.intensity_window`), the volume's affine, and the
    row's fields a synthetic sample inherits. With ``image=None`` the slice is read from
    ``source`` when it is used: a cohort's candidate slices are many (four per normal train
    volume), the pasted ones at most the synthetic samples wanted, so memory stays flat."""

    sample_id: str
    slice_index: int
    image: np.ndarray | None
    affine: np.ndarray
    lo: float = 0.0
    hi: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def pixels(self) -> np.ndarray:
        """The slice in the volume's own units (read from ``source`` when not held)."""
        if self.image is not None:
            return self.image
        if self.source is None:
            raise ValueError(f"background {self.sample_id} slice {self.slice_index} has no pixels")
        raw, _ = read_nifti(self.source)
        return np.asarray(as_3d(raw)[:, :, self.slice_index], dtype=np.float32)

    def unit(self, pixels: np.ndarray | None = None) -> np.ndarray:
        """The slice on the [0, 1] scale of the patches."""
        return to_unit(self.pixels() if pixels is None else pixels, self.lo, self.hi)


class Synthesized(NamedTuple):
    rows: pd.DataFrame
    skipped_empty: int


def background_slices(
    rows_normal: pd.DataFrame,
    volumes_root: str | Path,
    per_sample: int = 4,
    body_threshold: float = BODY_THRESHOLD,
    min_body_fraction: float = 0.3,
    ct_window: tuple[float, float] = (0.0, 1.0),
) -> list[Background]:
    """Up to ``per_sample`` axial slices per normal train row, evenly spread over the slices at
    least ``min_body_fraction`` body, in sample_id order. Anything but real, normal train rows
    is refused: a lesion pasted on an abnormal slice would sit beside an unmasked real one."""
    check_training_rows(rows_normal, labels=(NORMAL,))
    out: list[Background] = []
    for rec in rows_normal.sort_values("sample_id", kind="stable").to_dict("records"):
        raw, affine = read_nifti(Path(volumes_root) / str(rec["nifti_path"]))
        raw = as_3d(raw)
        lo, hi = intensity_window(raw, str(rec.get("modality", "")), ct_window)
        body = to_unit(raw, lo, hi) > body_threshold
        ok = np.flatnonzero(body.mean(axis=(0, 1)) >= min_body_fraction)
        if ok.size == 0 or per_sample <= 0:
            continue
        picks = np.unique(np.linspace(0, ok.size - 1, min(per_sample, ok.size)).round().astype(int))
        meta = {c: rec.get(c) for c in INHERITED}
        source = Path(volumes_root) / str(rec["nifti_path"])
        for z in ok[picks]:
            out.append(
                Background(
                    sample_id=str(rec["sample_id"]),
                    slice_index=int(z),
                    image=None,  # read again when pasted into (see Background)
                    source=source,
                    affine=np.asarray(affine, dtype=np.float64),
                    lo=lo,
                    hi=hi,
                    meta=meta,
                )
            )
    return out


def lesion_alpha(mask: np.ndarray, feather: float) -> np.ndarray:
    """Blending weight of a boolean lesion mask: 0 outside, 0.5 on its edge pixels rising
    linearly to 1 at ``feather`` pixels inside (the edge is at half contrast, as a blurred edge
    would be; 0 outside keeps every background voxel outside the mask exact)."""
    if feather <= 0:
        return mask.astype(np.float64)
    depth = ndimage.distance_transform_edt(mask)
    return np.where(mask, np.clip(0.5 + 0.5 * (depth - 1.0) / feather, 0.0, 1.0), 0.0)


def paste(
    background: np.ndarray, patch: np.ndarray, centre: tuple[int, int], feather: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Paste the lesion of a (2, P, P) patch into a (X, Y) slice, the patch window centred at
    ``centre`` (shifted inside the slice at its borders). Only the largest component of
    ``patch[1] > 0.5`` is pasted: ``image = bg * (1 - alpha) + patch[0] * alpha`` with alpha
    :func:`lesion_alpha`. Returns the full-size image (float32) and mask (uint8)."""
    bg = np.asarray(background, dtype=np.float32)
    if bg.ndim != 2 or patch.ndim != 3 or patch.shape[0] != 2 or patch.shape[1] != patch.shape[2]:
        raise ValueError(
            f"paste needs a 2D background and a (2, P, P) patch, got {bg.shape} and {patch.shape}"
        )
    size = patch.shape[1]
    lesion = largest_component(patch[1] > 0.5)
    alpha = lesion_alpha(lesion, feather)
    image, mask = bg.copy(), np.zeros(bg.shape, dtype=np.uint8)
    src, dst = [], []
    for axis in range(2):
        dim = bg.shape[axis]
        s = window_start(int(centre[axis]), dim, size)
        lo, hi = max(s, 0), min(s + size, dim)
        dst.append(slice(lo, hi))
        src.append(slice(lo - s, hi - s))
    a = alpha[src[0], src[1]]
    window = bg[dst[0], dst[1]].astype(np.float64)
    blended = window * (1.0 - a) + patch[0][src[0], src[1]].astype(np.float64) * a
    image[dst[0], dst[1]] = np.where(a > 0, blended, window).astype(np.float32)
    mask[dst[0], dst[1]] = lesion[src[0], src[1]]
    return image, mask


def choose_centre(
    background: np.ndarray,
    size: int,
    rng: np.random.Generator,
    body_threshold: float = BODY_THRESHOLD,
    min_body_fraction: float = 0.9,
    soft_quantiles: tuple[float, float] = (0.1, 0.9),
) -> tuple[int, int]:
    """A centre in a [0, 1] slice where a lesion looks plausible: body (``> body_threshold``),
    the whole ``size`` window inside the slice and at least ``min_body_fraction`` body, and the
    pixel soft-tissue-like: between the ``soft_quantiles`` of the body's intensities (not air,
    fat edges or the brightest bone). Falls back to any body pixel whose window fits, then to
    the slice centre. Same slice and rng state: same point."""
    img = np.asarray(background, dtype=np.float32)
    body = img > body_threshold
    fits = fitting_centres(img.shape, size)
    if not fits.any():
        fits[:] = True
    options = []
    if body.any():
        lo, hi = np.quantile(img[body], soft_quantiles)
        soft = body & (img >= lo) & (img <= hi)
        options.append(soft & fits & (body_fraction(body, size) >= min_body_fraction))
        options.append(body & fits)
    for ok in options:
        cands = np.flatnonzero(ok)
        if cands.size:
            i, j = np.unravel_index(int(cands[int(rng.integers(cands.size))]), img.shape)
            return int(i), int(j)
    return img.shape[0] // 2, img.shape[1] // 2


def slice_affine(affine: np.ndarray, k: int) -> np.ndarray:
    """The affine of axial slice ``k`` as a one-slice volume: ``affine @ translation(0, 0, k)``."""
    shift = np.eye(4)
    shift[2, 3] = k
    return np.asarray(affine, dtype=np.float64) @ shift


def _dims(values: Any) -> str:
    """``48x48x1`` / ``0.8x0.8x2.5``: the samples table's form of shapes and spacings."""
    return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def write_synthetic(
    patches: np.ndarray,
    backgrounds: list[Background],
    out_root: str | Path,
    generator_id: str,
    seed: int,
    feather: float = 2.0,
) -> Synthesized:
    """Paste each generated patch into a background slice and write image and mask.

    Backgrounds are taken round robin in a seeded order; each patch's centre comes from a
    generator seeded by (seed, patch index). Writes ``out_root/samples/<id>.nii.gz`` (float32,
    (X, Y, 1)) and ``out_root/masks/<id>.nii.gz`` (uint8), ids ``syn-<generator_id>-<k:04d>``
    with k the patch index. Patches whose mask is empty after thresholding at 0.5 are skipped
    and counted. Returns the rows (SAMPLE_COLUMNS, then background_sample_id and
    background_slice; paths relative to ``out_root``) and that count. Same inputs and seed:
    same bytes."""
    if not _SAFE_ID.match(generator_id):
        raise ValueError(
            f"generator_id {generator_id!r} must be letters, digits, '.', '_' or '-' "
            "(it names files)"
        )
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[1] != 2:
        raise ValueError(f"patches must have shape (n, 2, P, P), got {patches.shape}")
    if len(patches) and not backgrounds:
        raise ValueError("no background slices to paste into; pass normal train slices")
    root = Path(out_root)
    order = np.random.default_rng(seed).permutation(len(backgrounds))
    rows: list[dict[str, Any]] = []
    skipped = 0
    for k, patch in enumerate(patches):
        if not (patch[1] > 0.5).any():
            skipped += 1
            continue
        bg = backgrounds[int(order[k % len(backgrounds)])]
        pixels = bg.pixels()
        centre = choose_centre(bg.unit(pixels), patch.shape[1], np.random.default_rng([seed, k]))
        lesion = np.stack([bg.lo + patch[0].astype(np.float64) * (bg.hi - bg.lo), patch[1]])
        image, mask = paste(pixels, lesion, centre, feather)
        sid = f"syn-{generator_id}-{k:04d}"
        affine = slice_affine(bg.affine, bg.slice_index)
        img_rel, mask_rel = f"samples/{sid}.nii.gz", f"masks/{sid}.nii.gz"
        sha = write_nifti(root / img_rel, image[:, :, None], affine, dtype="float32")
        write_nifti(root / mask_rel, mask[:, :, None], affine, dtype="uint8")
        spacing = [round(float(v), 6) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))]
        row: dict[str, Any] = {c: None for c in SAMPLE_COLUMNS}
        row.update({c: bg.meta.get(c) for c in INHERITED})
        row.update(
            sample_id=sid,
            patient=f"SYN-{generator_id}",
            label="abnormal",
            out_shape=_dims([int(image.shape[0]), int(image.shape[1]), 1]),
            out_spacing=_dims(spacing),
            nifti_path=img_rel,
            nifti_sha256=sha,
            mask_path=mask_rel,
            source_round=None,
            agreement=None,
            synthetic=True,
            generator_id=generator_id,
            background_sample_id=bg.sample_id,
            background_slice=bg.slice_index,
        )
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*SAMPLE_COLUMNS, *EXTRA_COLUMNS])
    df["synthetic"] = df["synthetic"].astype(bool)
    return Synthesized(df, skipped)
