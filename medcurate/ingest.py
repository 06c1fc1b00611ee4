"""Ingest: claim what arrived in the inbox as one batch, validate it, catalog it.

The inbox is a drop folder. :func:`claim_inbox` moves every settled inbox *entry* into
``restricted/raw/<batch>/`` (so the inbox empties and nothing is processed twice);
:func:`run_ingest` validates each file, moves failures to ``restricted/quarantine/<batch>/`` and
repeated content to ``restricted/duplicates/<batch>/``, and writes one Parquet catalog per batch
under ``restricted/catalog/``. Accounting is exact: received == catalogued + quarantined +
duplicates, for every batch, and every inbox entry is received: symlinks, dot-files, FIFOs,
sockets, devices and unlistable folders are moved as themselves and quarantined with their kind
as reason (:mod:`medcurate.inbox`); an unreadable file is quarantined as ``UNREADABLE``.

Relative paths keep the sender's folder structure (and so may carry PHI): they only ever live
under ``restricted/``, which is owner-only (0700 folders, 0600 files, whatever the umask). Batch
ids are built from the clock and content hashes, never from names; errors and messages name
files as ``batch <id>, file #<n>``, never by path.

Resumable: a claim leaves ``catalog/<batch>.pending`` until the batch is fully ingested, so a run
killed after its claim is found by :func:`pending_batches` and finished by the next one; temporary
files of killed writers are removed (:func:`medcurate.io.clean_litter`), and ``.part`` files of
copies that never finished are claimed (``PARTIAL_TRANSFER``) once older than ``STALE_PART_S``.

The stage: :func:`run_ingest` (one batch) and :func:`check_ingest` (its books); every path comes
from :class:`~medcurate.config.Zones`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydicom.uid import UID

from medcurate import inbox
from medcurate.config import Zones
from medcurate.dicomwalk import DEFAULT_MAX_DEPTH
from medcurate.io import atomic_write_bytes, atomic_write_parquet, clean_litter, sha256_text
from medcurate.locks import exclusive
from medcurate.perms import private_dir
from medcurate.pools import pool_map
from medcurate.validate import Validation, unreadable_message, validate_file

OK, QUARANTINED, DUPLICATE = "ok", "quarantined", "duplicate"
DUPLICATE_REASON = "DUPLICATE"
UNREADABLE = inbox.UNREADABLE
STALE_PART_S = 3600.0  # a ``.part`` copy untouched this long was abandoned: claim it

_ENTRY_MESSAGES = {
    inbox.HIDDEN_FILE: "HIDDEN_FILE: a dot-file (or a file in a dot-folder); not validated",
    inbox.PARTIAL_TRANSFER: "PARTIAL_TRANSFER: an abandoned .part copy; not validated",
    inbox.SYMLINK: "SYMLINK: a symbolic link; refused, never followed",
    inbox.SPECIAL_FILE: "SPECIAL_FILE: a FIFO, socket or device; never opened",
    inbox.UNREADABLE_FOLDER: "UNREADABLE_FOLDER: a folder that cannot be listed; moved whole",
}

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
        ("sop_uid", pa.string()),
        ("study_uid", pa.string()),
        ("series_uid", pa.string()),
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
# Catalogs written before the vocabulary was settled (issue 10) name the UIDs in full.
_LEGACY_COLUMNS = {
    "sop_instance_uid": "sop_uid",
    "study_instance_uid": "study_uid",
    "series_instance_uid": "series_uid",
}


class IngestMoveError(OSError):
    """Some entries of a batch could not be moved; the catalog is written, a re-run finishes."""


# --- restricted/: owner-only folders, private files, locks --------------------------------------


def _ensure(z: Zones) -> None:
    """The zones ingest writes to, 0700 from restricted/ down (Zones.ensure may use the umask)."""
    z.ensure()
    for d in (z.raw, z.quarantine, z.duplicates, z.catalog):
        private_dir(d, root=z.restricted)


def _private_file(path: Path) -> io.BufferedWriter:
    """A new file opened for writing, created 0600 (the umask cannot widen it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """``exclusive`` on a lock file under ``catalog/``, created 0600 first."""
    if not path.exists():
        _private_file(path).close()
    inbox.secure(path)  # one left 0644 by an older version
    with exclusive(path):
        yield


# --- the inbox ----------------------------------------------------------------------------------


def _files_under(root: Path) -> Iterator[Path]:
    """Regular visible files below root, sorted (what ``drop_into_inbox`` copies from a source)."""
    for e in inbox.entries(root):
        if e.kind == inbox.FILE:
            yield e.path


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
    digest = sha256_text("\n".join(sorted(content_hashes)))[:6]
    return f"b{now.strftime('%Y%m%d-%H%M%S')}-{digest}"


def _prune_empty_dirs(root: Path) -> None:
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -len(t[0])):
        p = Path(dirpath)
        if p != root:
            with contextlib.suppress(OSError):  # not empty (a file still settling)
                p.rmdir()


