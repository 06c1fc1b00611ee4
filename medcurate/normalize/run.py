"""Run normalization over many series: in threads of this process, or in a process pool.

The parent reads headers only (each file parsed once) and assembles series; a worker gets one
plan at a time (paths, pixel offsets and settings, a few kilobytes), reads its pixels, runs the
chain, writes the NIfTI and returns a row. So peak memory is one series per worker, whatever the
batch size. The pool is started only when the batch has enough voxels per worker to repay each
worker's torch and MONAI import (:func:`pool_size`); otherwise the series run in this process,
side by side in threads (:func:`thread_count`).
A series whose input content hashes and config hash match its existing row (and whose file is
still there) is not recomputed.

Tables are upserted per series UID under a file lock, so batches may run side by side.

A killed run is finished by the next one: its temporary files (named after its pid) are removed,
and a volume is only skipped when its file still has the sha256 its row records; every other
series of the batch is recomputed, byte-identically.

The stage: :func:`run_normalize` turns one batch's de-identification manifest into volumes under
``volumes/`` and :func:`check_normalize` checks them. ``normalize_tree`` writes the same layout
into any folder (``medcurate normalize SRC DST``). Beyond one machine the same work is cut by
series into shards (:mod:`medcurate.normalize.shards`), which uses this module's core: a run here
is one shard (:func:`_shard_part`) merged in memory (:func:`_merge`), so the bytes are the same.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from medcurate.config import (
    DEID_TREE_MANIFEST,
    VOLUMES_LOCK,
    VOLUMES_QUARANTINE,
    VOLUMES_TABLE,
    Zones,
)
from medcurate.io import (
    atomic_write_parquet,
    clean_litter,
    sha256_file,
    write_nifti,
)
from medcurate.locks import exclusive
from medcurate.normalize.assembly import (
    LOAD_ERROR,
    UNREADABLE,
    InstanceInfo,
    Outcome,
    Rejection,
    VolumePlan,
    assemble,
    read_instance,
    sample_id,
    source_digest,
)
from medcurate.normalize.config import NormalizeConfig, load_config
from medcurate.normalize.transforms import intensity_stats, load_plan, run_chain

QUARANTINE_TABLE = VOLUMES_QUARANTINE  # the name inside a volumes folder (see Zones)
UNKNOWN_SITE = "S-unknown"
_TEMPORARY = re.compile(r"\.tmp[\d-]*$")  # a writer's temporary file (de-identification, ours)
_SKIP_SUFFIXES = (".parquet", ".json", ".csv", ".txt", ".md", ".nii", ".gz", ".lock")

VOLUME_COLUMNS = [
    "sample_id", "patient", "study_uid", "series_uid", "part", "kind", "modality",
    "manufacturer", "site", "sex", "age_years", "orig_shape", "orig_spacing", "out_shape",
    "out_spacing", "intensity_min", "intensity_max", "intensity_mean", "intensity_std", "p01",
    "p99", "source_min", "source_max", "affine", "transform_config_hash", "nifti_path",
    "nifti_sha256", "n_instances", "source_digest", "status", "notes", "batch",
    "window_center", "window_width", "body_part",
]  # fmt: skip
# The series' own display window (first instance's WindowCenter/WindowWidth: HU for CT, the
# stored pixel units otherwise; null when absent) and BodyPartExamined (a defined term that
# survived de-identification; null otherwise): annotation picks the window its slices show in.
DISPLAY_COLUMNS = ("window_center", "window_width", "body_part")
_BODY_PART = re.compile(r"^[A-Z0-9_ ]{1,16}$")
QUARANTINE_COLUMNS = [
    "sample_id", "patient", "study_uid", "series_uid", "part", "modality", "reason", "message",
    "n_instances", "source_digest", "source_paths", "batch",
]  # fmt: skip


@dataclass
class NormalizeResult:
    """What one run did. Counts add up: instances_total = used + quarantined, and
    volumes_planned = written + skipped_unchanged + quarantined['LOAD_ERROR']."""

    series_found: int = 0
    volumes_planned: int = 0
    written: int = 0
    skipped_unchanged: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    instances_total: int = 0
    instances_used: int = 0
    instances_quarantined: int = 0
    config_hashes: dict[str, str] = field(default_factory=dict)
    volumes_table: str = ""

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def problems(self) -> list[str]:
        """Books that do not add up (every instance is used or quarantined)."""
        if self.instances_total == self.instances_used + self.instances_quarantined:
            return []
        return [
            f"{self.instances_total} instances != {self.instances_used} used "
            f"+ {self.instances_quarantined} quarantined"
        ]

    def summary_line(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.quarantined.items())) or "none"
        return (
            f"normalize: {self.series_found} series, {self.volumes_planned} volume(s) planned: "
            f"{self.written} written, {self.skipped_unchanged} unchanged; "
            f"{self.quarantined_total} quarantined ({reasons}); "
            f"{self.instances_used}/{self.instances_total} instances used"
        )

    def metadata(self) -> dict[str, Any]:
        """PHI-free numbers for Dagster metadata."""
        return {
            "series_found": self.series_found,
            "volumes_planned": self.volumes_planned,
            "volumes_written": self.written,
            "skipped_unchanged": self.skipped_unchanged,
            "quarantined": self.quarantined_total,
            "quarantine_reasons": dict(sorted(self.quarantined.items())),
            "instances_total": self.instances_total,
            "instances_used": self.instances_used,
            "instances_quarantined": self.instances_quarantined,
            "transform_config_hashes": dict(sorted(self.config_hashes.items())),
        }


@dataclass
class SeriesMeta:
    """Per-series facts from the de-identification manifest (override the headers)."""

    site: str = UNKNOWN_SITE
    sex: str | None = None
    age_years: float | None = None


# ---------------------------------------------------------------------------------------------
# Entry points


def normalize_tree(src: Path, dst: Path, workers: int = 1) -> NormalizeResult:
    """DICOM under ``src`` (recursive) -> ``dst/<sample_id>.nii.gz`` + ``dst/volumes.parquet``.

    Site, sex and age come from ``src/deid.parquet`` when it is there, else from the headers
    (site ``S-unknown``). Quarantined series go to ``dst/quarantine.parquet``.
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    manifest_path = src / DEID_TREE_MANIFEST
    manifest = pd.read_parquet(manifest_path) if manifest_path.exists() else None
    sha_by_rel: dict[str, str] = {}
    if manifest is not None and "sha256" in manifest.columns:
        sha_by_rel = dict(zip(manifest["path"].astype(str), manifest["sha256"], strict=False))
    files = [
        p
        for p in sorted(src.rglob("*"))
        if p.is_file()
        and not p.name.lower().endswith(_SKIP_SUFFIXES)
        and not _TEMPORARY.search(p.name)
        and not _inside(p, dst)
    ]
    rels = [p.relative_to(src).as_posix() for p in files]
    shas = [sha_by_rel.get(r) or sha256_file(p) for r, p in zip(rels, files, strict=True)]
    return _normalize(src, rels, shas, _series_meta(manifest), dst, workers=workers, batch="")


