"""2D slices of a release's volumes, the unit the baseline models train on.

A sample (one volume) becomes its axial slices resized to ``size`` x ``size``. A slice's label comes
from the lesion mask (1: lesion voxels in the slice, 0: none); a normal sample's slices are 0; an
abnormal sample without a mask has slices of unknown label (-1), kept for its sample-level score but
left out of slice-level training. Sample-level scores are pooled from slice scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

UNKNOWN = -1
#: threads reading volumes (the demo and CI machines have two cores)
READ_WORKERS = 2


@dataclass
class SliceSet:
    """Slices of several samples; ``sample`` indexes the samples table they came from."""

    images: np.ndarray  # (N, 1, S, S) float32, intensity scaled per volume
    masks: np.ndarray  # (N, 1, S, S) uint8 lesion mask (nearest resize), zeros when none
    labels: np.ndarray  # (N,) int8: 1 lesion in slice, 0 none, UNKNOWN
    sample: np.ndarray  # (N,) int64 row of the samples table
    position: np.ndarray  # (N,) int64 slice index within its volume

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> SliceSet:
        """The slices at ``index`` (a boolean mask or integer positions)."""
        return SliceSet(
            self.images[index],
            self.masks[index],
            self.labels[index],
            self.sample[index],
            self.position[index],
        )

    def known(self) -> SliceSet:
        """Slices whose label is known (what slice-level training uses); the set itself (no copy)
        when all are known."""
        known = self.labels != UNKNOWN
        return self if known.all() else self.subset(known)


def _read(path: str) -> np.ndarray:
    """Voxels of a NIfTI file as float32 (x, y, z); a 2D image becomes one slice."""
    import nibabel as nib

    img: Any = nib.load(str(path))
    if len(img.shape) == 3:
        # volumes are released in RAS; reorienting a stray one keeps left-right meaningful
        img = nib.as_closest_canonical(img)
    v = np.asarray(img.dataobj, dtype=np.float32)
    while v.ndim > 3 and v.shape[-1] == 1:
        v = v[..., 0]
    if v.ndim == 2:
        v = v[:, :, None]
    if v.ndim != 3:
        raise ValueError(f"expected a 2D or 3D image, got {v.ndim} dimensions")
    return v


def _read_or_fail(path: Any, i: int, what: str) -> np.ndarray:
    try:
        return _read(str(path))
    except Exception as e:  # nibabel's errors carry the path: keep it out of the message
        raise ValueError(f"sample {i}: its {what} could not be read ({type(e).__name__})") from None


def _scale(v: np.ndarray) -> np.ndarray:
    """Intensities to 0..1 by the volume's 1st-99th percentiles (robust to outliers and to the
    scanner's units)."""
    lo, hi = np.percentile(v, [1, 99])
    if hi <= lo:
        return np.zeros_like(v, dtype=np.float32)
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _resize(slices: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(z, x, y) -> (z, size, size); bilinear for intensities, nearest for masks."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))[:, None]
    if t.shape[-2:] == (size, size):
        return slices.astype(np.float32)
    if mode == "nearest":
        out = F.interpolate(t, size=(size, size), mode="nearest")
    else:
        out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return np.asarray(out[:, 0].numpy(), dtype=np.float32)


def _empty(size: int) -> SliceSet:
    return SliceSet(
        np.zeros((0, 1, size, size), np.float32),
        np.zeros((0, 1, size, size), np.uint8),
        np.zeros(0, np.int8),
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
    )


def _item_slices(i: int, item: Mapping[str, Any], size: int) -> SliceSet:
    v = _read_or_fail(item["image"], i, "image")
    z = v.shape[2]
    imgs = _resize(np.transpose(_scale(v), (2, 0, 1)), size, "bilinear")
    if item.get("label"):
        m = _read_or_fail(item["label"], i, "mask")
        if m.shape != v.shape:
            raise ValueError(f"sample {i}: mask shape {m.shape} differs from image shape {v.shape}")
        m_z = np.transpose(m > 0, (2, 0, 1))
        masks = (_resize(m_z.astype(np.float32), size, "nearest") > 0.5).astype(np.uint8)
        labels = np.asarray(m_z.reshape(z, -1).any(axis=1), dtype=np.int8)
    else:
        masks = np.zeros((z, size, size), np.uint8)
        normal = str(item.get("class", "")) == "normal"
        labels = np.full(z, 0 if normal else UNKNOWN, np.int8)
    return SliceSet(
        imgs[:, None].astype(np.float32),
        masks[:, None],
        labels,
        np.full(z, i, np.int64),
        np.arange(z, dtype=np.int64),
    )


def allocate(n: int, size: int) -> SliceSet:
    """An empty-valued slice set of ``n`` slices, to be filled in place with :func:`put`."""
    return SliceSet(
        np.empty((n, 1, size, size), np.float32),
        np.empty((n, 1, size, size), np.uint8),
        np.empty(n, np.int8),
        np.empty(n, np.int64),
        np.empty(n, np.int64),
    )


def put(out: SliceSet, start: int, part: SliceSet, sample: int | None = None) -> int:
    """Copy ``part`` into ``out`` from row ``start`` (``sample`` overrides its sample index);
    returns the row after it. Filling one preallocated set keeps the peak at the result's size,
    where concatenating parts holds every part and the result at once."""
    end = start + len(part)
    for dst, src in zip(_fields(out), _fields(part), strict=True):
        dst[start:end] = src
    if sample is not None:
        out.sample[start:end] = sample
    return end


def depth(item: Mapping[str, Any]) -> int:
    """How many slices :func:`slices_from_volumes` makes of ``item``, from its image's header
    alone (no voxels read): the axis that becomes z after reorientation to RAS."""
    import nibabel as nib

    img: Any = nib.load(str(item["image"]))
    shape = tuple(int(d) for d in img.shape)
    if len(shape) == 3:
        ornt = nib.orientations.io_orientation(img.affine)
        return shape[int(np.flatnonzero(ornt[:, 0] == 2)[0])]
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return 1 if len(shape) == 2 else shape[2] if len(shape) == 3 else 0


def slices_from_volumes(
    items: Sequence[Mapping[str, Any]], size: int = 64, workers: int = READ_WORKERS
) -> SliceSet:
    """Axial slices of MONAI data dicts (``image``, optional ``label`` mask, ``class``), as
    :meth:`medcurate.datasets.Dataset.data_dicts` returns them; ``sample`` is the item's index.

    Slice labels: with a mask, 1 where the slice has lesion voxels else 0; a ``normal`` sample
    without a mask, 0; anything else (abnormal without a mask, unlabelled) UNKNOWN, so it still
    gets a sample score but never trains the slice classifier.

    Volumes are read by ``workers`` threads (gzip inflation, percentiles and resizing release
    the GIL, so two threads use both cores of a small machine); the result is in item order and
    the same whatever ``workers`` is. The result is sized from the headers first and each
    volume's slices are written into it as it is read, so at most ``workers`` volumes' slices
    exist besides the result (no concatenation copy).
    """
    if not items:
        return _empty(size)
    counts = [_depth_or_fail(i, item) for i, item in enumerate(items)]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    out = allocate(int(starts[-1]), size)

    def fill(i: int) -> None:
        part = _item_slices(i, items[i], size)
        if len(part) != counts[i]:
            raise ValueError(f"sample {i}: {len(part)} slices read, its header says {counts[i]}")
        put(out, int(starts[i]), part)

    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(fill, range(len(items))))
    else:
        for i in range(len(items)):
            fill(i)
    return out