def _claim_key(e: inbox.Entry, root: Path) -> str:
    """What ties the batch id to an entry: its content hash, or (unreadable, not a file) its kind,
    place and size, hashed (only 6 hex digits of a hash over all keys reach the batch id)."""
    if e.kind == inbox.FILE:
        with contextlib.suppress(OSError):
            return inbox.sha256_entry(e.path)[0]
    rel = e.path.relative_to(root).as_posix()
    return sha256_text(f"{e.kind}\0{rel}\0{e.size}\0{e.mtime}")


def claim_inbox(
    z: Zones, min_age_s: float = 0.0, part_max_age_s: float = STALE_PART_S
) -> str | None:
    """Move every settled inbox entry into ``raw/<batch>/``; return the batch id, or None.

    Only entries whose modification time is at least ``min_age_s`` old are claimed, so a file still
    being written waits for the next claim; ``.part`` copies wait ``part_max_age_s`` (an abandoned
    copy is then claimed and quarantined). Emptied inbox subfolders are removed. An entry that
    cannot be moved stays in the inbox for the next claim; nothing here raises for one entry.
    """
    _ensure(z)
    with _locked(z.claim_lock):
        now = time.time()
        ready = [
            e
            for e in inbox.entries(z.inbox)
            if (e.kind == inbox.PARTIAL_TRANSFER and e.mtime <= now - part_max_age_s)
            or (e.kind != inbox.PARTIAL_TRANSFER and (min_age_s <= 0 or e.mtime <= now - min_age_s))
        ]
        if not ready:
            return None
        batch = new_batch(z, [_claim_key(e, z.inbox) for e in ready])
        dest = z.raw_batch(batch)
        for e in ready:
            target = dest / e.path.relative_to(z.inbox)
            with contextlib.suppress(OSError):  # left in the inbox: the next claim retries
                private_dir(target.parent, root=z.restricted)
                inbox.move_entry(e.path, target)
                inbox.secure(target)
        _prune_empty_dirs(z.inbox)
    return batch


def new_batch(z: Zones, keys: list[str], now: datetime | None = None) -> str:
    """A new batch for files with these content keys, called under the claim lock by every door
    (the inbox, a PACS pull): its id (a bumped one when the same content came in the same
    second), its ``.pending`` mark, and its empty ``raw/<batch>/`` folder."""
    batch = batch_id(keys, now)
    n = 0
    while z.raw_batch(batch).exists() or z.catalog_file(batch).exists():
        n += 1  # same second, same content: keep batches apart
        batch = batch_id([*keys, str(n)], now)
    _private_file(z.catalog_pending(batch)).close()
    private_dir(z.raw_batch(batch), root=z.restricted)
    return batch


def pending_batches(z: Zones) -> list[str]:
    """Claimed batches not fully ingested (a run killed after the claim, or half-way): those with
    a ``.pending`` mark, and raw batch folders without a catalog (claims of older versions)."""
    if not z.catalog.is_dir() or not z.raw.is_dir():
        return []
    with _locked(z.claim_lock):  # not a claim half-done by someone else
        found = {
            p.name
            for p in z.raw.iterdir()
            if p.is_dir() and not p.name.startswith(".") and not z.catalog_file(p.name).exists()
        }
        for mark in z.catalog.glob("*.pending"):
            batch = mark.name.removesuffix(".pending")
            if z.raw_batch(batch).is_dir() or z.catalog_file(batch).exists():
                found.add(batch)
            else:  # the claim died before moving anything
                mark.unlink(missing_ok=True)
    return sorted(found)


