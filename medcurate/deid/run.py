"""Files in, de-identified files out: process pool, verifier, quarantine, crosswalk, manifest.

Every input file ends as exactly one of: a de-identified output under ``dst`` (paths made of the
pseudonym and new UIDs only) or a row in ``reasons.csv`` with its original copied to the
quarantine folder under ``restricted/``. Workers write under temporary names; the parent claims the
final names in input order, so the result is the same for any number of workers.

Images whose pixels may carry burned-in text (projection, ultrasound, secondary capture, photos:
``burnedin``) are read by OCR in the worker, their text blanked and checked again; only what
cannot be cleaned is quarantined (``BURNED_IN``, the message names the code). The boxes blanked
go to ``<manifest>.pixels.json`` and the counts to the metadata. OCR is the costly step: it runs
only on the images the risk rules select, in the workers of the pool, one Tesseract thread each.

One bad file never stops the batch: every per-file step (parse, depth check, engine, encoding,
verifier, write) turns any failure, ``RecursionError`` included, into a quarantine reason. Every
target folder is checked writable before the first output is written, so a bad folder fails the run
cleanly instead of half-way. Litter of killed runs (temporary outputs of processes that are gone) is
removed at the start of the next run, which redoes the batch byte-identically. What goes under
``restricted/`` (quarantined originals, reasons.csv, the crosswalk) is owner-only.

The stage: :func:`run_deid` de-identifies one ingested batch into the zones and
:func:`check_deid` checks its books (no verifier hit; catalogued = written + quarantined). Beyond
one machine the stage is cut in three so a batch spreads over workers (plan, shards, merge: see
:mod:`medcurate.deid.shards`, which builds on this module); :func:`run_deid` is one shard and its
merge, so the bytes are the same for any number of shards.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import signal
import warnings
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom
from pydicom.dataset import Dataset

from medcurate.config import (
    DEID_CROSSWALK,
    DEID_MANIFESTS,
    DEID_REASONS,
    DEID_TREE_MANIFEST,
    ConfigError,
    MissingSaltError,
    Zones,
)
from medcurate.deid.burnedin import PixelResult, clean_pixels, mark_clean
from medcurate.deid.encode import encode
from medcurate.deid.engine import DICOMDIR_SOP_CLASS, Deidentifier
from medcurate.deid.limits import MAX_SEQUENCE_DEPTH, dataset_depth, too_deep
from medcurate.deid.policy import Policy
from medcurate.deid.verify import verify
from medcurate.ingest import OK, read_catalog
from medcurate.io import (
    age_years,
    atomic_write_bytes,
    atomic_write_parquet,
    clean_litter,
    sha256_bytes,
    sha256_file,
)
from medcurate.perms import private_dir
from medcurate.pools import pool_map

MANIFEST_COLUMNS = [
    "path",
    "patient",
    "study_uid",
    "series_uid",
    "sop_uid",
    "frame_of_reference_uid",
    "sop_class_uid",
    "modality",
    "manufacturer",
    "site",
    "sex",
    "age_years",
    "patient_size_m",
    "patient_weight_kg",
    "study_date",
    "series_description",
    "rows",
    "columns",
    "number_of_frames",
    "sha256",
    "source_sha256",
    "profile",
]
REASONS_COLUMNS = ["source", "reason", "message"]
# Quarantine reason codes (``reason`` of reasons.csv; upper case in every room).
UNREADABLE = "UNREADABLE"
SEQUENCE_TOO_DEEP = "SEQUENCE_TOO_DEEP"
NOT_AN_INSTANCE = "NOT_AN_INSTANCE"
DICOMDIR = "DICOMDIR"
BURNED_IN = "BURNED_IN"
DEID_ERROR = "DEID_ERROR"
WRITE_ERROR = "WRITE_ERROR"
VERIFIER_ERROR = "VERIFIER_ERROR"
VERIFIER_HIT = "VERIFIER_HIT"
DUPLICATE_INSTANCE = "DUPLICATE_INSTANCE"
REASONS = (
    UNREADABLE,
    SEQUENCE_TOO_DEEP,
    NOT_AN_INSTANCE,
    DICOMDIR,
    BURNED_IN,
    DEID_ERROR,
    WRITE_ERROR,
    VERIFIER_ERROR,
    VERIFIER_HIT,
    DUPLICATE_INSTANCE,
)


class DeidTargetError(ConfigError):
    """A folder the run must write to cannot be written: raised before any output exists."""


@dataclass
class DeidResult:
    """Counts of one run, the manifest rows, and a one-line summary (counts only, no PHI)."""

    profile: str
    received: int = 0
    written: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    verified_files: int = 0
    verifier_hit_files: int = 0
    verifier_hits: int = 0
    verifier_tokens: int = 0
    pixels_checked: int = 0
    pixels_cleaned: int = 0
    pixel_boxes: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    pixel_rows: list[dict[str, Any]] = field(default_factory=list)
    """Per cleaned output: its path and the boxes blanked (frame, x, y, w, h), never words."""

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def problems(self) -> list[str]:
        """What the blocking check would flag in this run alone."""
        problems = []
        if self.verifier_hit_files:
            problems.append(f"{self.verifier_hit_files} file(s) with verifier hits (quarantined)")
        if self.written + self.quarantined_total != self.received:
            problems.append(
                f"received {self.received} != written {self.written} "
                f"+ quarantined {self.quarantined_total}"
            )
        return problems

    def summary_line(self) -> str:
        q = ", ".join(f"{k} {v}" for k, v in sorted(self.quarantined.items())) or "none"
        return (
            f"deid: {self.received} received, {self.written} written, "
            f"{self.quarantined_total} quarantined ({q}); verifier: {self.verified_files} files "
            f"checked, {self.verifier_hit_files} with hits; profile: {self.profile}"
        )

    def metadata(self) -> dict[str, Any]:
        """PHI-free figures for Dagster metadata."""
        meta: dict[str, Any] = {
            "received": self.received,
            "written": self.written,
            "quarantined": self.quarantined_total,
            "verifier_files_checked": self.verified_files,
            "verifier_files_with_hits": self.verifier_hit_files,
            "verifier_hits": self.verifier_hits,
            "verifier_tokens_checked": self.verifier_tokens,
            "pixels_ocr_checked": self.pixels_checked,
            "pixels_cleaned": self.pixels_cleaned,
            "pixel_boxes_blanked": self.pixel_boxes,
            "patients": len({r["patient"] for r in self.rows}),
            "studies": len({r["study_uid"] for r in self.rows}),
            "profile": self.profile,
        }
        for reason in REASONS:
            meta[f"quarantined_{reason}"] = self.quarantined.get(reason, 0)
        return meta


@dataclass
class _Outcome:
    index: int
    reason: str | None = None
    message: str = ""
    relpath: str = ""
    tmp: str = ""
    row: dict[str, Any] | None = None
    crosswalk: list[tuple[str, str, str]] = field(default_factory=list)
    verified: bool = False
    hits: int = 0
    tokens: int = 0
    pixels: PixelResult | None = None


# -- worker side ------------------------------------------------------------------------------
_ENGINE: Deidentifier | None = None
_DST: Path | None = None
_OWNER = 0  # the parent's pid (a forked worker is not the owner)
_SUFFIX = ""  # temporary outputs are ``<final name><suffix><input index>`` (see ``_tmp_name``)


def _init_worker(salt: bytes, policy: Policy, dst: str, owner: int, suffix: str) -> None:
    global _ENGINE, _DST, _OWNER, _SUFFIX
    if os.getpid() != owner:  # a forked worker: signal handlers the parent set (Dagster's
        # interrupt capture, a test runner's) must not make it ignore the pool's SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _ENGINE = Deidentifier(salt, policy)
    _DST = Path(dst)
    _OWNER = owner
    _SUFFIX = suffix


def _tmp_name(dst: Path, relpath: str, suffix: str, index: int) -> Path:
    """Where a worker puts output ``index`` before it is claimed: ``.tmp<pid>-<i>`` for a
    one-process run (litter once that pid is gone), ``.part-<batch>-<i>`` for a shard (it must
    outlive the shard's process until the merge claims it, on any machine)."""
    final = dst / relpath
    return final.with_name(f"{final.name}{suffix}{index}")


def _process(task: tuple[int, str, str]) -> _Outcome:
    """One file, with pydicom's warnings silenced: they quote element values (PHI) verbatim."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger = logging.getLogger("pydicom")
        level = logger.level
        logger.setLevel(logging.CRITICAL)
        try:
            return _process_quiet(task)
        except Exception as exc:  # never stop the batch; the type only (messages may hold PHI)
            out = _Outcome(task[0])
            out.reason, out.message = _failure(DEID_ERROR, "processing failed", exc)
            return out
        finally:
            logger.setLevel(level)


def _failure(reason: str, what: str, exc: BaseException) -> tuple[str, str]:
    """(reason, PHI-free message) for an exception; too-deep nesting has its own reason."""
    if isinstance(exc, RecursionError):
        return SEQUENCE_TOO_DEEP, f"{what}: sequences nest too deep (RecursionError)"
    return reason, f"{what} ({type(exc).__name__})"


def _process_quiet(task: tuple[int, str, str]) -> _Outcome:
    index, src, rel = task
    assert _ENGINE is not None and _DST is not None
    out = _Outcome(index)
    try:
        data = Path(src).read_bytes()
    except OSError as exc:
        out.reason, out.message = UNREADABLE, f"cannot read file ({type(exc).__name__})"
        return out
    source_sha = sha256_bytes(data)
    deep = too_deep(data)
    if deep:
        out.reason, out.message = SEQUENCE_TOO_DEEP, _TOO_DEEP
        return out
    try:
        ds = pydicom.dcmread(BytesIO(data), force=True)
        if deep is None and dataset_depth(ds) > MAX_SEQUENCE_DEPTH:
            out.reason, out.message = SEQUENCE_TOO_DEEP, _TOO_DEEP
            return out
        sop_class = str(ds.get("SOPClassUID", "") or "")
        has_uids = all(str(ds.get(k, "") or "").strip() for k in _PATH_UIDS)
    except Exception as exc:
        out.reason, out.message = _failure(UNREADABLE, "not parseable as DICOM", exc)
        return out
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        out.reason, out.message = DICOMDIR, "DICOMDIR: regenerate it from the outputs instead"
        return out
    if not sop_class or not has_uids:
        out.reason = NOT_AN_INSTANCE
        out.message = "no SOP class, study, series or instance UID (not a DICOM instance)"
        return out
    try:  # burned-in text: OCR, blank, OCR again (see ``burnedin``); refused when it cannot
        pixels = clean_pixels(ds, _ENGINE.policy)
    except Exception as exc:
        out.reason, out.message = _failure(BURNED_IN, "burned-in text check failed", exc)
        return out
    if pixels.reason is not None:
        out.reason = BURNED_IN
        out.message = f"burned-in text cannot be cleaned ({pixels.message}); review"
        return out
    out.pixels = pixels if pixels.checked else None
    try:
        original_sop = str(ds.SOPInstanceUID)
        info = _ENGINE.deidentify(ds)
        cleaned_uid = mark_clean(ds, pixels, _ENGINE)
        if cleaned_uid is not None:  # the cleaned object is a new instance: the crosswalk says so
            info.crosswalk = [
                (k, o, cleaned_uid if (k, o) == ("SOPInstanceUID", original_sop) else r)
                for k, o, r in info.crosswalk
            ]
        relpath = "/".join(
            (
                info.patient,
                str(ds.StudyInstanceUID),
                str(ds.SeriesInstanceUID),
                f"{ds.SOPInstanceUID}.dcm",
            )
        )
    except Exception as exc:
        out.reason, out.message = _failure(DEID_ERROR, "de-identification failed", exc)
        return out
    try:
        blob = encode(ds)
        row = _manifest_row(ds, relpath, info.patient, info.site, blob, source_sha)
    except Exception as exc:
        out.reason, out.message = _failure(WRITE_ERROR, "cannot encode output", exc)
        return out
    try:
        cleaned = (bytes(ds.PixelData),) if pixels.changed else ()
        result = verify(
            data,
            blob,
            relpath,
            source_name=rel,
            cleaned=cleaned,
            burned_in_allow=_ENGINE.policy.burned_in_allow,
        )
    except Exception as exc:
        out.reason, out.message = _failure(VERIFIER_ERROR, "the verifier failed", exc)
        return out
    out.verified, out.hits, out.tokens = True, result.hits, result.checked
    if not result.clean:
        out.reason, out.message = VERIFIER_HIT, result.describe()
        return out
    tmp = _tmp_name(_DST, relpath, _SUFFIX, index)
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(blob)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        out.reason, out.message = WRITE_ERROR, f"cannot write output ({type(exc).__name__})"
        return out
    out.relpath, out.tmp, out.crosswalk, out.row = relpath, str(tmp), info.crosswalk, row
    return out


_TOO_DEEP = f"sequences nest deeper than {MAX_SEQUENCE_DEPTH} levels"


_PATH_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def _manifest_row(
    ds: Dataset, relpath: str, patient: str, site: str, blob: bytes, source_sha: str
) -> dict[str, Any]:
    def s(kw: str) -> str | None:
        v = ds.get(kw)
        if v is None or v == "":
            return None
        return str(v).strip() or None

    def f(kw: str) -> float | None:
        try:
            v = ds.get(kw)
            return float(v) if v not in (None, "") else None
        except (TypeError, ValueError):
            return None

    def i(kw: str) -> int | None:
        try:
            v = ds.get(kw)
            return int(v) if v not in (None, "") else None
        except (TypeError, ValueError):
            return None

    study_date = s("StudyDate")
    iso = (
        f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:8]}"
        if study_date and len(study_date) == 8
        else None
    )
    assert _ENGINE is not None
    return {
        "path": relpath,
        "patient": patient,
        "study_uid": s("StudyInstanceUID"),
        "series_uid": s("SeriesInstanceUID"),
        "sop_uid": s("SOPInstanceUID"),
        "frame_of_reference_uid": s("FrameOfReferenceUID"),
        "sop_class_uid": s("SOPClassUID"),
        "modality": s("Modality"),
        "manufacturer": s("Manufacturer"),
        "site": site,
        "sex": s("PatientSex"),
        "age_years": age_years(s("PatientAge")),
        "patient_size_m": f("PatientSize"),
        "patient_weight_kg": f("PatientWeight"),
        "study_date": iso,
        "series_description": s("SeriesDescription"),
        "rows": i("Rows"),
        "columns": i("Columns"),
        "number_of_frames": i("NumberOfFrames") or (1 if "PixelData" in ds else None),
        "sha256": sha256_bytes(blob),
        "source_sha256": source_sha,
        "profile": _ENGINE.policy.options.profile_text(),
    }


# -- parent side ------------------------------------------------------------------------------
def deidentify_tree(
    src: Path, dst: Path, restricted: Path, salt: bytes, workers: int = 1
) -> DeidResult:
    """Every file under ``src`` (recursively) -> ``dst``; quarantine and crosswalk -> restricted."""
    _require_salt(salt)
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError("source folder not found (the SRC argument)")
    files = sorted(p for p in src.rglob("*") if p.is_file())
    return deidentify_files(files, dst, restricted, salt, workers=workers, root=src)


def deidentify_files(
    files: list[Path],
    dst: Path,
    restricted: Path,
    salt: bytes,
    workers: int = 1,
    manifest_path: Path | None = None,
    *,
    root: Path | None = None,
    quarantine_dir: Path | None = None,
    crosswalk_path: Path | None = None,
    policy: Policy | None = None,
) -> DeidResult:
    """De-identify ``files``; see the module docstring for where everything goes.

    ``root`` names the folder that source paths in reasons.csv are relative to (default: the
    files' common folder); ``quarantine_dir`` defaults to ``restricted/quarantine`` and
    ``crosswalk_path`` to ``restricted/crosswalk/crosswalk.csv``.
    """
    _require_salt(salt)
    policy = policy or Policy.from_env()
    dst, restricted = Path(dst), Path(restricted)
    quarantine_dir = Path(quarantine_dir) if quarantine_dir else restricted / "quarantine"
    crosswalk_path = (
        Path(crosswalk_path) if crosswalk_path else restricted / "crosswalk" / DEID_CROSSWALK
    )
    manifest_path = Path(manifest_path) if manifest_path else dst / DEID_TREE_MANIFEST
    files = [Path(p) for p in files]
    rels = _relatives(files, root)
    targets = _Targets(dst, restricted, manifest_path, quarantine_dir, crosswalk_path)
    _prepare(targets)
    result = DeidResult(profile=policy.options.profile_text(), received=len(files))
    tasks = [(i, str(p), rels[i]) for i, p in enumerate(files)]
    outcomes = _run(tasks, salt, policy, dst, workers, f".tmp{os.getpid()}-")
    _settle(result, outcomes, files, rels, targets)
    return result


@dataclass(frozen=True)
class _Targets:
    """Where one run writes: outputs, manifest, quarantine (originals + reasons), crosswalk."""

    dst: Path
    restricted: Path
    manifest: Path
    quarantine: Path
    crosswalk: Path


def _relatives(files: list[Path], root: Path | None) -> list[str]:
    """Source paths as reasons.csv names them: relative to ``root`` (default: the files' common
    folder)."""
    if root is None:
        root = Path(os.path.commonpath([str(p.parent) for p in files])) if files else Path(".")
    return [_relative(p, root) for p in files]


def _prepare(t: _Targets, litter: bool = True) -> None:
    """Every target folder created and proved writable; litter of killed runs removed."""
    _prepare_targets(
        {
            "output folder": (t.dst, None),
            "manifest folder": (t.manifest.parent, None),
            "quarantine folder": (t.quarantine, t.restricted),
            "crosswalk folder": (t.crosswalk.parent, t.restricted),
        }
    )
    if litter:
        clean_litter(t.dst)  # outputs only: paths made of pseudonyms and UIDs
    for folder in {t.manifest.parent, t.quarantine, t.crosswalk.parent}:
        clean_litter(folder, recursive=False)  # not quarantined originals: their own names


def _settle(
    result: DeidResult, outcomes: list[_Outcome], files: list[Path], rels: list[str], t: _Targets
) -> None:
    """Claim final names in input order (the first of two inputs with one SOP instance wins),
    quarantine the refused, write reasons, crosswalk, manifest and pixel record. Input order
    alone decides, so the bytes are the same for any number of workers or shards."""
    claimed: set[str] = set()
    crosswalk: set[tuple[str, str, str]] = set()
    reasons: list[tuple[str, str, str]] = []
    for o in sorted(outcomes, key=lambda o: o.index):
        result.verified_files += o.verified
        result.verifier_tokens += o.tokens
        result.pixels_checked += o.pixels is not None
        if o.hits:
            result.verifier_hit_files += 1
            result.verifier_hits += o.hits
        if o.reason is None and o.relpath in claimed:
            Path(o.tmp).unlink(missing_ok=True)
            o.reason, o.message = DUPLICATE_INSTANCE, "same SOP instance as an earlier input"
        if o.reason is None:
            assert o.row is not None
            try:
                _claim(o.tmp, t.dst / o.relpath, o.row["sha256"])
            except OSError as exc:
                Path(o.tmp).unlink(missing_ok=True)
                o.reason, o.message = WRITE_ERROR, f"cannot write output ({type(exc).__name__})"
        if o.reason is not None:
            result.quarantined[o.reason] += 1
            reasons.append((rels[o.index], o.reason, o.message))
            _quarantine_copy(files[o.index], t.quarantine, "files/" + rels[o.index])
            continue
        claimed.add(o.relpath)
        assert o.row is not None
        result.rows.append(o.row)
        if o.pixels is not None and o.pixels.changed:
            result.pixels_cleaned += 1
            result.pixel_boxes += len(o.pixels.boxes)
            result.pixel_rows.append(
                {"path": o.relpath, "boxes": [list(b) for b in o.pixels.boxes]}
            )
        crosswalk.update(o.crosswalk)
        result.written += 1

    _write_reasons(t.quarantine / DEID_REASONS, reasons)
    _write_crosswalk(t.crosswalk, crosswalk)
    write_manifest(t.manifest, result.rows)
    write_pixel_record(pixel_record_path(t.manifest), result.pixel_rows)


def _claim(tmp: str, final: Path, sha: str) -> None:
    """A worker's output to its final name. Already there with the same bytes and no temporary
    left counts as claimed: a merge re-run after it was killed half-way."""
    try:
        os.replace(tmp, final)
    except FileNotFoundError:
        if not (final.is_file() and sha256_file(final) == sha):
            raise


def pixel_record_path(manifest_path: Path) -> Path:
    """``<manifest>.pixels.json`` beside the manifest (not a parquet: manifests are globbed)."""
    return manifest_path.with_name(manifest_path.stem + ".pixels.json")


def write_pixel_record(path: Path, rows: list[dict[str, Any]]) -> None:
    """What the burned-in step blanked, per output path: boxes (frame, x, y, w, h), no words."""
    body = {"boxes": "frame,x,y,width,height", "cleaned": sorted(rows, key=lambda r: r["path"])}
    atomic_write_bytes(path, (json.dumps(body, sort_keys=True, indent=1) + "\n").encode())


def _prepare_targets(targets: dict[str, tuple[Path, Path | None]]) -> None:
    """Create every target folder (owner-only under ``restricted``) and prove it writable, so
    that a bad folder stops the run before any output exists. The error names the folder's role
    and the error type: no source path."""
    for role, (folder, restricted) in targets.items():
        probe = folder / f".write-probe-{os.getpid()}"
        try:
            if restricted is not None and restricted in (folder, *folder.parents):
                private_dir(folder, root=restricted)
            else:
                folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise DeidTargetError(
                f"deid: the {role} cannot be written ({type(exc).__name__}); nothing was "
                "written or quarantined: fix the folder and run again"
            ) from None


def _run(
    tasks: list[tuple[int, str, str]],
    salt: bytes,
    policy: Policy,
    dst: Path,
    workers: int,
    suffix: str,
) -> list[_Outcome]:
    owner = os.getpid()
    initargs = (salt, policy, str(dst), owner, suffix)
    if workers <= 1 or len(tasks) < 2:
        _init_worker(*initargs)
        return [_process(t) for t in tasks]
    return pool_map(_process, tasks, workers, _init_worker, initargs, ordered=False)


def _require_salt(salt: bytes) -> None:
    if not salt:
        raise MissingSaltError(
            "MEDCURATE_DEID_SALT is not set: de-identification needs a secret salt; "
            "no file was touched."
        )


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def _quarantine_copy(src: Path, quarantine_dir: Path, rel: str) -> None:
    """The original, owner-only, under the (owner-only) quarantine folder."""
    target = quarantine_dir / rel
    with contextlib.suppress(OSError):  # reasons.csv still records it; the original stays put
        private_dir(target.parent, root=quarantine_dir)
        atomic_write_bytes(target, src.read_bytes(), private=True)


def _csv_bytes(header: list[str], rows: Any) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _write_reasons(path: Path, rows: list[tuple[str, str, str]]) -> None:
    atomic_write_bytes(path, _csv_bytes(REASONS_COLUMNS, rows), private=True)


def _write_crosswalk(path: Path, rows: set[tuple[str, str, str]]) -> None:
    """original -> pseudonym/new UID, for an honest broker; merged with what is already there."""
    existing: set[tuple[str, str, str]] = set()
    if path.exists():
        with open(path, newline="", encoding="utf-8") as fh:
            existing = {(r[0], r[1], r[2]) for r in list(csv.reader(fh))[1:] if len(r) == 3}
    header = ["kind", "original", "replacement"]
    atomic_write_bytes(path, _csv_bytes(header, sorted(existing | rows)), private=True)


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    """The manifest, sorted by path, with fixed column types (a killed run leaves no half
    table)."""
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    if len(df):
        df = df.sort_values("path", kind="stable").reset_index(drop=True)
    for col in ("age_years", "patient_size_m", "patient_weight_kg"):
        df[col] = df[col].astype("float64")
    for col in ("rows", "columns", "number_of_frames"):
        df[col] = df[col].astype("Int64")
    for col in set(MANIFEST_COLUMNS) - {
        "age_years",
        "patient_size_m",
        "patient_weight_kg",
        "rows",
        "columns",
        "number_of_frames",
    }:
        df[col] = df[col].astype("string")
    atomic_write_parquet(df, path)


def read_deid_manifest(root: Path | Zones, batch: str | None = None) -> pd.DataFrame:
    """The manifest of one batch (``deid/manifests/<batch>.parquet``), or of all batches together.

    ``root`` is the zones or a deid folder of the same layout. Falls back to ``deid.parquet`` at
    the root (the layout of ``medcurate deid SRC DST``) when no batch manifests exist.
    """
    if isinstance(root, Zones):
        folder, manifests = root.deid, root.deid_manifests
        if batch is not None:
            return pd.read_parquet(root.deid_manifest(batch))
    else:
        folder = Path(root)
        manifests = folder / DEID_MANIFESTS
        if batch is not None:
            return pd.read_parquet(manifests / f"{batch}.parquet")
    parts = sorted(manifests.glob("*.parquet")) if manifests.is_dir() else []
    if not parts:
        single = folder / DEID_TREE_MANIFEST
        if single.exists():
            return pd.read_parquet(single)
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


# -- the stage --------------------------------------------------------------------------------
#: files a batch needs before ``workers=0`` starts a pool (a forked worker costs a few tens of
#: milliseconds; a file about four)
POOL_MIN_FILES = 64
#: the most workers ``workers=0`` starts (each holds one file and one engine at a time)
MAX_AUTO_WORKERS = 4


def auto_workers(n_files: int) -> int:
    """Workers for ``workers=0``: one per CPU this process may use (at most
    :data:`MAX_AUTO_WORKERS`) when the batch has :data:`POOL_MIN_FILES` files, else 1. On the
    demo's 1,170 files, 2 cores: 4.7 s in this process, 2.5 s with 2 workers, same bytes."""
    if n_files < POOL_MIN_FILES:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_AUTO_WORKERS, cpus or 1))