def _depth_or_fail(i: int, item: Mapping[str, Any]) -> int:
    try:
        return depth(item)
    except Exception as e:  # nibabel's errors carry the path: keep it out of the message
        raise ValueError(f"sample {i}: its image could not be read ({type(e).__name__})") from None


def concat_slices(parts: Sequence[SliceSet]) -> SliceSet:
    """The slice sets one after the other (``sample`` as they are), filled into one set."""
    if not parts:
        raise ValueError("no slice sets to join")
    n = sum(len(p) for p in parts)
    out = SliceSet(*(np.empty((n, *a.shape[1:]), a.dtype) for a in _fields(parts[0])))
    start = 0
    for p in parts:
        start = put(out, start, p)
    return out


def _fields(s: SliceSet) -> tuple[np.ndarray, ...]:
    return (s.images, s.masks, s.labels, s.sample, s.position)


def sample_scores(
    slice_scores: np.ndarray, sample: np.ndarray, n_samples: int, pool: str = "max"
) -> np.ndarray:
    """One score per sample from its slices' scores: ``max`` (a lesion anywhere makes the sample
    abnormal) or ``top3mean`` (less swayed by one noisy slice). NaN for a sample without slices."""
    if pool not in ("max", "top3mean"):
        raise ValueError(f"unknown pool {pool!r}: use 'max' or 'top3mean'")
    s = np.asarray(slice_scores, dtype=np.float64)
    idx = np.asarray(sample, dtype=np.int64)
    if s.shape != idx.shape:
        raise ValueError("slice_scores and sample must have the same length")
    out = np.full(n_samples, np.nan)
    for k in np.unique(idx):
        vals = np.sort(s[idx == k])[::-1]
        out[k] = vals[0] if pool == "max" else vals[:3].mean()
    return out


def thin(slices: SliceSet, per_sample: int) -> SliceSet:
    """At most ``per_sample`` slices of each sample without a lesion, evenly spaced, plus every
    lesion slice: training sees each volume's range and all its lesions at a fraction of the cost
    (a 100-slice volume is mostly neighbours that teach the same thing)."""
    if per_sample <= 0:
        return slices
    keep = np.zeros(len(slices), bool)
    for s in np.unique(slices.sample):
        on = np.flatnonzero(slices.sample == s)
        keep[on] = thin_rows(slices.labels[on], per_sample)
    return slices if keep.all() else slices.subset(keep)


def thin_rows(labels: np.ndarray, per_sample: int) -> np.ndarray:
    """Which of one sample's slices (its ``labels`` in slice order) :func:`thin` keeps; a sample
    is thinned alone, so its slices can be thinned before the others are read."""
    keep = np.asarray(labels) == 1
    if per_sample <= 0:
        return np.ones(len(keep), bool)
    rest = np.flatnonzero(~keep)
    if len(rest) <= per_sample:
        keep[rest] = True
    else:
        keep[rest[np.linspace(0, len(rest) - 1, per_sample).round().astype(int)]] = True
    return keep


def save_slices(sets: Mapping[str, SliceSet], path: Any) -> None:
    """Several named slice sets in one uncompressed ``.npz``, written atomically (a cache: the
    same volumes and size give the same arrays, so later stages need not read them again)."""
    import io
    from pathlib import Path

    from medcurate.io import atomic_write_bytes

    arrays: dict[str, Any] = {
        f"{name}.{f}": a
        for name, s in sets.items()
        for f, a in zip(_FIELDS, _fields(s), strict=True)
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(Path(path), buf.getvalue())


def load_slices(path: Any) -> dict[str, SliceSet]:
    """The slice sets :func:`save_slices` wrote, by name."""
    with np.load(path) as data:
        names = sorted({k.rsplit(".", 1)[0] for k in data.files})
        return {n: SliceSet(*(data[f"{n}.{f}"] for f in _FIELDS)) for n in names}


_FIELDS = ("images", "masks", "labels", "sample", "position")
