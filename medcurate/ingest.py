"""Ingest: claim what arrived in the inbox as one batch, validate it, catalog it.

The inbox is a drop folder. :func:`claim_inbox` moves every settled file into
``restricted/raw/<batch>/`` (so the inbox empties and nothing is processed twice);
:func:`ingest_batch` validates each file, moves failures to ``restricted/quarantine/<batch>/`` and
repeated content to ``restricted/duplicates/<batch>/``, and writes one Parquet catalog per batch
under ``restricted/catalog/``. Accounting is exact: received == catalogued + quarantined +
duplicates, for every batch.

Relative paths keep the sender's folder structure (and so may carry PHI): they only ever live
under ``restricted/``. Batch ids are built from the clock and content hashes, never from names.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medcurate.config import Zones
from medcurate.hashing import sha256_file
from medcurate.locks import exclusive
from medcurate.validate import validate_file

OK, QUARANTINED, DUPLICATE = "ok", "quarantined", "duplicate"
DUPLICATE_REASON = "DUPLICATE"

_LIST = pa.list_(pa.float64())
CATALOG_SCHEMA = pa.schema(
    [
        ("batch", pa.string()),
        ("relpath", pa.string()),
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("size_bytes", pa.int64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
        ("sop_class_uid", pa.string()),
        ("sop_instance_uid", pa.string()),
        ("study_instance_uid", pa.string()),
        ("series_instance_uid", pa.string()),
        ("frame_of_reference_uid", pa.string()),
        ("modality", pa.string()),
        ("manufacturer", pa.string()),
        ("transfer_syntax_uid", pa.string()),
        ("rows", pa.int64()),
        ("columns", pa.int64()),
        ("number_of_frames", pa.int64()),
        ("image_position_patient", _LIST),
        ("image_orientation_patient", _LIST),
        ("pixel_spacing", _LIST),
        ("slice_thickness", pa.float64()),
    ]
)
CATALOG_COLUMNS = tuple(CATALOG_SCHEMA.names)
HEADER_COLUMNS = CATALOG_COLUMNS[8:]


# --- the inbox ----------------------------------------------------------------------------------


def _files_under(root: Path) -> Iterator[Path]:
    """Regular files below root, sorted, skipping dot-files (transfers in progress, OS litter)."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if not name.startswith(".") and p.is_file() and not p.is_symlink():
                yield p


def drop_into_inbox(src: Path, z: Zones) -> int:
    """Copy a file or a tree into the inbox, keeping relative paths; returns files copied.

    Files are copied under a dot-name and renamed when complete, so a claim never sees half a file.
    """
    src = Path(src)
    z.inbox.mkdir(parents=True, exist_ok=True)
    pairs = [(src, z.inbox / src.name)] if src.is_file() else []
    if src.is_dir():
        pairs = [(p, z.inbox / p.relative_to(src)) for p in _files_under(src)]
    for s, d in pairs:
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = d.with_name(f".{d.name}.part")
        shutil.copyfile(s, tmp)
        os.replace(tmp, d)
    return len(pairs)


def batch_id(content_hashes: list[str], now: datetime | None = None) -> str:
    """``b<UTC yyyymmdd-HHMMSS>-<6 hex>``: sortable by arrival, PHI-free, tied to the content."""
    now = now or datetime.now(UTC)
    digest = hashlib.sha256("\n".join(sorted(content_hashes)).encode()).hexdigest()[:6]
    return f"b{now.strftime('%Y%m%d-%H%M%S')}-{digest}"


def _prune_empty_dirs(root: Path) -> None:
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -len(t[0])):
        p = Path(dirpath)
        if p != root:
            with contextlib.suppress(OSError):  # not empty (a file still settling)
                p.rmdir()


def claim_inbox(z: Zones, min_age_s: float = 0.0) -> str | None:
    """Move every settled inbox file into ``raw/<batch>/``; return the batch id, or None.

    Only files whose modification time is at least ``min_age_s`` old are claimed, so a file still
    being written waits for the next claim. Emptied inbox subfolders are removed.
    """
    cutoff = time.time() - min_age_s
    ready = [p for p in _files_under(z.inbox) if min_age_s <= 0 or p.stat().st_mtime <= cutoff]
    if not ready:
        return None
    hashes = [sha256_file(p) for p in ready]
    batch = batch_id(hashes)
    n = 0
    while (z.raw / batch).exists():  # same second, same content: keep batches apart
        n += 1
        batch = batch_id([*hashes, str(n)])
    dest = z.raw / batch
    for p in ready:
        target = dest / p.relative_to(z.inbox)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(p, target)
    _prune_empty_dirs(z.inbox)
    return batch


# --- one batch ----------------------------------------------------------------------------------