def run_deid(z: Zones, batch: str, salt: bytes, workers: int = 1) -> DeidResult:
    """The de-identification stage: the batch's catalogued (``ok``) files -> ``deid/``, with
    ``deid/manifests/<batch>.parquet``; refusals under ``restricted/quarantine/deid/<batch>/``,
    the crosswalk in ``restricted/crosswalk/<batch>.csv``. ``workers=0``: :func:`auto_workers`
    (outputs are the same for any number). One shard and its merge: the same bytes as any
    number of shards run by :func:`~medcurate.deid.shards.deid_shard` and joined by
    :func:`~medcurate.deid.shards.merge_deid`."""
    from medcurate.deid.shards import deid_shard, merge_deid  # shards builds on this module

    _require_salt(salt)  # before any file is touched
    deid_shard(z, batch, salt, 0, 1, workers=workers)
    return merge_deid(z, batch, 1)


@dataclass
class DeidBooks:
    """One batch's de-identification books, read back from its files (counts only, no PHI)."""

    written: int
    catalogued_ok: int
    quarantined: Counter[str]

    @property
    def verifier_hit_files(self) -> int:
        return self.quarantined.get(VERIFIER_HIT, 0)

    @property
    def balanced(self) -> bool:
        return self.written + sum(self.quarantined.values()) == self.catalogued_ok

    @property
    def problems(self) -> list[str]:
        problems = []
        if self.verifier_hit_files:
            problems.append(
                f"the verifier found removed values in {self.verifier_hit_files} file(s)"
            )
        if not self.balanced:
            problems.append(
                f"written {self.written} + quarantined {sum(self.quarantined.values())} "
                f"!= catalogued ok {self.catalogued_ok}"
            )
        return problems

    def metadata(self) -> dict[str, Any]:
        return {
            "verifier_hit_files": self.verifier_hit_files,
            "written": self.written,
            "quarantined": sum(self.quarantined.values()),
            "catalogued_ok": self.catalogued_ok,
            "balanced": self.balanced,
        }


def deid_books(z: Zones, batch: str) -> DeidBooks:
    """Read a batch's books: its manifest, its reasons.csv and its catalog."""
    reasons: Counter[str] = Counter()
    path = z.deid_reasons(batch)
    if path.exists():
        with open(path, newline="", encoding="utf-8") as fh:
            reasons.update(r["reason"].upper() for r in csv.DictReader(fh))  # older: lower case
    catalog = read_catalog(z, batch)
    return DeidBooks(
        written=len(read_deid_manifest(z, batch)),
        catalogued_ok=int((catalog["status"] == OK).sum()),
        quarantined=reasons,
    )


def check_deid(z: Zones, batch: str) -> list[str]:
    """Problems with a batch's de-identification (empty when none): a verifier hit, or a
    catalogued file neither written nor quarantined with a reason."""
    return deid_books(z, batch).problems
