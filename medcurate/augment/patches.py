"""The GAN's training data: 2-channel patches (image, lesion mask) cut from train volumes only.

The generator must never see a validation or test voxel (its samples are released into train, and
anything it memorised from a held-out patient would leak into evaluation), so the row filter
:func:`training_rows` and the guard in :func:`extract_patches` both refuse anything but real train
rows. Lesion patches are centred on the lesion (so the generated mask sits in the middle and can be
pasted by its centre); normal patches come from inside the body (air teaches the GAN nothing).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from medcurate.io import read_nifti

TRAIN = "train"
NORMAL, ABNORMAL = "normal", "abnormal"
LESION_CLASS, NORMAL_CLASS = 1, 0
#: CT volumes are normalized to [0, 1]: air sits near 0, so 0.05 separates body from air.
BODY_THRESHOLD = 0.05
#: threads reading volumes (the demo and CI machines have two cores)
READ_WORKERS = 2


@dataclass
class PatchSet:
    """Patches (N, 2, P, P) float32: channel 0 the image in [0, 1], channel 1 the mask (0/1);
    labels 1 for lesion-centred, 0 for normal tissue; where each came from (patient, sample,
    axial slice index) so privacy checks can compare patient by patient."""

    images: np.ndarray
    labels: np.ndarray
    patients: np.ndarray
    sample_ids: np.ndarray
    positions: np.ndarray
    #: sample ids that gave no patch (no lesion voxel, or no body region the patch fits in)
    skipped: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: Any) -> PatchSet:
        """The patches at ``idx`` (indices or a boolean mask), in that order."""
        return PatchSet(
            images=self.images[idx],
            labels=self.labels[idx],
            patients=self.patients[idx],
            sample_ids=self.sample_ids[idx],
            positions=self.positions[idx],
            skipped=self.skipped,
        )

    @classmethod
    def empty(cls, size: int, skipped: Sequence[str] = ()) -> PatchSet:
        return cls(
            images=np.zeros((0, 2, size, size), dtype=np.float32),
            labels=np.zeros(0, dtype=np.int64),
            patients=np.zeros(0, dtype=object),
            sample_ids=np.zeros(0, dtype=object),
            positions=np.zeros(0, dtype=np.int64),
            skipped=tuple(skipped),
        )


# --------------------------------------------------------------------------- rows


def _real(df: pd.DataFrame) -> pd.Series:
    if "synthetic" not in df.columns:
        return pd.Series(True, index=df.index)
    return ~df["synthetic"].astype(object).where(df["synthetic"].notna(), False).astype(bool)


def _has_mask(df: pd.DataFrame) -> pd.Series:
    if "mask_path" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["mask_path"].notna() & df["mask_path"].astype(str).ne("")


def training_rows(splits: pd.DataFrame, modality: str = "CT") -> pd.DataFrame:
    """The rows a GAN may learn from: train split, real (not synthetic), ``modality``, labelled
    normal, or abnormal with a lesion mask. Sorted by sample_id (the patches' order)."""
    missing = {"sample_id", "patient", "split", "label", "modality", "nifti_path"} - set(
        splits.columns
    )
    if missing:
        raise ValueError(f"the splits table lacks columns {sorted(missing)}; run the splits first")
    keep = (
        splits["split"].eq(TRAIN)
        & _real(splits)
        & splits["modality"].eq(modality)
        & (splits["label"].eq(NORMAL) | (splits["label"].eq(ABNORMAL) & _has_mask(splits)))
    )
    out = splits.loc[keep].sort_values("sample_id", kind="stable")
    return out.reset_index(drop=True)


def check_training_rows(rows: pd.DataFrame, labels: Sequence[str] = (NORMAL, ABNORMAL)) -> None:
    """Refuse rows a generator must not see: outside train (when a ``split`` column says so),
    synthetic, or with a label other than ``labels``."""
    if "split" in rows.columns and not rows["split"].eq(TRAIN).all():
        n = int((~rows["split"].eq(TRAIN)).sum())
        raise ValueError(
            f"{n} row(s) are not in the train split; generators learn from train rows only "
            "(filter with medcurate.augment.patches.training_rows)"
        )
    if not _real(rows).all():
        raise ValueError("synthetic rows cannot feed a generator; filter with training_rows")
    bad = sorted(set(rows["label"].astype(str)) - set(labels))
    if bad:
        raise ValueError(f"rows labelled {bad} cannot be used here (only {list(labels)})")


# --------------------------------------------------------------------------- intensities


#: CT's soft-tissue window (level 40, width 400 HU) on normalize's 0..1 scale of -1000..1000 HU:
#: lesions differ from their organ by 20-50 HU, 1-2% of the full range but 5-12% of this window,
#: which is what a generator can learn from a hundred patches.
CT_SOFT_TISSUE = (0.42, 0.62)


def intensity_window(
    volume: np.ndarray, modality: str, ct_window: tuple[float, float] = (0.0, 1.0)
) -> tuple[float, float]:
    """(lo, hi) with ``(x - lo) / (hi - lo)`` mapping the volume onto [0, 1]: CT (already 0..1
    for -1000..1000 HU) by ``ct_window`` (default the whole range; the augmentation stages use
    :data:`CT_SOFT_TISSUE`); other modalities (z-scored MR) by their 1st-99th percentiles."""
    if str(modality).upper() == "CT":
        return ct_window
    finite = volume[np.isfinite(volume)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [1.0, 99.0]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def to_unit(volume: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``volume`` mapped by (lo, hi) onto [0, 1] and clipped, float32 (NaN -> 0)."""
    out = (np.asarray(volume, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0).astype(np.float32, copy=False)


def as_3d(array: np.ndarray) -> np.ndarray:
    """(X, Y) or (X, Y, Z[, 1...]) as (X, Y, Z): 2D projections have one axial slice."""
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim > 3 and all(n == 1 for n in array.shape[3:]):
        return array.reshape(array.shape[:3])
    if array.ndim != 3:
        raise ValueError(f"expected a 2D or 3D volume, got {array.ndim} dimensions")
    return array


# --------------------------------------------------------------------------- windows


def window_start(centre: int, dim: int, size: int) -> int:
    """First index of a ``size`` window centred at ``centre``, shifted to lie inside ``dim``
    (when the axis is shorter than the window, the window is centred over it: negative)."""
    if dim >= size:
        return int(np.clip(centre - size // 2, 0, dim - size))
    return -((size - dim) // 2)


def crop(array: np.ndarray, centre: tuple[int, int], size: int, fill: float) -> np.ndarray:
    """The ``size`` x ``size`` window of a 2D array centred at ``centre`` (clamped inside it);
    where the array is smaller than the window, the rest is ``fill``."""
    out = np.full((size, size), fill, dtype=array.dtype)
    src, dst = [], []
    for axis in range(2):
        dim = array.shape[axis]
        s = window_start(centre[axis], dim, size)
        lo, hi = max(s, 0), min(s + size, dim)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[dst[0], dst[1]] = array[src[0], src[1]]
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean 2D mask (ties: the first in scan order)."""
    labelled, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return labelled > 0
    sizes = np.bincount(labelled.ravel())[1:]
    return labelled == int(np.argmax(sizes)) + 1


def body_fraction(body: np.ndarray, size: int) -> np.ndarray:
    """Per pixel, the fraction of a ``size`` window centred there that is body (zero outside)."""
    return ndimage.uniform_filter(body.astype(np.float32), size=size, mode="constant", cval=0.0)


def fitting_centres(shape: tuple[int, ...], size: int) -> np.ndarray:
    """Boolean map of centres whose (unclamped) ``size`` window lies inside ``shape``."""
    ok = np.zeros(shape[:2], dtype=bool)
    h = size // 2
    ok[h : shape[0] - size + h + 1, h : shape[1] - size + h + 1] = True
    return ok


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """A generator per (seed, sample): a sample's patches do not change when others are added."""
    key = int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, key])


# --------------------------------------------------------------------------- patches


def _lesion_patches(
    image: np.ndarray, mask: np.ndarray, size: int, n: int
) -> list[tuple[np.ndarray, int]]:
    slices = np.flatnonzero(mask.any(axis=(0, 1)))
    if slices.size == 0 or n <= 0:
        return []
    picks = np.unique(np.linspace(0, slices.size - 1, min(n, slices.size)).round().astype(int))
    out = []
    for z in slices[picks]:
        lesion = largest_component(mask[:, :, z])
        ci, cj = (round(float(c)) for c in ndimage.center_of_mass(lesion))
        img, m = image[:, :, z], mask[:, :, z].astype(np.float32)
        patch = np.stack([crop(img, (ci, cj), size, float(img.min())), crop(m, (ci, cj), size, 0)])
        out.append((patch, int(z)))
    return out


def _normal_patches(
    image: np.ndarray,
    size: int,
    n: int,
    rng: np.random.Generator,
    body_threshold: float,
    min_body_fraction: float,
) -> list[tuple[np.ndarray, int]]:
    """Seeded slice draws among slices with enough body, a distinct seeded centre per draw
    (a full body-fraction map per slice would cost a filter of the whole volume)."""
    body = image > body_threshold
    need = min_body_fraction * min(size, image.shape[0]) * min(size, image.shape[1])
    eligible = [int(z) for z in np.flatnonzero(body.sum(axis=(0, 1)) >= max(need, 1))]
    fits = fitting_centres(image.shape, size)
    small = not fits.any()  # slice smaller than the patch: any body pixel, the crop pads
    out: list[tuple[np.ndarray, int]] = []
    cache: dict[int, np.ndarray] = {}
    while len(out) < n and eligible:
        z = eligible[int(rng.integers(len(eligible)))]
        if z not in cache:
            ok = body[:, :, z]
            if not small:
                ok = ok & fits & (body_fraction(ok, size) >= min_body_fraction)
            cache[z] = np.flatnonzero(ok)
        cands = cache[z]
        if cands.size == 0:
            eligible.remove(z)
            continue
        k = int(rng.integers(cands.size))
        ci, cj = np.unravel_index(int(cands[k]), image.shape[:2])
        cache[z] = np.delete(cands, k)
        img = image[:, :, z]
        patch = np.stack(
            [crop(img, (int(ci), int(cj)), size, float(img.min())), np.zeros((size, size))]
        )
        out.append((patch.astype(np.float32), z))
    return out


def _read_pair(
    rec: dict[str, Any],
    volumes_root: str | Path,
    labels_root: str | Path,
    ct_window: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray | None]:
    """A row's image on [0, 1] and, for an abnormal row with a mask, its boolean mask."""
    raw = as_3d(read_nifti(Path(volumes_root) / str(rec["nifti_path"]))[0])
    image = to_unit(raw, *intensity_window(raw, str(rec.get("modality", "")), ct_window))
    mask_rel = rec.get("mask_path")
    if rec["label"] != ABNORMAL or mask_rel is None or pd.isna(mask_rel):
        return image, None
    return image, as_3d(read_nifti(Path(labels_root) / str(mask_rel), dtype=np.float32)[0]) > 0


def _prefetch(
    records: list[dict[str, Any]],
    volumes_root: str | Path,
    labels_root: str | Path,
    ct_window: tuple[float, float],
    workers: int = READ_WORKERS,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The rows' (image, mask) in order, read by ``workers`` threads (gzip inflation releases
    the GIL) at most ``2 * workers`` volumes ahead, so memory does not grow with the cohort."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ahead: deque[Future[tuple[np.ndarray, np.ndarray | None]]] = deque()
        for rec in records:
            ahead.append(pool.submit(_read_pair, rec, volumes_root, labels_root, ct_window))
            if len(ahead) > 2 * workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def extract_patches(
    rows: pd.DataFrame,
    volumes_root: str | Path,
    labels_root: str | Path,
    size: int = 32,
    lesion_slices_per_sample: int = 8,
    normal_per_sample: int = 8,
    seed: int = 0,
    body_threshold: float = BODY_THRESHOLD,
    min_body_fraction: float = 0.8,
    ct_window: tuple[float, float] = (0.0, 1.0),
) -> PatchSet:
    """Patches of train rows (see :func:`training_rows`; anything else is refused).

    Abnormal rows: up to ``lesion_slices_per_sample`` axial slices with lesion voxels, evenly
    spread, each a crop centred on the centroid of the slice's largest lesion component (clamped
    inside the slice, padded with the slice's minimum when the slice is smaller than the patch).
    Normal rows: ``normal_per_sample`` crops at seeded random body points (``> body_threshold``
    after intensity mapping) whose window is at least ``min_body_fraction`` body. Image channel in
    [0, 1] (:func:`intensity_window`). Same rows, files and seed: same patches.
    """
    check_training_rows(rows)
    images: list[np.ndarray] = []
    labels: list[int] = []
    patients: list[str] = []
    sample_ids: list[str] = []
    positions: list[int] = []
    skipped: list[str] = []
    ordered = rows.sort_values("sample_id", kind="stable").to_dict("records")
    records = [{str(k): v for k, v in r.items()} for r in ordered]
    for rec, (image, mask) in zip(
        records, _prefetch(records, volumes_root, labels_root, ct_window), strict=True
    ):
        sid = str(rec["sample_id"])
        if rec["label"] == ABNORMAL:
            if mask is None:
                raise ValueError(f"abnormal sample {sid} has no mask; filter with training_rows")
            if mask.shape != image.shape:
                raise ValueError(
                    f"sample {sid}: mask grid {mask.shape} differs from volume grid {image.shape}; "
                    "re-run consensus on the normalized volume"
                )
            got = _lesion_patches(image, mask, size, lesion_slices_per_sample)
            cls = LESION_CLASS
        else:
            rng = sample_rng(seed, sid)
            got = _normal_patches(
                image, size, normal_per_sample, rng, body_threshold, min_body_fraction
            )
            cls = NORMAL_CLASS
        if not got:
            skipped.append(sid)
        for patch, z in got:
            images.append(patch.astype(np.float32))
            labels.append(cls)
            patients.append(str(rec["patient"]))
            sample_ids.append(sid)
            positions.append(z)
    if not images:
        return PatchSet.empty(size, skipped)
    return PatchSet(
        images=np.clip(np.stack(images), 0.0, 1.0).astype(np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        patients=np.asarray(patients, dtype=object),
        sample_ids=np.asarray(sample_ids, dtype=object),
        positions=np.asarray(positions, dtype=np.int64),
        skipped=tuple(skipped),
    )


def dihedral(ps: PatchSet) -> PatchSet:
    """The patches in all 8 rotations and reflections (labels, patients and ids repeated): a
    lesion has no preferred orientation in a patch, and a GAN given a hundred patches collapses
    onto a few without it."""
    views = []
    for flip in (False, True):
        base = ps.images[..., ::-1] if flip else ps.images
        for k in range(4):
            views.append(np.rot90(base, k, axes=(2, 3)))
    n = len(views)
    return PatchSet(
        np.ascontiguousarray(np.concatenate(views)).astype(np.float32),
        np.tile(ps.labels, n),
        np.tile(ps.patients, n),
        np.tile(ps.sample_ids, n),
        np.tile(ps.positions, n),
        ps.skipped,
    )
