"""Generated cohorts for the evaluation tests: blob "lesions" on smooth noisy tissue.

``blob_volumes`` writes NIfTI volumes and masks and returns data dicts shaped like
``Dataset.data_dicts()`` plus the demographic columns the subgroup reports need; ``blob_slices``
builds a SliceSet in memory for fast unit tests. A site can be given its own appearance (a
bright stripe and an intensity offset) so a test can make the site learnable, e.g. to plant a
shortcut. Everything is deterministic in ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from medcurate.evaluate.cohort import SliceSet
from medcurate.io import sha256_file
from medcurate.splits import SplitConfig, assign_splits
from medcurate.store.manifest import curate_samples
from medcurate.store.objects import ObjectStore
from medcurate.store.release import release_dataset

SITES = ("site-a", "site-b", "site-c")
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


def tissue(shape: tuple[int, ...], rng: np.random.Generator, specks: float = 0.03) -> np.ndarray:
    """An elliptic body of smooth, noisy soft tissue on a dark background (values about 0..1)."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[:2]], indexing="ij")
    body = (grid[0] / 0.85) ** 2 + (grid[1] / 0.7) ** 2 <= 1.0
    body = np.broadcast_to(body[..., None] if len(shape) == 3 else body, shape)
    texture = ndi.gaussian_filter(rng.normal(0, 1, shape), sigma=2.0)
    texture /= texture.std() + 1e-8
    v = np.where(body, 0.45 + 0.06 * texture, 0.05)
    # bright specks (calcifications, vessels) in 3% of the body set the top percentile, so
    # per-volume 1-99% scaling does not change with whether a lesion is present (without them
    # a lesion brightens nothing but darkens its whole volume: a volume-wide shortcut)
    v = np.where(body & (rng.random(shape) < specks), 0.95, v)
    return (v + rng.normal(0, 0.03, shape)).astype(np.float32)


def add_blobs(
    v: np.ndarray, rng: np.random.Generator, count: int, contrast: float = 0.3
) -> np.ndarray:
    """Add ``count`` bright ellipsoids inside the body of ``v`` (in place); returns their mask."""
    shape = v.shape
    mask = np.zeros(shape, np.uint8)
    coords = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    for _ in range(count):
        centre = [rng.uniform(0.3 * n, 0.7 * n) for n in shape[:2]]
        radii = [rng.uniform(0.07, 0.11) * n for n in shape[:2]]
        if len(shape) == 3:
            centre.append(rng.uniform(0.25 * shape[2], 0.75 * shape[2]))
            radii.append(max(1.0, rng.uniform(0.2, 0.3) * shape[2]))
        r2 = sum(((c - c0) / r) ** 2 for c, c0, r in zip(coords, centre, radii, strict=True))
        blob = r2 <= 1.0
        v[blob] += contrast * (1.0 - 0.3 * r2[blob])
        mask[blob] = 1
    return mask


def _site(i: int, site_of: Sequence[str] | Callable[[int], str] | None) -> str:
    if site_of is None:
        return SITES[i % len(SITES)]
    if callable(site_of):
        return str(site_of(i))
    return str(site_of[i])