def normalize_batch(
    manifest: pd.DataFrame,
    deid_root: Path,
    volumes_root: Path,
    *,
    batch: str = "",
    workers: int = 1,
    config: NormalizeConfig | None = None,
) -> NormalizeResult:
    """The asset's entry: one batch's de-identification manifest rows -> volumes, upserted.

    ``manifest['path']`` is relative to ``deid_root``; its ``sha256`` drives incremental skips.
    """
    rels, shas = _inputs(manifest, Path(deid_root), range(len(manifest)))
    return _normalize(
        Path(deid_root), rels, shas, _series_meta(manifest), Path(volumes_root),
        workers=workers, batch=batch, config=config,
    )  # fmt: skip


def _inputs(
    manifest: pd.DataFrame, deid_root: Path, positions: Sequence[int]
) -> tuple[list[str], list[str]]:
    """Every row's path and, at ``positions``, its content hash (the manifest's, else hashed
    now: a shard hashes only its own files)."""
    rels = [str(p) for p in manifest["path"]]
    if "sha256" in manifest.columns:
        return rels, [str(s) for s in manifest["sha256"]]
    shas = [""] * len(rels)
    for pos in positions:
        shas[pos] = sha256_file(deid_root / rels[pos])
    return rels, shas


def run_normalize(
    z: Zones, batch: str, workers: int = 1, config: NormalizeConfig | None = None
) -> NormalizeResult:
    """The normalization stage: the batch's de-identification manifest -> NIfTI volumes under
    ``volumes/``, upserted into ``volumes.parquet`` (refusals in ``quarantine.parquet``)."""
    manifest = pd.read_parquet(z.deid_manifest(batch))
    return normalize_batch(manifest, z.deid, z.volumes, batch=batch, workers=workers, config=config)


