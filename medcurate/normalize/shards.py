"""One batch over many workers: shards that convert series, one merge that writes the tables.

Under the Celery executor one large batch would keep a single worker busy; cut by series into
shards (:func:`plan_shards`), it keeps every worker busy: :func:`normalize_shard` runs on each,
then one :func:`merge_normalize` upserts ``volumes.parquet`` and ``quarantine.parquet``. The
outputs are the same bytes for any number of shards, one included, as the one-process stage
(:func:`medcurate.normalize.run.run_normalize`) gives them.

A shard converts whole series only and writes its NIfTI files (their names and bytes do not
depend on the shard) and a part record; the merge alone writes the tables (the upsert happens
once, under their lock), so two shards never race on volumes.parquet, and the tables are those
of one unsharded run, byte for byte. The conversion and the merge themselves are
:mod:`medcurate.normalize.run`'s (``_shard_part``, ``_merge``): a one-process run is one shard
merged in memory.

Part records (``restricted/work/normalize/<batch>/part-<index>-of-<count>.pkl``) are pickles: the
exact Python values of the rows (numpy arrays, NaN, None) survive, which a format of their own
would have to re-create to give the same Parquet bytes. They hold pseudonymous UIDs and deid/
paths, stay in a 0700 folder under restricted/, are read only by the merge (which refuses them
when that folder is open to others) and are removed by it.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medcurate.config import Zones
from medcurate.io import (
    atomic_write_bytes,
    clean_litter,
    sha256_bytes,
    sha256_file,
)
from medcurate.normalize.assembly import read_instance
from medcurate.normalize.config import NormalizeConfig, load_config
from medcurate.normalize.run import (
    NormalizeResult,
    Part,
    ShardMismatchError,
    _inputs,
    _merge,
    _series_meta,
    _shard_part,
)
from medcurate.perms import private_dir, require_private

__all__ = [
    "PART_FORMAT",
    "MissingPartError",
    "ShardMismatchError",
    "ShardSummary",
    "merge_normalize",
    "normalize_shard",
    "part_path",
    "plan_shards",
    "series_keys",
    "work_dir",
]

PART_FORMAT = 1


@dataclass(frozen=True)
class ShardSummary:
    """What one shard did: counts only (it travels between Dagster steps)."""

    index: int
    count: int
    series: int
    written: int
    skipped_unchanged: int
    quarantined: int
    instances: int

    def summary_line(self) -> str:
        return (
            f"normalize shard {self.index} of {self.count}: {self.series} series, "
            f"{self.written} written, {self.skipped_unchanged} unchanged, "
            f"{self.quarantined} quarantined, {self.instances} instances"
        )


class MissingPartError(RuntimeError):
    """The merge found no (or a stale) part record of a shard: that shard must run (again)."""


def work_dir(z: Zones, batch: str) -> Path:
    """``restricted/work/normalize/<batch>/``: the batch's part records until the merge."""
    return z.restricted / "work" / "normalize" / batch


def part_path(z: Zones, batch: str, index: int, count: int) -> Path:
    return work_dir(z, batch) / f"part-{index}-of-{count}.pkl"


def series_keys(manifest: pd.DataFrame, deid_root: Path) -> list[str]:
    """The series of each manifest row: its ``series_uid``, else its header's (read only for
    such rows), else "" (an unreadable file: quarantined alone, in whichever shard)."""
    given = manifest["series_uid"] if "series_uid" in manifest.columns else [None] * len(manifest)
    keys = []
    for rel, uid in zip(manifest["path"], given, strict=True):
        if uid is None or pd.isna(uid) or not str(uid):
            info = read_instance(Path(deid_root) / str(rel))
            uid = info.series_uid if info is not None else ""
        keys.append(str(uid))
    return keys


def plan_shards(keys: Sequence[str], count: int) -> list[list[int]]:
    """The row positions of each of ``count`` shards: the series, sorted as assembly sorts them,
    cut into contiguous runs of about equal file counts, never inside a series; with shards to
    spare each series has its own (the rest stay empty). Deterministic: every shard computes the
    same plan."""
    if count < 1:
        raise ValueError(f"shards must be >= 1, not {count}")
    sizes = Counter(keys)
    order = sorted(sizes)
    shard_of: dict[str, int] = {}
    shard, load, left = 0, 0, len(keys)
    target = left / count
    for n, key in enumerate(order):
        size = sizes[key]
        spare = count - 1 - shard >= len(order) - n  # a shard left for each series to come
        if load and shard < count - 1 and (spare or load + size / 2 > target):
            shard, load = shard + 1, 0
            target = left / (count - shard)
        shard_of[key] = shard
        load += size
        left -= size
    out: list[list[int]] = [[] for _ in range(count)]
    for pos, key in enumerate(keys):
        out[shard_of[key]].append(pos)
    return out