def blob_volumes(
    root: str | Path,
    n_samples: int,
    size: tuple[int, ...] = (48, 48, 12),
    seed: int = 0,
    prevalence: float = 0.5,
    site_of: Sequence[str] | Callable[[int], str] | None = None,
    bright_site: str | None = None,
    contrast: float = 0.3,
    window: tuple[float, float] = (0.0, 1.0),
) -> list[dict[str, Any]]:
    """Write ``n_samples`` volumes (RAS, 1.5 x 1.5 x 2 mm) under ``root``; abnormal ones get one or
    two bright ellipsoid lesions and a mask. Returns data dicts (``image``, ``label`` for abnormal,
    ``class``, ``sample_id``, ``fold``) with ``patient``, ``site``, ``sex``, ``age_years``.

    The first ``round(prevalence * n)`` samples after a seeded shuffle are abnormal, so the count
    is exact. ``site_of`` gives each sample's site (a sequence or a function of the index; default
    cycles three sites); images of ``bright_site`` carry a bright stripe and an offset. Values
    are mapped from 0..1 onto ``window`` (a CT soft-tissue window puts them where real CT's
    soft tissue lies on normalize's 0..1 scale).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_abn = round(prevalence * n_samples)
    abnormal = np.zeros(n_samples, bool)
    abnormal[rng.permutation(n_samples)[:n_abn]] = True
    items = []
    for i in range(n_samples):
        r = np.random.default_rng([seed, i])
        v = tissue(size, r)
        site = _site(i, site_of)
        d: dict[str, Any] = {}
        if abnormal[i]:
            mask = add_blobs(v, r, int(r.integers(1, 3)), contrast)
            d_mask = root / f"s{i:04d}_mask.nii.gz"
            nib.save(nib.Nifti1Image(mask, AFFINE), str(d_mask))
        if site == bright_site:
            v += 0.1
            v[: max(1, size[0] // 12)] += 0.5  # a stripe along the patient's right edge
        img_path = root / f"s{i:04d}.nii.gz"
        v = window[0] + v * (window[1] - window[0])  # e.g. into CT's soft-tissue window
        nib.save(nib.Nifti1Image(v.astype(np.float32), AFFINE), str(img_path))
        d["image"] = str(img_path)
        if abnormal[i]:
            d["label"] = str(d_mask)
        d["class"] = "abnormal" if abnormal[i] else "normal"
        d["sample_id"] = f"s{i:04d}"
        d["fold"] = -1
        d["patient"] = f"p{i // 2:04d}"  # two samples per patient
        d["site"] = site
        d["sex"] = "F" if r.random() < 0.5 else "M"
        d["age_years"] = float(np.round(r.uniform(20, 85), 1))
        items.append(d)
    return items


def blob_slices(n: int, size: int = 32, seed: int = 0, contrast: float = 0.3) -> SliceSet:
    """``n`` independent 2D slices in memory, about half with one lesion (label 1), scaled 0..1
    like :func:`medcurate.evaluate.cohort.slices_from_volumes` scales them."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, size, size), np.float32)
    masks = np.zeros((n, 1, size, size), np.uint8)
    labels = (rng.random(n) < 0.5).astype(np.int8)
    for i in range(n):
        v = tissue((size, size), rng, specks=0.0)  # scaled per slice: nothing to steady
        if labels[i]:
            masks[i, 0] = add_blobs(v, rng, 1, contrast)
        lo, hi = np.percentile(v, [1, 99])
        images[i, 0] = np.clip((v - lo) / (hi - lo), 0, 1)
    return SliceSet(
        images, masks, labels, np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    )


def release_blobs(
    root: Path, store: ObjectStore, n: int = 72, bright_site: str | None = None
) -> None:
    """Blob volumes released as ``blobs@v1`` (patient-level splits, as the pipeline makes them)."""
    items = blob_volumes(root, n, size=(32, 32, 8), seed=3, bright_site=bright_site)
    vols = pd.DataFrame(
        {
            "sample_id": d["sample_id"],
            "patient": d["patient"],
            "study_uid": f"2.25.{i}",
            "series_uid": f"2.25.{i}.1",
            "modality": "CT",
            "manufacturer": ["ACME", "Other"][i % 2],
            "site": d["site"],
            "sex": d["sex"],
            "age_years": d["age_years"],
            "out_shape": [32, 32, 8],
            "out_spacing": [1.5, 1.5, 2.0],
            "nifti_path": Path(d["image"]).name,
            "nifti_sha256": sha256_file(d["image"]),
            "transform_config_hash": "cfg1",
        }
        for i, d in enumerate(items)
    )
    labs = pd.DataFrame(
        {
            "sample_id": d["sample_id"],
            "label": d["class"],
            "mask_path": Path(d["label"]).name if "label" in d else None,
            "source_round": "round-1",
            "agreement": 0.9,
        }
        for d in items
    )
    assigned = assign_splits(curate_samples(vols, labs), SplitConfig(folds=2, seed=0))
    release_dataset(store, "blobs", assigned, root, root)