def check_normalize(z: Zones, batch: str) -> list[str]:
    """Problems with a batch's volumes (empty when none): see :func:`check_batch`."""
    return check_batch(z.volumes, batch)


# ---------------------------------------------------------------------------------------------
# Core


def _intact(path: Path, sha: object) -> bool:
    """The volume is there and is the one its row describes (not damaged or half-copied)."""
    return path.is_file() and sha256_file(path) == sha


def _inside(p: Path, root: Path) -> bool:
    try:
        p.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def _series_meta(manifest: pd.DataFrame | None) -> dict[str, SeriesMeta]:
    if manifest is None or manifest.empty or "series_uid" not in manifest.columns:
        return {}
    out: dict[str, SeriesMeta] = {}
    first = manifest.drop_duplicates("series_uid")
    for row in first.to_dict("records"):
        age = row.get("age_years")
        out[str(row["series_uid"])] = SeriesMeta(
            site=str(row.get("site") or UNKNOWN_SITE),
            sex=None if pd.isna(row.get("sex")) else str(row.get("sex")),
            age_years=None if age is None or pd.isna(age) else float(age),
        )
    return out


def _normalize(
    root: Path,
    rels: Sequence[str],
    shas: Sequence[str],
    meta: dict[str, SeriesMeta],
    out_root: Path,
    *,
    workers: int,
    batch: str,
    config: NormalizeConfig | None = None,
) -> NormalizeResult:
    """The whole batch as one shard, merged in memory (no part record)."""
    out_root.mkdir(parents=True, exist_ok=True)
    clean_litter(out_root, recursive=False)
    part = _shard_part(
        root, rels, shas, range(len(rels)), meta, out_root,
        workers=workers, batch=batch, cfg=config or load_config(),
    )  # fmt: skip
    return _merge([part], out_root)


# One shard's work and the merge: shared by :func:`_normalize` (the whole batch as one shard) and
# :mod:`medcurate.normalize.shards` (which imports this module, never the other way round).
# ``Part`` stays here: part records pickle it by this module's name.


@dataclass
class Part:
    """One shard's share of a batch: its rows, kept apart by kind so that :func:`_merge` can lay
    the parts end to end in exactly the order one unsharded run builds (same tables, same bytes).
    Holds pseudonymous UIDs and deid/ paths: it is written under ``restricted/`` only."""

    seen: set[str] = field(default_factory=set)  # series UIDs of its readable instances
    rows: list[dict[str, Any]] = field(default_factory=list)  # volumes written now
    kept: list[dict[str, Any]] = field(default_factory=list)  # volumes skipped as unchanged
    rejected: list[dict[str, Any]] = field(default_factory=list)  # refused by assembly
    failed: list[dict[str, Any]] = field(default_factory=list)  # LOAD_ERROR
    unreadable: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (position, row)
    counts: Counter[str] = field(default_factory=Counter)
    config_hashes: dict[str, str] = field(default_factory=dict)


class ShardMismatchError(RuntimeError):
    """A file's header names another series than its manifest row (sharding needs them equal)."""