def normalize_shard(
    z: Zones,
    batch: str,
    index: int,
    count: int,
    workers: int = 1,
    config: NormalizeConfig | None = None,
) -> ShardSummary:
    """Shard ``index`` of ``count`` of the batch: its series' NIfTI files under ``volumes/`` and
    its part record (see :func:`merge_normalize`). Running it again (a retry after its worker
    died) writes the same files and an equal record. It removes no litter: a temporary file of
    a live shard on another machine carries a pid this machine cannot check."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index} is not one of 0..{count - 1}")
    blob = z.deid_manifest(batch).read_bytes()
    manifest = pd.read_parquet(io.BytesIO(blob))
    keys = series_keys(manifest, z.deid) if count > 1 else [""] * len(manifest)
    positions = plan_shards(keys, count)[index]
    rels, shas = _inputs(manifest, z.deid, positions)
    z.volumes.mkdir(parents=True, exist_ok=True)
    part = _shard_part(
        z.deid, rels, shas, positions, _series_meta(manifest), z.volumes,
        workers=workers, batch=batch, cfg=config or load_config(),
        keys=[keys[p] for p in positions] if count > 1 else None,
    )  # fmt: skip
    record = {"format": PART_FORMAT, "batch": batch, "index": index, "count": count,
              "manifest_sha256": sha256_bytes(blob), "part": part}  # fmt: skip
    path = part_path(z, batch, index, count)
    private_dir(path.parent, root=z.restricted)
    atomic_write_bytes(path, pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL), private=True)
    quarantined = len(part.rejected) + len(part.failed) + len(part.unreadable)
    return ShardSummary(
        index, count, len(part.seen), part.counts["written"],
        part.counts["skipped_unchanged"], quarantined, len(positions),
    )  # fmt: skip


def merge_normalize(z: Zones, batch: str, count: int) -> NormalizeResult:
    """Every shard's part, in order, upserted into ``volumes.parquet`` and ``quarantine.parquet``
    as :func:`run_normalize` would (same tables, same result); then the parts are removed.
    A part that is missing, or was made from another manifest, stops the merge before any write."""
    folder = work_dir(z, batch)
    paths = [part_path(z, batch, i, count) for i in range(count)]
    missing = [str(i) for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        raise MissingPartError(
            f"normalize: batch {batch}: no part record of shard {', '.join(missing)} of {count} "
            "(the shard did not finish); run it again, then merge"
        )
    require_private([folder, *paths], what="normalization part records")
    sha = sha256_file(z.deid_manifest(batch))
    parts: list[Part] = []
    for i, path in enumerate(paths):
        record = pickle.loads(path.read_bytes())
        same = (record.get("format"), record.get("batch"), record.get("index"))
        if same != (PART_FORMAT, batch, i) or record.get("manifest_sha256") != sha:
            raise MissingPartError(
                f"normalize: batch {batch}: the part record of shard {i} of {count} was made "
                "from another de-identification manifest; run that shard again, then merge"
            )
        parts.append(record["part"])
    z.volumes.mkdir(parents=True, exist_ok=True)
    _remove_own_litter(z.volumes, parts)
    result = _merge(parts, z.volumes)
    for path in folder.glob("part-*-of-*.pkl"):  # these and any left by an earlier count
        path.unlink()
    clean_litter(folder)
    with contextlib.suppress(OSError):
        folder.rmdir()
    return result


def _remove_own_litter(out_root: Path, parts: Sequence[Part]) -> None:
    """Temporary files of this batch's volumes (a killed shard's; every shard has finished now).
    Not :func:`clean_litter`: another batch's shard may be writing on another machine, under a
    pid that looks dead from here."""
    ids = {str(r["sample_id"]) for p in parts for r in (*p.rows, *p.failed)}
    for sid in sorted(ids):
        for tmp in out_root.glob(f".{sid}.nii.gz.tmp*"):
            tmp.unlink(missing_ok=True)
