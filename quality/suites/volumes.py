"""The volumes (``volumes/volumes.parquet`` and its NIfTI files, read through ``ctx.zones``).

Table expectations (GX): the contract, one row per ``sample_id``, ``status`` ok, ``modality`` in
the allowed set, ``nifti_sha256`` a sha256. File checks (each NIfTI read once, everything computed
from that read; facts cached in memory by sha256, so a file seen before costs one hash; files read
by up to one thread per CPU; an int16 volume's statistics counted over its 65,536 stored codes
rather than over a float copy of its voxels):

- ``file_exists``, ``sha256_matches``: the file is there and its bytes are the table's;
- ``image_finite``: no NaN or inf voxel (nnU-Net refuses them);
- ``orientation_ras``: the affine's axis codes (``nibabel.aff2axcodes``) are R, A, S;
- ``spacing_in_range``, ``shape_in_range``: per axis, within the modality's configured range;
- ``geometry_matches_table``: the file's shape and spacing are the table's ``out_shape`` and
  ``out_spacing``;
- ``label_geometry_matches``, ``label_values_allowed``: where a sample has a label
  (``labels/labels.parquet``'s ``mask_path``), image and label agree in shape, spacing and affine,
  and the label's values are integers of the allowed, consecutive set;
- ``intensity_drift`` (WARN): a MONAI DataAnalyzer-style fingerprint per volume (mean, std, 0.5 and
  99.5 percentiles of the foreground, voxels above the modality's background) pooled per modality
  and site; a site whose mean lies more than ``drift_z`` standard deviations from the other sites'
  volumes is named. The observed value carries the fingerprint of every modality and site.

Config (``volumes`` in quality.yaml, ``params``; per-modality maps take a ``default`` key):
``allowed_modalities``, ``spacing_mm`` ([min, max] mm, or {modality: [min, max]}), ``shape_voxels``
([min, max] voxels, or per modality), ``label_values`` ([0, 1]), ``geometry_atol`` (1e-4),
``foreground`` ({modality: "min" or a number}), ``drift_z`` (3.0), ``drift_std_floor`` (1e-3),
``drift_min_volumes`` (2: volumes the other sites need before a site is judged).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from quality.contracts import VOLUMES
from quality.runner import CheckContext, GxSpec, Outcome, SuiteConfig

SAMPLE_UNIQUE = "sample_id_unique"
STATUS_OK = "status_ok"
MODALITY_ALLOWED = "modality_in_allowed_set"
SHA256_FORMAT = "nifti_sha256_format"
FILES_CHECKED = "files_checked"
FILE_EXISTS = "file_exists"
SHA256_MATCHES = "sha256_matches"
IMAGE_FINITE = "image_finite"
ORIENTATION_RAS = "orientation_ras"
SPACING_IN_RANGE = "spacing_in_range"
SHAPE_IN_RANGE = "shape_in_range"
GEOMETRY_MATCHES_TABLE = "geometry_matches_table"
LABEL_GEOMETRY = "label_geometry_matches"
LABEL_VALUES = "label_values_allowed"
INTENSITY_DRIFT = "intensity_drift"

DEFAULT_MODALITIES = ("CT", "MR", "CR", "DX", "MG", "PT")
DEFAULT_SPACING = {"default": [0.05, 20.0]}
DEFAULT_SHAPE = {"default": [1, 2048]}
DEFAULT_LABELS = [0, 1]
DEFAULT_FOREGROUND = {"default": "min"}
DEFAULT_DRIFT_Z = 3.0
MAX_LISTED = 10


@dataclass(frozen=True)
class Fingerprint:
    """Foreground intensity statistics of one volume (MONAI DataAnalyzer's image stats)."""

    mean: float
    std: float
    p00_5: float
    p99_5: float
    voxels: int


@dataclass(frozen=True)
class ImageFacts:
    """All a check needs from one NIfTI, computed from one read."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: tuple[float, ...]  # 16 values, row-major
    axcodes: tuple[str, ...]
    finite: bool
    values: tuple[float, ...] | None  # distinct values (labels only)
    fingerprint: Fingerprint | None  # images only (None for labels)


_CACHE: dict[tuple[str, str], ImageFacts] = {}  # (sha256, foreground rule | "label") -> facts
_CACHE_LOCK = threading.Lock()
_PENDING: dict[tuple[str, str], threading.Lock] = {}  # keys being decoded by some thread now


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def read_facts(path: Path, foreground: Any = "min", label: bool = False) -> tuple[str, ImageFacts]:
    """(sha256 of the file's bytes, its facts): the file is read once; facts of bytes seen before
    come from the cache. Threads may call it side by side: the same bytes are decoded once (a
    second thread with them waits for the first one's facts)."""
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = (sha, "label" if label else repr(foreground))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        pending = None if hit is not None else _PENDING.setdefault(key, threading.Lock())
    if hit is not None:
        return sha, hit
    assert pending is not None
    with pending:
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
        if hit is not None:
            return sha, hit
        facts = _facts(data, foreground, label)
        with _CACHE_LOCK:
            _CACHE[key] = facts
            _PENDING.pop(key, None)
    return sha, facts


def _facts(data: bytes, foreground: Any, label: bool) -> ImageFacts:
    import nibabel as nib
    import numpy as np

    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    img: Any = nib.Nifti1Image.from_bytes(raw)
    del raw
    affine = np.asarray(img.affine, dtype=np.float64)
    spacing = tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    values = fp = None
    histogram = None if label else _int16_histogram(img)
    if histogram is not None:  # finite by construction (_int16_histogram checks every value)
        finite = True
        fp = fingerprint_of_histogram(*histogram, foreground=foreground)
    else:
        arr = np.asarray(img.get_fdata(dtype=np.float64))
        finite_mask = np.isfinite(arr)
        finite = bool(finite_mask.all())
        if label:
            values = tuple(float(v) for v in np.unique(arr[finite_mask])[:64])
        else:
            fp = fingerprint(arr[finite_mask] if not finite else arr, foreground)
    return ImageFacts(
        shape=tuple(int(s) for s in img.shape),
        spacing=spacing,
        affine=tuple(float(v) for v in affine.ravel()),
        axcodes=tuple(str(c) for c in nib.aff2axcodes(affine)),
        finite=finite,
        values=values,
        fingerprint=fp,
    )


def fingerprint(arr: Any, foreground: Any = "min") -> Fingerprint | None:
    """Mean, std and 0.5/99.5 percentiles of the voxels above the background (``"min"``: the
    volume's minimum; a number: that intensity); all voxels when none is above it."""
    import numpy as np

    flat = np.asarray(arr, dtype=np.float64).ravel()
    if flat.size == 0:
        return None
    bg = float(flat.min()) if foreground == "min" else float(foreground)
    fg = flat[flat > bg]
    if fg.size == 0:
        fg = flat
    p_lo, p_hi = np.percentile(fg, [0.5, 99.5])
    return Fingerprint(float(fg.mean()), float(fg.std()), float(p_lo), float(p_hi), int(fg.size))


def _int16_histogram(img: Any) -> tuple[Any, Any] | None:
    """(distinct voxel values ascending, their counts) of an int16 image with positive, finite
    scaling (the normalized volumes: ``medcurate.io.write_nifti`` with ``dtype=int16``), or None
    for any other image (then the voxels are read as floats).

    Counting the 65,536 stored codes replaces the float64 copy of every voxel, its mask and its
    sort (most of the suite's time on the demo's 147 M voxels). Each code's value is what
    ``get_fdata(dtype=float64)`` gives that code (nibabel's own scaling, applied to every code),
    so the statistics are of the same values."""
    import io

    import numpy as np
    from nibabel.arrayproxy import ArrayProxy

    proxy = img.dataobj
    if img.get_data_dtype() != np.dtype(np.int16) or not isinstance(proxy, ArrayProxy):
        return None
    slope, inter = proxy.slope, proxy.inter
    if not (np.isfinite(slope) and np.isfinite(inter) and float(slope) > 0):
        return None
    codes = np.arange(-32768, 32768, dtype="<i2")
    table = np.asanyarray(
        ArrayProxy(io.BytesIO(codes.tobytes()), (codes.shape, codes.dtype, 0, slope, inter)),
        dtype=np.float64,
    )
    stored = np.asanyarray(proxy.get_unscaled())
    counts = np.bincount(
        stored.ravel(order="K").view(np.uint16) ^ np.uint16(0x8000), minlength=65536
    )
    present = counts > 0
    values, counts = table[present], counts[present]
    if not np.isfinite(values).all() or np.any(np.diff(values) < 0):
        return None
    return values, counts


def fingerprint_of_histogram(
    values: Any, counts: Any, foreground: Any = "min"
) -> Fingerprint | None:
    """:func:`fingerprint` of the voxels given as distinct ``values`` (ascending) and ``counts``:
    the same foreground rule and numpy's linear percentiles of the same sorted values; mean and
    std summed per value (equal to numpy's to rounding)."""
    import numpy as np

    values, counts = np.asarray(values, dtype=np.float64), np.asarray(counts, dtype=np.int64)
    if not counts.sum():
        return None
    bg = float(values[0]) if foreground == "min" else float(foreground)
    keep = values > bg
    if keep.any():
        values, counts = values[keep], counts[keep]
    n = int(counts.sum())
    mean = float(np.dot(counts, values) / n)
    std = float(np.sqrt(np.dot(counts, (values - mean) ** 2) / n))
    ends = np.cumsum(counts)  # rank r (0-based) holds values[searchsorted(ends, r, "right")]

    def at(rank: int) -> np.float64:
        return np.float64(values[int(np.searchsorted(ends, rank, side="right"))])

    p_lo, p_hi = (_linear_percentile(at, n, q) for q in (0.5, 99.5))
    return Fingerprint(mean, std, p_lo, p_hi, n)


def _linear_percentile(at: Any, n: int, q: float) -> float:
    """numpy's ``percentile(..., method="linear")`` from the order statistics ``at(rank)``."""
    import numpy as np

    virtual = np.float64(n - 1) * np.true_divide(np.float64(q), 100)
    below = int(np.floor(virtual))
    gamma = virtual - np.float64(below)
    a, b = at(below), at(min(below + 1, n - 1))
    diff = b - a
    return float(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)


class VolumesSuite:
    table = "volumes"

    def expectations(self, df: pd.DataFrame, cfg: SuiteConfig) -> list[GxSpec]:
        import great_expectations.expectations as gxe

        allowed = sorted(cfg.get("allowed_modalities", list(DEFAULT_MODALITIES)))
        specs = [GxSpec(n, e) for n, e in VOLUMES.gx_expectations()]
        specs += [
            GxSpec(SAMPLE_UNIQUE, gxe.ExpectColumnValuesToBeUnique(column="sample_id")),
            GxSpec(STATUS_OK, gxe.ExpectColumnValuesToBeInSet(column="status", value_set=["ok"])),
            GxSpec(
                MODALITY_ALLOWED,
                gxe.ExpectColumnValuesToBeInSet(column="modality", value_set=allowed),
            ),
            GxSpec(
                SHA256_FORMAT,
                gxe.ExpectColumnValuesToMatchRegex(column="nifti_sha256", regex=r"^[0-9a-f]{64}$"),
            ),
        ]
        return specs

    def extra_checks(self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> list[Outcome]:
        if ctx.zones is None:
            return [
                Outcome(
                    FILES_CHECKED,
                    cfg.sev(FILES_CHECKED),
                    False,
                    {"evaluated": False},
                    f"{FILES_CHECKED}: not evaluated: no zones given to read the NIfTI files",
                )
            ]
        return _file_checks(df, cfg, ctx)


# --------------------------------------------------------------------------- per-modality params


def _per_modality(cfg: SuiteConfig, key: str, default: Mapping[str, Any], modality: str) -> Any:
    table = cfg.get(key, None) or default
    if not isinstance(table, Mapping):
        return table
    return table.get(modality, table.get("default", default.get("default")))


class _Tally:
    """Failures of one expectation: a count and the first sample ids."""

    def __init__(self, name: str, what: str) -> None:
        self.name, self.what = name, what
        self.ids: list[str] = []
        self.checked = 0

    def add(self, sample_id: str) -> None:
        self.ids.append(sample_id)

    def outcome(self, cfg: SuiteConfig) -> Outcome:
        n = len(self.ids)
        observed = {
            "checked": self.checked,
            "unexpected_count": n,
            "sample_ids": self.ids[:MAX_LISTED],
        }
        if not n:
            return Outcome(
                self.name,
                cfg.sev(self.name),
                True,
                observed,
                f"{self.name}: passed ({self.checked} checked)",
            )
        ids = ", ".join(self.ids[:MAX_LISTED]) + (" ..." if n > MAX_LISTED else "")
        return Outcome(
            self.name,
            cfg.sev(self.name),
            False,
            observed,
            f"{self.name}: failed, {n} of {self.checked} {self.what} ({ids})",
        )


def _labels_of(ctx: CheckContext) -> dict[str, str]:
    """sample_id -> mask_path from labels/labels.parquet (empty when there is none)."""
    assert ctx.zones is not None
    path = ctx.zones.labels_table
    if not path.exists():
        return {}
    labels = pd.read_parquet(path, columns=["sample_id", "mask_path"])
    labels = labels[labels["mask_path"].notna() & (labels["mask_path"].astype(str) != "")]
    return {str(s): str(m) for s, m in zip(labels["sample_id"], labels["mask_path"], strict=True)}


def _as_list(v: Any) -> list[float] | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    try:
        return [float(x) for x in v]
    except TypeError:
        return None


#: images read side by side (decompression, hashing and counting run without the GIL); at most
#: this many volumes are in memory at once
MAX_THREADS = 4


def _read_images(
    rows: list[dict[Any, Any]], zones: Any, cfg: SuiteConfig
) -> list[tuple[str, ImageFacts] | None]:
    """:func:`read_facts` of each row's volume, in row order (None: no such file), read by up to
    one thread per CPU; the tallies that follow see the same facts in the same order."""

    def read(row: dict[Any, Any]) -> tuple[str, ImageFacts] | None:
        path = zones.volume_file(str(row.get("nifti_path")))
        if not path.is_file():
            return None
        modality = str(row.get("modality"))
        return read_facts(path, _per_modality(cfg, "foreground", DEFAULT_FOREGROUND, modality))

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, min(MAX_THREADS, cpus or 1, len(rows)))
    if threads == 1:
        return [read(row) for row in rows]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(read, rows))


def _file_checks(df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> list[Outcome]:
    import numpy as np

    assert ctx.zones is not None
    zones = ctx.zones
    atol = float(cfg.get("geometry_atol", 1e-4))
    allowed = sorted(float(v) for v in cfg.get("label_values", DEFAULT_LABELS))
    labels = _labels_of(ctx)
    t = {
        name: _Tally(name, what)
        for name, what in (
            (FILE_EXISTS, "volume file(s) missing"),
            (SHA256_MATCHES, "file(s) whose sha256 differs from the table"),
            (IMAGE_FINITE, "image(s) with NaN or inf voxels"),
            (ORIENTATION_RAS, "image(s) not in RAS orientation"),
            (SPACING_IN_RANGE, "image(s) with a spacing outside the modality's range"),
            (SHAPE_IN_RANGE, "image(s) with a shape outside the modality's range"),
            (GEOMETRY_MATCHES_TABLE, "image(s) whose shape or spacing differs from the table"),
            (LABEL_GEOMETRY, "label(s) whose shape, spacing or affine differs from the image"),
            (LABEL_VALUES, "label(s) with values outside the allowed consecutive set"),
        )
    }
    consecutive = allowed == [float(i) for i in range(len(allowed))]
    prints: list[tuple[str, str, str, Fingerprint]] = []  # (modality, site, sample, fingerprint)
    rows = df.to_dict("records")
    facts = _read_images(rows, zones, cfg)
    for row, read in zip(rows, facts, strict=True):
        sid, modality = str(row.get("sample_id")), str(row.get("modality"))
        t[FILE_EXISTS].checked += 1
        if read is None:
            t[FILE_EXISTS].add(sid)
            continue
        sha, f = read
        t[SHA256_MATCHES].checked += 1
        if sha != str(row.get("nifti_sha256") or "").lower():  # its format is GX's to judge
            t[SHA256_MATCHES].add(sid)
        for name in (
            IMAGE_FINITE,
            ORIENTATION_RAS,
            SPACING_IN_RANGE,
            SHAPE_IN_RANGE,
            GEOMETRY_MATCHES_TABLE,
        ):
            t[name].checked += 1
        if not f.finite:
            t[IMAGE_FINITE].add(sid)
        if f.axcodes[:3] != ("R", "A", "S"):
            t[ORIENTATION_RAS].add(sid)
        lo, hi = _per_modality(cfg, "spacing_mm", DEFAULT_SPACING, modality)
        if any(not (float(lo) <= s <= float(hi)) for s in f.spacing[:3]):
            t[SPACING_IN_RANGE].add(sid)
        lo, hi = _per_modality(cfg, "shape_voxels", DEFAULT_SHAPE, modality)
        if any(not (int(lo) <= s <= int(hi)) for s in f.shape[:3]):
            t[SHAPE_IN_RANGE].add(sid)
        shape_t, spacing_t = _as_list(row.get("out_shape")), _as_list(row.get("out_spacing"))
        if (
            shape_t is None
            or spacing_t is None
            or [float(s) for s in f.shape] != shape_t
            or not np.allclose(f.spacing, spacing_t, atol=max(atol, 1e-5))
        ):
            t[GEOMETRY_MATCHES_TABLE].add(sid)
        if f.fingerprint is not None and f.finite:
            prints.append((modality, str(row.get("site")), sid, f.fingerprint))
        mask = labels.get(sid)
        if mask is None:
            continue
        lpath = zones.label_file(mask)
        t[LABEL_GEOMETRY].checked += 1
        t[LABEL_VALUES].checked += 1
        if not lpath.is_file():
            t[LABEL_GEOMETRY].add(sid)
            continue
        _, lf = read_facts(lpath, label=True)
        if (
            lf.shape[:3] != f.shape[:3]
            or not np.allclose(lf.spacing, f.spacing, atol=atol)
            or not np.allclose(lf.affine, f.affine, atol=atol)
        ):
            t[LABEL_GEOMETRY].add(sid)
        vals = lf.values or ()
        if not consecutive or not lf.finite or any(v != round(v) or v not in allowed for v in vals):
            t[LABEL_VALUES].add(sid)
    out = [tally.outcome(cfg) for tally in t.values()]
    if not consecutive:
        o = out[-1]
        out[-1] = Outcome(
            o.expectation,
            o.severity,
            False,
            {**o.observed, "allowed": allowed},
            f"{LABEL_VALUES}: failed, the configured label_values {allowed} are "
            "not consecutive integers from 0",
        )
    out.append(_drift(prints, cfg))
    return out


# --------------------------------------------------------------------------- drift


def _drift(prints: list[tuple[str, str, str, Fingerprint]], cfg: SuiteConfig) -> Outcome:
    """WARN when one site's mean foreground intensity drifts from the other sites' volumes."""
    import numpy as np

    z_max = float(cfg.get("drift_z", DEFAULT_DRIFT_Z))
    floor = float(cfg.get("drift_std_floor", 1e-3))
    min_n = int(cfg.get("drift_min_volumes", 2))
    sev = cfg.severity.get(INTENSITY_DRIFT, "WARN")
    summary: dict[str, dict[str, dict[str, float | int]]] = {}
    drifted: list[str] = []
    zs: dict[str, float] = {}
    by_mod: dict[str, dict[str, list[Fingerprint]]] = {}
    for modality, site, _sid, fp in prints:
        by_mod.setdefault(modality, {}).setdefault(site, []).append(fp)
    for modality, sites in sorted(by_mod.items()):
        summary[modality] = {
            site: {
                "volumes": len(fps),
                "mean": round(float(np.mean([f.mean for f in fps])), 4),
                "std": round(float(np.mean([f.std for f in fps])), 4),
                "p00_5": round(float(np.mean([f.p00_5 for f in fps])), 4),
                "p99_5": round(float(np.mean([f.p99_5 for f in fps])), 4),
            }
            for site, fps in sorted(sites.items())
        }
        if len(sites) < 2:
            continue
        for site, fps in sorted(sites.items()):
            others = [f.mean for s, v in sites.items() if s != site for f in v]
            if len(others) < min_n:
                continue
            mu, sd = float(np.mean(others)), float(np.std(others, ddof=1))
            z = abs(float(np.mean([f.mean for f in fps])) - mu) / max(sd, floor)
            zs[f"{modality}/{site}"] = round(z, 2)
            if z > z_max:
                drifted.append(f"{modality}/{site}")
    observed = {
        "threshold_z": z_max,
        "z": zs,
        "drifted": drifted[:MAX_LISTED],
        "fingerprint": summary,
    }
    if not drifted:
        return Outcome(
            INTENSITY_DRIFT,
            sev,
            True,
            observed,
            f"{INTENSITY_DRIFT}: passed ({len(zs)} modality/site group(s) within z {z_max})",
        )
    named = ", ".join(f"{d} (z {zs[d]})" for d in drifted[:MAX_LISTED])
    return Outcome(
        INTENSITY_DRIFT,
        sev,
        False,
        observed,
        f"{INTENSITY_DRIFT}: failed, site intensity drifts from the other sites "
        f"beyond z {z_max}: {named}",
    )


SUITE = VolumesSuite()