def _shard_part(
    root: Path,
    rels: Sequence[str],
    shas: Sequence[str],
    positions: Sequence[int],
    meta: dict[str, SeriesMeta],
    out_root: Path,
    *,
    workers: int,
    batch: str,
    cfg: NormalizeConfig,
    keys: Sequence[str] | None = None,
) -> Part:
    """Read, assemble and convert the files at ``positions`` (whole series only); write their
    NIfTI files, not the tables. ``keys``: the series each file was sharded by, checked."""
    part = Part()
    part.counts["instances_total"] = len(positions)
    rel_of: dict[str, str] = {}
    infos: list[InstanceInfo] = []
    unreadable: list[tuple[int, str]] = []
    for n, pos in enumerate(positions):
        rel = rels[pos]
        path = str(root / rel)
        info = read_instance(path, sha256=shas[pos])
        if info is None:
            unreadable.append((pos, rel))
            continue
        if keys is not None and info.series_uid != keys[n]:
            part.counts["mismatched"] += 1
        rel_of[path] = rel
        infos.append(info)
    if part.counts.pop("mismatched", 0):
        raise ShardMismatchError(
            f"normalize: batch {batch}: files whose SeriesInstanceUID differs from their "
            "de-identification manifest row; run de-identification of the batch again"
        )
    outcomes = assemble(infos, cfg.assembly)
    part.seen = {i.series_uid for i in infos}

    # The table is replaced atomically, so reading it without the lock is safe; the merge
    # re-reads it under the lock, so batches running side by side do not lose each other's rows.
    old_vol = _read_table(out_root / VOLUMES_TABLE, VOLUME_COLUMNS)
    old_by_id: dict[str, dict[str, Any]] = {
        str(r["sample_id"]): {str(k): v for k, v in r.items()} for r in old_vol.to_dict("records")
    }
    tasks: list[tuple[VolumePlan, dict[str, Any], str, str, str]] = []
    rejections: list[Rejection] = [o for o in outcomes if isinstance(o, Rejection)]
    for o in outcomes:
        if not isinstance(o, VolumePlan):
            continue
        part.counts["volumes_planned"] += 1
        modality = o.first.modality
        chash = cfg.config_hash(modality)
        part.config_hashes[modality or "?"] = chash
        digest = source_digest(o)
        old = old_by_id.get(o.sample_id)
        if (
            old is not None
            and old.get("status") == "ok"
            and old.get("source_digest") == digest
            and old.get("transform_config_hash") == chash
            and _intact(out_root / str(old.get("nifti_path")), old.get("nifti_sha256"))
        ):
            if DISPLAY_COLUMNS[0] not in old:  # a row of a table from before these columns
                old.update(display_tags(o.first.path))
            part.kept.append(old)
            part.counts["skipped_unchanged"] += 1
            part.counts["instances_used"] += len(o.instances)
            continue
        tasks.append((o, cfg.settings(modality), chash, digest, str(out_root)))

    failed: list[Rejection] = []
    for plan, res in zip((t[0] for t in tasks), _run_tasks(tasks, workers), strict=True):
        if isinstance(res, str):
            failed.append(Rejection(plan.series_uid, plan.part, LOAD_ERROR, res, plan.instances))
            continue
        res.update(_identity(plan, meta), batch=batch)
        part.rows.append(res)
        part.counts["written"] += 1
        part.counts["instances_used"] += len(plan.instances)

    part.rejected = [_rejection_row(r, meta, rel_of, batch) for r in rejections]
    part.failed = [_rejection_row(r, meta, rel_of, batch) for r in failed]
    for pos, rel in unreadable:
        row = {
            "sample_id": sample_id("", rel), "patient": "", "study_uid": "",
            "series_uid": "", "part": "", "modality": "", "reason": UNREADABLE,
            "message": "not readable as DICOM with a SeriesInstanceUID",
            "n_instances": 1, "source_digest": "", "source_paths": [rel], "batch": batch,
        }  # fmt: skip
        part.unreadable.append((pos, row))
    return part