def _clean_litter_locked(z: Zones) -> int:
    """Top level of catalog/ and quarantine/ only (below are the sender's files): temporary files
    of writers that are gone, and ``.<name>.tmp`` of versions before pids were in the name."""
    removed = 0
    for folder in (z.catalog, z.quarantine):
        removed += clean_litter(folder, recursive=False)
        for p in folder.glob(".*.tmp"):
            p.unlink(missing_ok=True)
            removed += 1
    return removed


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

    @property
    def problems(self) -> list[str]:
        if self.balanced:
            return []
        return [f"received {self.received} != sum of statuses"]

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
            studies=int(ok["study_uid"].nunique()),
            series=int(ok["series_uid"].nunique()),
        )


def _ts_name(uid: str) -> str:
    return UID(uid).name


def _check_batch_name(batch: str) -> None:
    if not batch or "/" in batch or "\\" in batch or batch.startswith("."):
        raise ValueError(f"invalid batch id {batch!r}")


def _known_hashes(z: Zones, batch: str) -> dict[str, str]:
    """Content hash -> 'batch/relpath' of first receipt, over every other batch catalogued so far.

    Every other batch, not only earlier ones: batches may be ingested in any order (two runs at
    once). A batch's own earlier decisions are kept by ``run_ingest``, so re-runs stay stable.
    """
    seen: dict[str, str] = {}
    for p in sorted(z.catalog.glob("*.parquet")):
        if p == z.catalog_file(batch):
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
    """Move one entry (itself, not a link's target) to ``dst``; its parent already exists."""
    inbox.move_entry(src, dst)
    inbox.secure(dst)


def _entry_row(
    batch: str,
    e: inbox.Entry,
    rel: str,
    known: dict[str, str],
    max_depth: int,
    validate: bool = True,
) -> dict[str, Any]:
    """A new catalog row for one entry: quarantined by kind, unreadable, duplicate or validated
    (``validate=False``: a file to validate is left without a status, see _validate_rows)."""
    if e.kind != inbox.FILE:
        row = _row(batch, rel, e.path, "", e.size)
        row.update(status=QUARANTINED, reason=e.kind, message=_ENTRY_MESSAGES[e.kind])
        return row
    try:
        sha, size = inbox.sha256_entry(e.path)
    except OSError as exc:
        row = _row(batch, rel, e.path, "", e.size)
        row.update(status=QUARANTINED, reason=UNREADABLE, message=unreadable_message(exc))
        return row
    row = _row(batch, rel, e.path, sha, size)
    if sha in known:
        row.update(status=DUPLICATE, reason=DUPLICATE_REASON)
        row["message"] = f"DUPLICATE: same content as {known[sha]}"
        return row
    if not validate:
        return row
    return _with_validation(row, validate_file(e.path, max_depth=max_depth))


def _with_validation(row: dict[str, Any], v: Validation) -> dict[str, Any]:
    row.update({k: v.header.get(k) for k in HEADER_COLUMNS})
    if v.reason is None:
        row.update(status=OK, reason="", message="")
    else:
        row.update(status=QUARANTINED, reason=v.reason.code, message=v.reason.message)
    return row


#: files to validate before :func:`_validate_rows` starts a pool (a forked worker costs a few
#: tens of milliseconds, a file about two)
POOL_MIN_FILES = 64
MAX_WORKERS = 4  # each validates one file at a time


def validation_workers(n_files: int) -> int:
    """Worker processes for validating ``n_files``: one per CPU this process may use (at most
    :data:`MAX_WORKERS`) when there are :data:`POOL_MIN_FILES` of them, else 1 (no pool)."""
    if n_files < POOL_MIN_FILES:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_WORKERS, cpus or 1))


def _validate_one(task: tuple[str, int]) -> Validation:
    return validate_file(Path(task[0]), max_depth=task[1])