@dataclass
class IngestResult:
    """What one batch yielded. Counts and codes only: safe for logs and Dagster metadata."""

    batch: str
    received: int = 0
    catalogued: int = 0
    quarantined: int = 0
    duplicates: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    modalities: dict[str, int] = field(default_factory=dict)
    transfer_syntaxes: dict[str, int] = field(default_factory=dict)
    studies: int = 0
    series: int = 0

    @property
    def balanced(self) -> bool:
        return self.received == self.catalogued + self.quarantined + self.duplicates

    def summary_line(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())) or "none"
        return (
            f"batch {self.batch}: received {self.received} = catalogued {self.catalogued} "
            f"+ quarantined {self.quarantined} + duplicates {self.duplicates} "
            f"({self.studies} studies, {self.series} series; reasons: {reasons})"
        )

    def metadata(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "received": self.received,
            "catalogued": self.catalogued,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "accounting_balanced": self.balanced,
            "studies": self.studies,
            "series": self.series,
            "reasons": dict(sorted(self.reasons.items())),
            "modalities": dict(sorted(self.modalities.items())),
            "transfer_syntaxes": dict(sorted(self.transfer_syntaxes.items())),
        }

    @classmethod
    def from_catalog(cls, batch: str, df: pd.DataFrame) -> IngestResult:
        status = df["status"].value_counts()
        ok = df[df["status"] == OK]
        reasons = df.loc[df["status"] == QUARANTINED, "reason"].value_counts()
        ts = ok["transfer_syntax_uid"].dropna().map(_ts_name).value_counts()
        return cls(
            batch=batch,
            received=len(df),
            catalogued=int(status.get(OK, 0)),
            quarantined=int(status.get(QUARANTINED, 0)),
            duplicates=int(status.get(DUPLICATE, 0)),
            reasons={str(k): int(v) for k, v in reasons.items()},
            modalities={str(k): int(v) for k, v in ok["modality"].dropna().value_counts().items()},
            transfer_syntaxes={str(k): int(v) for k, v in ts.items()},
            studies=int(ok["study_instance_uid"].nunique()),
            series=int(ok["series_instance_uid"].nunique()),
        )


def _ts_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name


def catalog_path(z: Zones, batch: str) -> Path:
    return z.catalog / f"{batch}.parquet"


def reasons_path(z: Zones, batch: str) -> Path:
    """The quarantine's reasons file: next to the batch folder, so it never collides with a file."""
    return z.quarantine / f"{batch}.reasons.csv"


def _check_batch_name(batch: str) -> None:
    if not batch or "/" in batch or "\\" in batch or batch.startswith("."):
        raise ValueError(f"invalid batch id {batch!r}")


def _known_hashes(z: Zones, batch: str) -> dict[str, str]:
    """Content hash -> 'batch/relpath' of first receipt, over every other batch catalogued so far.

    Every other batch, not only earlier ones: batches may be ingested in any order (two runs at
    once). A batch's own earlier decisions are kept by ``ingest_batch``, so re-runs stay stable.
    """
    seen: dict[str, str] = {}
    for p in sorted(z.catalog.glob("*.parquet")):
        if p.stem == batch:
            continue
        df = pd.read_parquet(p, columns=["batch", "relpath", "sha256", "status"])
        for row in df[df["status"] != DUPLICATE].itertuples():
            seen.setdefault(str(row.sha256), f"{row.batch}/{row.relpath}")
    return seen


def _row(batch: str, relpath: str, path: Path, sha: str, size: int) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(CATALOG_COLUMNS)
    row.update(batch=batch, relpath=relpath, path=str(path), sha256=sha, size_bytes=size)
    return row


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(src, dst)