def _merge(parts: Sequence[Part], out_root: Path) -> NormalizeResult:
    """Upsert the parts' rows into the tables as one run over the whole batch would: rows of each
    kind laid end to end in shard order (shards are contiguous runs of the sorted series), the
    unreadable files in manifest order. The only writer of the tables, under their lock."""
    counts: Counter[str] = Counter()
    hashes: dict[str, str] = {}
    for p in parts:
        counts.update(p.counts)
        for modality, chash in p.config_hashes.items():
            hashes.setdefault(modality, chash)
    seen: set[str] = set().union(*(p.seen for p in parts))
    new_vol = [r for p in parts for r in p.rows] + [r for p in parts for r in p.kept]
    unreadable = sorted((u for p in parts for u in p.unreadable), key=lambda u: u[0])
    q_rows = [r for p in parts for r in p.rejected] + [r for p in parts for r in p.failed]
    q_rows += [row for _, row in unreadable]
    result = NormalizeResult(
        series_found=len(seen),
        volumes_planned=counts["volumes_planned"],
        written=counts["written"],
        skipped_unchanged=counts["skipped_unchanged"],
        quarantined=dict(Counter(r["reason"] for r in q_rows)),
        instances_total=counts["instances_total"],
        instances_used=counts["instances_used"],
        instances_quarantined=sum(int(r["n_instances"]) for r in q_rows),
        config_hashes=hashes,
        volumes_table=VOLUMES_TABLE,
    )
    with exclusive(out_root / VOLUMES_LOCK):
        old_vol = _read_table(out_root / VOLUMES_TABLE, VOLUME_COLUMNS)
        _remove_orphans(out_root, old_vol, seen, {r["sample_id"] for r in new_vol})
        _upsert(out_root / VOLUMES_TABLE, VOLUME_COLUMNS, old_vol, new_vol, seen)
        old_q = _read_table(out_root / QUARANTINE_TABLE, QUARANTINE_COLUMNS)
        if len(old_q) and unreadable:
            old_q = old_q[~old_q["sample_id"].isin({r["sample_id"] for r in q_rows})]
        _upsert(out_root / QUARANTINE_TABLE, QUARANTINE_COLUMNS, old_q, q_rows, seen)
    return result


def _identity(plan: VolumePlan, meta: dict[str, SeriesMeta]) -> dict[str, Any]:
    first = plan.first
    m = meta.get(plan.series_uid, SeriesMeta())
    return {
        "sample_id": plan.sample_id,
        "patient": first.patient,
        "study_uid": first.study_uid,
        "series_uid": plan.series_uid,
        "part": plan.part,
        "kind": plan.kind,
        "modality": first.modality,
        "manufacturer": first.manufacturer,
        "site": m.site,
        "sex": m.sex if m.sex is not None else first.sex,
        "age_years": m.age_years if m.age_years is not None else first.age_years,
        "n_instances": len(plan.instances),
        "status": "ok",
        "notes": "; ".join(plan.notes),
    }


def _rejection_row(
    r: Rejection, meta: dict[str, SeriesMeta], rel_of: dict[str, str], batch: str
) -> dict[str, Any]:
    first = r.instances[0]
    return {
        "sample_id": r.sample_id,
        "patient": first.patient,
        "study_uid": first.study_uid,
        "series_uid": r.series_uid,
        "part": r.part,
        "modality": first.modality,
        "reason": r.reason,
        "message": r.message,
        "n_instances": len(r.instances),
        "source_digest": source_digest(r),
        "source_paths": sorted(rel_of.get(i.path, "") for i in r.instances),
        "batch": batch,
    }


# A spawned worker imports torch and MONAI before its first series (5-10 s on a busy 2-core
# machine), while one series costs this process a few tens of milliseconds: on such a machine 60
# series of 128x128x40 (39 M voxels) took 9-12 s here and 25 s in a pool of 2. A pool pays off
# only when each worker's share is much more than its start-up; smaller batches run in this
# process (whose own import is paid once), so ``workers`` is a ceiling, not a promise. Outputs
# are the same either way.
POOL_MIN_VOXELS_PER_WORKER = 100_000_000


def _voxels(plan: VolumePlan) -> int:
    return sum((i.rows or 0) * (i.cols or 0) for i in plan.instances)


def _output_voxels(plan: VolumePlan, settings: dict[str, Any]) -> float:
    """Roughly the voxels the plan's volume will have (its extent over the target spacing): the
    order in which threads take series, nothing else."""
    first = plan.first
    rows, cols, n = first.rows or 0, first.cols or 0, len(plan.instances)
    spacing = settings.get("spacing")
    if not spacing or first.pixel_spacing is None:
        return float(rows * cols * n)
    dr, dc = first.pixel_spacing
    extent = rows * dr * cols * dc * n * float(plan.slice_spacing or 1.0)
    return extent / max(1e-9, math.prod(float(v) for v in spacing))