def _init_validator() -> None:
    """A forked worker: signal handlers the parent set (Dagster's interrupt capture) must not make
    it ignore the pool's SIGTERM (as the de-identification pool does)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _validate_rows(rows: list[dict[str, Any]], max_depth: int, workers: int) -> None:
    """Validate the files of the rows without a status (new, not duplicates), in place.

    Validation is a pure function of the file (most of the stage's time: pydicom parses every
    header and decodes every frame), so forked workers do it side by side; rows are filled in
    catalog order, the same for any number of workers. Hashing and the duplicate decision
    stay in this process, in entry order."""
    pending = [r for r in rows if r["status"] is None]
    tasks = [(str(r["path"]), max_depth) for r in pending]
    workers = validation_workers(len(tasks)) if workers <= 0 else min(workers, len(tasks))
    if workers <= 1:
        results: list[Validation] = [_validate_one(t) for t in tasks]
    else:
        results = pool_map(_validate_one, tasks, workers, initializer=_init_validator)
    for row, v in zip(pending, results, strict=True):
        _with_validation(row, v)


def run_ingest(
    z: Zones, batch: str, max_depth: int = DEFAULT_MAX_DEPTH, workers: int = 0
) -> IngestResult:
    """The ingest stage: validate, catalog and sort every entry of ``raw/<batch>/``. Idempotent;
    one bad entry never stops the batch (it is quarantined with a reason, or left for the next run
    to move).

    The catalog is written before any entry moves, so a run that dies half-way is finished by the
    next one: rows already catalogued are reused (same relpath and content), entries they say belong
    in quarantine or duplicates are moved there, and only entries new to the batch are examined.
    ``max_depth`` is the sequence nesting limit (deeper files: ``SEQUENCE_TOO_DEEP``).
    ``workers``: processes validating new files (0: :func:`validation_workers`; the catalog is
    the same for any number).
    """
    _check_batch_name(batch)
    _ensure(z)
    raw, quarantine = z.raw_batch(batch), z.quarantine_batch(batch)
    dups, catalog = z.duplicates_batch(batch), z.catalog_file(batch)
    # Deciding "duplicate" reads every other batch's catalog: two batches ingested at once must
    # not both miss each other, so the whole read-decide-write-move holds the catalog's lock.
    with _locked(z.catalog_lock):
        _clean_litter_locked(z)
        if not raw.is_dir() and not catalog.exists():
            raise FileNotFoundError(f"batch {batch} was never claimed (no raw folder, no catalog)")
        previous: dict[str, dict[str, Any]] = {}
        if catalog.exists():
            previous = {str(r["relpath"]): r for r in _read_catalog_table(catalog).to_pylist()}

        known = _known_hashes(z, batch)
        for rec in previous.values():
            if rec["status"] != DUPLICATE and rec["sha256"]:
                known.setdefault(str(rec["sha256"]), f"{batch}/{rec['relpath']}")
        rows: list[dict[str, Any]] = []
        moves: list[tuple[str, Path, Path]] = []
        in_raw: set[str] = set()
        entries: list[tuple[str, Path, dict[str, Any]]] = []
        for e in inbox.entries(raw):
            rel = e.path.relative_to(raw).as_posix()
            in_raw.add(rel)
            old = previous.get(rel)
            if old is not None and _same_entry(old, e):
                row = dict(old)
            else:  # validated below, all together; a duplicate is known without it
                row = _entry_row(batch, e, rel, known, max_depth, validate=False)
            if row["status"] != DUPLICATE and row["sha256"]:
                known.setdefault(str(row["sha256"]), f"{batch}/{rel}")
            entries.append((rel, e.path, row))
        _validate_rows([row for _, _, row in entries], max_depth, workers)
        for rel, path, row in entries:
            target = {OK: raw, QUARANTINED: quarantine, DUPLICATE: dups}[row["status"]] / rel
            row["path"] = str(target)
            if target != path:
                moves.append((rel, path, target))
            rows.append(row)
        # Rows of earlier runs whose entries were already moved out of raw/.
        for rel, rec in previous.items():
            if rel not in in_raw and rec["status"] != OK and os.path.lexists(str(rec["path"])):
                rows.append(dict(rec))

        rows.sort(key=lambda r: (str(r["relpath"]), str(r["status"])))
        table = pa.Table.from_pylist(
            [{k: r.get(k) for k in CATALOG_COLUMNS} for r in rows], schema=CATALOG_SCHEMA
        )
        # fixed schema, no writer metadata (same rows, same bytes), 0600
        atomic_write_parquet(table, catalog, private=True)
        df = table.to_pandas()
        failed = _apply_moves(z, moves, [str(r["relpath"]) for r in rows])
        _prune_empty_dirs(raw)
        _write_reasons(df, z.ingest_reasons(batch))
        if failed:
            numbers = ", ".join(f"#{n}" for n in failed[:10]) + (" ..." if len(failed) > 10 else "")
            raise IngestMoveError(
                f"batch {batch}: {len(failed)} file(s) could not be moved to quarantine or "
                f"duplicates (file {numbers}); the catalog is written: run again to finish"
            )
        z.catalog_pending(batch).unlink(missing_ok=True)
    return IngestResult.from_catalog(batch, df)


def _same_entry(old: dict[str, Any], e: inbox.Entry) -> bool:
    """An earlier row still describes this entry (same kind of thing, same content)."""
    if e.kind != inbox.FILE:
        return old["reason"] == e.kind
    if not old["sha256"]:  # unreadable last time: look again
        return False
    try:
        return bool(old["sha256"] == inbox.sha256_entry(e.path)[0])
    except OSError:
        return False


def _apply_moves(z: Zones, moves: list[tuple[str, Path, Path]], relpaths: list[str]) -> list[int]:
    """Move each entry; the numbers (``file #n``, 1-based in catalog order) of those that failed.

    No exception escapes with a path in it: the entries' folders carry patient names.
    """
    number = {rel: i for i, rel in enumerate(relpaths, 1)}
    failed: list[int] = []
    for rel, src, dst in moves:
        try:
            private_dir(dst.parent, root=z.restricted)
            _move(src, dst)
        except OSError:
            failed.append(number[rel])
    return sorted(failed)


def _write_reasons(df: pd.DataFrame, path: Path) -> None:
    """The quarantine's reasons (0600, atomic); removed when nothing is quarantined."""
    q = df[df["status"] == QUARANTINED]
    if q.empty:
        path.unlink(missing_ok=True)
        return
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["relpath", "reason", "message", "sha256"])
    for r in q.itertuples():
        w.writerow([r.relpath, r.reason, r.message, r.sha256])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"), private=True)