def ingest_batch(batch: str, z: Zones) -> IngestResult:
    """Validate, catalog and sort every file of ``raw/<batch>/``. Idempotent.

    The catalog is written before any file moves, so a run that dies half-way is finished by the
    next one: rows already catalogued are reused (same relpath and content), files they say belong
    in quarantine or duplicates are moved there, and only files new to the batch are validated.
    """
    _check_batch_name(batch)
    z.ensure()
    raw, quarantine, dups = z.raw / batch, z.quarantine / batch, z.duplicates / batch
    if not raw.is_dir() and not catalog_path(z, batch).exists():
        raise FileNotFoundError(f"batch {batch} was never claimed: no {raw}")
    # Deciding "duplicate" reads every other batch's catalog: two batches ingested at once must
    # not both miss each other, so the read-decide-write holds the catalog's lock.
    with exclusive(z.catalog / ".lock"):
        previous: dict[str, dict[str, Any]] = {}
        if catalog_path(z, batch).exists():
            prev = pq.read_table(catalog_path(z, batch), schema=CATALOG_SCHEMA).to_pylist()
            previous = {str(r["relpath"]): r for r in prev}

        known = _known_hashes(z, batch)
        for rec in previous.values():
            if rec["status"] != DUPLICATE:
                known.setdefault(str(rec["sha256"]), f"{batch}/{rec['relpath']}")
        rows: list[dict[str, Any]] = []
        moves: list[tuple[Path, Path]] = []
        in_raw: set[str] = set()
        for p in _files_under(raw):
            rel = p.relative_to(raw).as_posix()
            in_raw.add(rel)
            sha, size = sha256_file(p), p.stat().st_size
            old = previous.get(rel)
            if old is not None and old["sha256"] == sha:
                row = dict(old)
            else:
                row = _row(batch, rel, p, sha, size)
                if sha in known:
                    row.update(status=DUPLICATE, reason=DUPLICATE_REASON)
                    row["message"] = f"DUPLICATE: same content as {known[sha]}"
                else:
                    v = validate_file(p)
                    row.update({k: v.header.get(k) for k in HEADER_COLUMNS})
                    if v.reason is None:
                        row.update(status=OK, reason="", message="")
                    else:
                        row.update(
                            status=QUARANTINED, reason=v.reason.code, message=v.reason.message
                        )
            target = {OK: raw, QUARANTINED: quarantine, DUPLICATE: dups}[row["status"]] / rel
            row["path"] = str(target)
            if target != p:
                moves.append((p, target))
            if row["status"] != DUPLICATE:
                known.setdefault(sha, f"{batch}/{rel}")
            rows.append(row)
        # Rows of earlier runs whose files were already moved out of raw/.
        for rel, rec in previous.items():
            if rel not in in_raw and rec["status"] != OK and Path(str(rec["path"])).is_file():
                rows.append(dict(rec))

        rows.sort(key=lambda r: (str(r["relpath"]), str(r["status"])))
        table = pa.Table.from_pylist(
            [{k: r.get(k) for k in CATALOG_COLUMNS} for r in rows], schema=CATALOG_SCHEMA
        )
        _write_parquet(table, catalog_path(z, batch))
    df = table.to_pandas()
    for src, dst in moves:
        _move(src, dst)
    _prune_empty_dirs(raw)
    _write_reasons(df, reasons_path(z, batch))
    return IngestResult.from_catalog(batch, df)


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Atomic write with a fixed schema and no writer metadata: same rows, same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table.replace_schema_metadata(None), tmp)
    os.replace(tmp, path)


def _write_reasons(df: pd.DataFrame, path: Path) -> None:
    q = df[df["status"] == QUARANTINED]
    if q.empty:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["relpath", "reason", "message", "sha256"])
        for r in q.itertuples():
            w.writerow([r.relpath, r.reason, r.message, r.sha256])
    os.replace(tmp, path)


def read_catalog(z: Zones, batch: str | None = None) -> pd.DataFrame:
    """One batch's catalog, or all batches in batch order (empty frame with the schema if none)."""
    paths: list[Path]
    if batch is not None:
        _check_batch_name(batch)
        paths = [catalog_path(z, batch)]
        if not paths[0].exists():
            raise FileNotFoundError(f"no catalog for batch {batch} in {z.catalog}")
    else:
        paths = sorted(z.catalog.glob("*.parquet")) if z.catalog.is_dir() else []
    tables = [pq.read_table(p, schema=CATALOG_SCHEMA) for p in paths]
    table = pa.concat_tables(tables) if tables else CATALOG_SCHEMA.empty_table()
    # Nullable integers: rows/columns/frames stay integers where some rows lack them.
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def check_accounting(z: Zones, batch: str) -> list[str]:
    """Problems with a batch's books (empty when they add up): every row has a known status, every
    file is where its row says, quarantined rows carry a reason, received == the sum."""
    df = read_catalog(z, batch)
    problems: list[str] = []
    res = IngestResult.from_catalog(batch, df)
    if not res.balanced:
        problems.append(f"received {res.received} != sum of statuses")
    bad_status = set(df["status"]) - {OK, QUARANTINED, DUPLICATE}
    if bad_status:
        problems.append(f"unknown statuses: {sorted(bad_status)}")
    missing = int((~df["path"].map(lambda p: Path(p).is_file())).sum())
    if missing:
        problems.append(f"{missing} catalogued files are not where the catalog says")
    no_reason = int(((df["status"] != OK) & (df["reason"].fillna("") == "")).sum())
    if no_reason:
        problems.append(f"{no_reason} quarantined/duplicate rows without a reason")
    left = sum(1 for p in _files_under(z.raw / batch)) - res.catalogued
    if left:
        problems.append(f"{left} files in raw/{batch} not catalogued as ok")
    return problems