def pool_size(plans: Sequence[VolumePlan], workers: int) -> int:
    """Worker processes for these plans: 1 (no pool) unless each worker gets enough work to repay
    its start-up, and never more than the CPUs this process may use."""
    voxels = sum(_voxels(p) for p in plans)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    by_work = voxels // max(1, POOL_MIN_VOXELS_PER_WORKER)
    return max(1, min(workers, len(plans), cpus or 1, by_work))


# Without a pool, series still run side by side in threads of this process: what takes their time
# (torch's resampling, zlib, numpy's percentiles, nibabel's scaling) runs without the GIL, each
# series on one torch thread, so two series keep two cores busy for no start-up at all. On the
# demo's 32 series (1,170 files) the stage took 23.1 s of CPU in one thread; in threads, 0.75 s of
# it stays in this thread (headers, assembly, tables). Each series is computed by one thread from
# its own inputs, so the bytes are those of a sequential run (same sha256 for all 32); rows come
# back in task order. At most MAX_THREADS series are in memory at once, whatever the batch size.
MAX_THREADS = 4


def thread_count(n_tasks: int) -> int:
    """Threads converting series side by side in this process: one per CPU this process may use,
    at most :data:`MAX_THREADS` and never more than the series."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_THREADS, cpus or 1, n_tasks))


def _run_tasks(
    tasks: list[tuple[VolumePlan, dict[str, Any], str, str, str]], workers: int
) -> list[dict[str, Any] | str]:
    size = pool_size([t[0] for t in tasks], workers)
    if size <= 1:
        threads = thread_count(len(tasks))
        if threads <= 1:
            return [process_plan(*t) for t in tasks]
        import torch

        saved = torch.get_num_threads()  # each series sets its thread's count to 1
        # largest series first, so that no thread is left with a big one at the end
        order = sorted(range(len(tasks)), key=lambda k: -_output_voxels(*tasks[k][:2]))
        try:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                futures = {k: pool.submit(_process_packed, tasks[k]) for k in order}
                return [futures[k].result() for k in range(len(tasks))]
        finally:
            torch.set_num_threads(saved)
    ctx = get_context("spawn")  # no forked copies of the parent's torch/dagster state
    with ProcessPoolExecutor(max_workers=size, mp_context=ctx) as pool:
        return list(pool.map(_process_packed, tasks, chunksize=1))


def _process_packed(task: tuple[VolumePlan, dict[str, Any], str, str, str]) -> dict[str, Any] | str:
    return process_plan(*task)


def process_plan(
    plan: VolumePlan, settings: dict[str, Any], chash: str, digest: str, out_root: str
) -> dict[str, Any] | str:
    """Load, transform and write one volume. Returns its row, or a PHI-free failure reason."""
    import torch  # heavy: only where pixels are touched

    threads = torch.get_num_threads()
    rel = f"{plan.sample_id}.nii.gz"
    try:
        loaded = load_plan(plan)
        array, affine = run_chain(loaded, settings)
        output = settings.get("output") or {}
        sha = write_nifti(
            Path(out_root) / rel,
            array,
            affine,
            dtype=str(output.get("dtype", "float32")),
            max_abs_error=float(output.get("max_abs_error", 0.0)),
        )
    except Exception as exc:  # one bad series must not stop the batch; no message: may hold PHI
        return f"{type(exc).__name__} while loading, transforming or writing"
    finally:
        torch.set_num_threads(threads)
    out_spacing = [float(v) for v in (affine[:3, :3] ** 2).sum(axis=0) ** 0.5]
    row: dict[str, Any] = {
        "orig_shape": [int(v) for v in loaded.array.shape],
        "orig_spacing": [round(v, 6) for v in loaded.spacing],
        "out_shape": [int(v) for v in array.shape],
        "out_spacing": [round(v, 6) for v in out_spacing],
        "source_min": float(loaded.array.min()),
        "source_max": float(loaded.array.max()),
        "affine": [float(v) for v in affine.ravel()],
        "transform_config_hash": chash,
        "nifti_path": rel,
        "nifti_sha256": sha,
        "source_digest": digest,
    }
    row.update(intensity_stats(array))
    row.update(display_of(loaded.header))
    return row


def _first_number(value: Any) -> float | None:
    """A DS value or the first of a multi-valued one, when finite."""
    if value is None:
        return None
    if not isinstance(value, str | int | float):
        value = next(iter(value), None)
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def display_tags(path: str | Path) -> dict[str, Any]:
    """The first instance's display window and body part (see :data:`DISPLAY_COLUMNS`); nulls
    when the file or the values cannot be read: they only choose how slices are shown.
    (Volumes written now take them from the dataset loading already read: :func:`display_of`.)"""
    try:
        import pydicom

        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["WindowCenter", "WindowWidth", "BodyPartExamined"],
        )
    except Exception:  # a header we cannot read again: no window, no harm
        return dict.fromkeys(DISPLAY_COLUMNS)
    return display_of(ds)


def display_of(ds: Any) -> dict[str, Any]:
    """:func:`display_tags` of a dataset already read."""
    out: dict[str, Any] = dict.fromkeys(DISPLAY_COLUMNS)
    try:
        center = _first_number(ds.get("WindowCenter"))
        width = _first_number(ds.get("WindowWidth"))
        part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    except Exception:  # odd values: no window, no harm
        return out
    if center is not None and width is not None and width > 0:
        out.update(window_center=center, window_width=width)
    out["body_part"] = part if _BODY_PART.match(part) else None
    return out


# ---------------------------------------------------------------------------------------------
# Tables


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    table = pd.read_parquet(path)
    if "detail" in table.columns and "message" not in table.columns:  # tables of older versions
        table = table.rename(columns={"detail": "message"})
        table["reason"] = table["reason"].str.upper()
    return table


def _upsert(
    path: Path,
    columns: list[str],
    old: pd.DataFrame,
    new_rows: list[dict[str, Any]],
    series: set[str],
) -> None:
    """Replace every row of the given series by ``new_rows``; keep the other series' rows."""
    keep = old[~old["series_uid"].isin(series)] if len(old) else old
    new = pd.DataFrame(new_rows, columns=columns)
    frames = [f for f in (keep, new) if len(f)]
    table = pd.concat(frames, ignore_index=True) if frames else new
    table = table.reindex(columns=columns)
    table = table.sort_values("sample_id", kind="stable").reset_index(drop=True)
    atomic_write_parquet(table, path)