def _read_catalog_table(path: Path) -> pa.Table:
    """One catalog file in :data:`CATALOG_SCHEMA` (older catalogs' UID column names renamed)."""
    table = pq.read_table(path)
    if any(name in _LEGACY_COLUMNS for name in table.column_names):
        table = table.rename_columns([_LEGACY_COLUMNS.get(n, n) for n in table.column_names])
    return table.select(list(CATALOG_COLUMNS)).cast(CATALOG_SCHEMA)


def read_catalog(z: Zones, batch: str | None = None) -> pd.DataFrame:
    """One batch's catalog, or all batches in batch order (empty frame with the schema if none)."""
    paths: list[Path]
    if batch is not None:
        _check_batch_name(batch)
        paths = [z.catalog_file(batch)]
        if not paths[0].exists():
            raise FileNotFoundError(f"no catalog for batch {batch} in {z.catalog}")
    else:
        paths = sorted(z.catalog.glob("*.parquet")) if z.catalog.is_dir() else []
    tables = [_read_catalog_table(p) for p in paths]
    table = pa.concat_tables(tables) if tables else CATALOG_SCHEMA.empty_table()
    # Nullable integers: rows/columns/frames stay integers where some rows lack them.
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def check_ingest(z: Zones, batch: str) -> list[str]:
    """Problems with a batch's books (empty when they add up): every row has a known status, every
    file is where its row says, quarantined rows carry a reason, received == the sum."""
    df = read_catalog(z, batch)
    res = IngestResult.from_catalog(batch, df)
    problems: list[str] = list(res.problems)
    bad_status = set(df["status"]) - {OK, QUARANTINED, DUPLICATE}
    if bad_status:
        problems.append(f"unknown statuses: {sorted(bad_status)}")
    missing = int((~df["path"].map(os.path.lexists)).sum())
    if missing:
        problems.append(f"{missing} catalogued files are not where the catalog says")
    no_reason = int(((df["status"] != OK) & (df["reason"].fillna("") == "")).sum())
    if no_reason:
        problems.append(f"{no_reason} quarantined/duplicate rows without a reason")
    left = len(inbox.entries(z.raw_batch(batch))) - res.catalogued
    if left:
        problems.append(f"{left} files in raw/{batch} not catalogued as ok")
    if z.catalog_pending(batch).exists():
        problems.append("the batch is not fully ingested yet (a run was interrupted)")
    return problems