def _remove_orphans(root: Path, old: pd.DataFrame, series: set[str], keep_ids: set[str]) -> None:
    """Delete volumes of re-processed series that no longer exist (e.g. a series now split)."""
    if not len(old):
        return
    gone = old[old["series_uid"].isin(series) & ~old["sample_id"].isin(keep_ids)]
    for rel in gone["nifti_path"].dropna():
        p = (root / str(rel)).resolve()
        if _inside(p, root.resolve()) and p.exists():
            p.unlink()


def outcomes_for(paths: Sequence[Path], config: NormalizeConfig | None = None) -> list[Outcome]:
    """Assembly only, for checks and tests: read headers and assemble."""
    cfg = config or load_config()
    infos = [i for i in (read_instance(p) for p in paths) if i is not None]
    return assemble(infos, cfg.assembly)


def check_batch(volumes_root: Path, batch: str) -> list[str]:
    """PHI-free problems with one batch's outputs: missing files, wrong hashes, bad rows."""
    problems: list[str] = []
    vol = _read_table(Path(volumes_root) / VOLUMES_TABLE, VOLUME_COLUMNS)
    rows = vol[vol["batch"] == batch] if len(vol) else vol
    for row in rows.to_dict("records"):
        path = Path(volumes_root) / str(row["nifti_path"])
        if not path.exists():
            problems.append(f"{row['sample_id']}: NIfTI file missing")
        elif sha256_file(path) != row["nifti_sha256"]:
            problems.append(f"{row['sample_id']}: NIfTI sha256 differs from the table")
        if row["status"] != "ok":
            problems.append(f"{row['sample_id']}: status {row['status']}")
    if vol["sample_id"].duplicated().any():
        problems.append("duplicate sample_id rows in volumes.parquet")
    return problems
