"""Retrieval of studies from the PACS into one claimed raw batch, resumable.

Why it looks like this:

- A series none of whose instances is staged yet comes in one streamed WADO-RS request (each
  part named by the SOPInstanceUID read from it); the others, and parts pydicom cannot read,
  one instance per request, by name.
- Each study is staged under ``restricted/pacs/staging/<study key>/`` (the key is a hash of its
  UID), one file per instance named from a hash of its SOPInstanceUID and written atomically
  (temporary name, then a rename). A run killed half-way leaves only whole instances; the next
  run, whichever pull it is part of, finds them and fetches only the missing ones: nothing is
  fetched twice, nothing is lost.
- A study is complete when every instance the PACS lists for it is on disk and the count equals
  the PACS's NumberOfStudyRelatedInstances. Only complete studies are claimed, all together as
  one batch exactly as the inbox is claimed (:func:`medcurate.ingest.batch_id` over the content
  hashes, the ``.pending`` mark, owner-only ``raw/<batch>/``), one rename per study, so a study is
  either in the batch or still staged, never split.
- Bytes are kept as sent: an instance pydicom cannot parse still reaches the batch and ingest
  quarantines it with a reason. Only transport failures (PacsError) fail a study; a failed study
  is reported by its short key, stays staged for the next run and does not stop the others.
- Names in ``raw/<batch>/`` are ``<study key>/<instance hash>.dcm``: no patient name, no UID.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom

from medcurate import inbox
from medcurate.config import Zones
from medcurate.ingest import new_batch
from medcurate.io import atomic_write_bytes, clean_litter, sha256_file, sha256_text
from medcurate.locks import exclusive
from medcurate.pacs.changes import Cursor, cursor_path, feed_uids
from medcurate.pacs.client import (
    ANSWER,
    INCOMPLETE,
    InstanceRef,
    PacsClient,
    PacsError,
    StudyRef,
    check_exact,
    study_key,
    study_label,
)
from medcurate.perms import private_dir

SOP_TAG = 0x00080018
SUFFIX = ".dcm"
#: a series with at least this many instances, none staged yet, is fetched in one request
STREAM_MIN = 4
#: called after each instance written: (study key, instances written so far in this run)
InstanceHook = Callable[[str, int], None]


def staging_root(zones: Zones) -> Path:
    """``restricted/pacs/staging/``: studies being retrieved."""
    return zones.restricted / "pacs" / "staging"


def staging_dir(zones: Zones, uid: str) -> Path:
    """``restricted/pacs/staging/<sha256(StudyInstanceUID)[:16]>/``."""
    return staging_root(zones) / sha256_text(uid)[:16]


def instance_name(sop_uid: str) -> str:
    """``<sha256(SOPInstanceUID)[:32]>.dcm``: one name per instance, whoever fetches it."""
    return sha256_text(sop_uid)[:32] + SUFFIX


@dataclass
class PullResult:
    """What one pull did. Counts and short keys only (safe for logs and Dagster metadata);
    ``pulled`` holds the UIDs of the studies claimed (identified: never logged)."""

    batch: str | None = None
    studies_pulled: int = 0
    instances: int = 0  # instances claimed into the batch
    fetched: int = 0  # instances fetched by this run
    skipped_existing: int = 0  # already staged by an earlier run
    failed: list[str] = field(default_factory=list)  # short keys of studies not claimed
    problems: list[str] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list, repr=False)

    def summary_line(self) -> str:
        where = f"batch {self.batch}" if self.batch else "no batch"
        failed = f"; failed: {', '.join(self.failed)}" if self.failed else ""
        return (
            f"pulled {self.studies_pulled} studies, {self.instances} instances into {where} "
            f"(fetched {self.fetched}, already staged {self.skipped_existing}){failed}"
        )

    def metadata(self) -> dict[str, Any]:
        return {
            "batch": self.batch or "",
            "studies_pulled": self.studies_pulled,
            "instances": self.instances,
            "fetched": self.fetched,
            "skipped_existing": self.skipped_existing,
            "failed": list(self.failed),
            "problems": list(self.problems),
        }


def _sop_uid(data: bytes) -> str | None:
    """The SOPInstanceUID of one streamed part; None when pydicom cannot read it (the part is
    then fetched on its own, by name, and kept as sent)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=[SOP_TAG])
        return str(ds.SOPInstanceUID)
    except Exception:
        return None


def _stage_study(
    zones: Zones,
    client: PacsClient,
    uid: str,
    label: str,
    result: PullResult,
    on_instance: InstanceHook | None,
) -> Path:
    """Fetch the study's missing instances into its staging folder; returns the folder once the
    study is complete, raises PacsError when it cannot be."""
    ref: StudyRef | None = client.find_study(uid)
    if ref is None:
        raise PacsError(f"{label}: not on the PACS", INCOMPLETE)
    refs = client.study_instances(uid, label)
    if ref.instances is not None and ref.instances != len(refs):
        raise PacsError(
            f"{label}: the PACS lists {len(refs)} instances but counts {ref.instances} "
            "(still arriving?); left for the next run",
            INCOMPLETE,
        )
    folder = private_dir(staging_dir(zones, uid), root=zones.restricted)

    def write(inst: InstanceRef, data: bytes) -> None:
        if not data:
            raise PacsError(f"{label}: the PACS sent an empty instance", ANSWER)
        atomic_write_bytes(folder / instance_name(inst.sop_uid), data, private=True)
        result.fetched += 1
        if on_instance is not None:
            on_instance(ref.key, result.fetched)

    series: dict[str, list[InstanceRef]] = {}
    for inst in refs:
        series.setdefault(inst.series_uid, []).append(inst)
    for series_uid, insts in series.items():
        missing: dict[str, InstanceRef] = {
            i.sop_uid: i for i in insts if not (folder / instance_name(i.sop_uid)).exists()
        }
        result.skipped_existing += len(insts) - len(missing)
        if len(missing) == len(insts) and len(insts) >= STREAM_MIN:  # none yet: one request
            for data in client.iter_series(uid, series_uid, label):
                sop = _sop_uid(data)
                if sop in missing:
                    write(missing.pop(sop), data)
        for inst in missing.values():  # resumed, small, or parts that could not be read
            write(inst, client.retrieve_instance(uid, inst, label))
    absent = [i for i in refs if not (folder / instance_name(i.sop_uid)).exists()]
    if absent or not refs:
        have = len(refs) - len(absent)
        raise PacsError(f"{label}: {have} of {len(refs)} instances on disk", INCOMPLETE)
    return folder


def claim_staged(zones: Zones, folders: Sequence[Path], now: datetime | None = None) -> str:
    """Claim complete staged studies as one batch, as :func:`medcurate.ingest.claim_inbox` claims
    the inbox: id from the content hashes, ``.pending`` mark, then one rename per study."""
    zones.ensure()
    for d in (zones.raw, zones.catalog):
        private_dir(d, root=zones.restricted)
    with exclusive(zones.claim_lock):
        inbox.secure(zones.claim_lock)
        keys = sorted(sha256_file(p) for d in folders for p in d.iterdir() if p.is_file())
        batch = new_batch(zones, keys, now)
        dest = zones.raw_batch(batch)
        for folder in folders:
            inbox.move_entry(folder, dest / folder.name)
    return batch


def pull_studies(
    zones: Zones,
    client: PacsClient,
    study_uids: Sequence[str],
    on_instance: InstanceHook | None = None,
    now: datetime | None = None,
) -> PullResult:
    """Retrieve the studies and claim the complete ones as one batch (see the module docstring).

    Studies are numbered in UID order in messages (``study 2 (a1b2c3d4)``). ``on_instance`` is
    called after each instance written (a progress hook; tests raise from it to kill a run).
    One pull at a time per home: a second one waits for the staging lock.
    """
    result = PullResult()
    root = private_dir(staging_root(zones), root=zones.restricted)
    with exclusive(root / ".lock"):
        inbox.secure(root / ".lock")
        clean_litter(root)  # temporary files of killed runs
        complete: list[Path] = []
        uids = sorted(set(study_uids))
        for number, uid in enumerate(uids, 1):
            label = study_label(uid, number)
            try:
                complete.append(_stage_study(zones, client, uid, label, result, on_instance))
                result.pulled.append(uid)
            except PacsError as exc:
                if exc.fails_everything:
                    raise
                result.failed.append(study_key(uid))
                result.problems.append(str(exc))
            except ValueError:  # not a UID this PACS can be asked about (check_exact)
                result.failed.append(study_key(uid))
                result.problems.append(f"{label}: not a valid StudyInstanceUID")
        if complete:
            result.instances = sum(1 for d in complete for p in d.iterdir() if p.is_file())
            result.batch = claim_staged(zones, complete, now)
            result.studies_pulled = len(complete)
    return result


def read_accessions(path: Path) -> list[str]:
    """Accession numbers from a CSV with an ``AccessionNumber`` column, or one per line.
    Values are never echoed in errors (they identify a patient's exam): they are numbered."""
    text = Path(path).read_text(encoding="utf-8-sig")
    lines = text.splitlines()
    header = next((ln for ln in lines if ln.strip()), "")
    if "AccessionNumber" in next(csv.reader([header]), []):
        rows = csv.DictReader(lines[lines.index(header) :])
        values = [str(r.get("AccessionNumber") or "").strip() for r in rows]
    else:
        values = [ln.strip() for ln in lines]
    found = [v for v in values if v]
    for i, v in enumerate(found, 1):
        check_exact(f"accession number #{i}", v)
    return list(dict.fromkeys(found))


def pull(
    zones: Zones,
    client: PacsClient,
    study: str | None = None,
    since: str | None = None,
    accessions: Path | None = None,
    on_instance: InstanceHook | None = None,
    until: str | None = None,
    modality: str | None = None,
) -> PullResult:
    """``medcurate pacs pull``: one study (``--study UID``), the studies of a date range and/or a
    modality (``--since``/``--until YYYYMMDD``, ``--modality CT``), or those of the accession
    numbers in a file (``--accessions``)."""
    query = since is not None or until is not None or modality is not None
    if sum((study is not None, query, accessions is not None)) != 1:
        raise ValueError(
            "give exactly one of: a study, a query (since/until/modality), an accessions file"
        )
    if study is not None:
        check_exact("StudyInstanceUID", study)
        uids = [study]
    elif query:
        uids = [s.uid for s in client.search_studies(since=since, until=until, modality=modality)]
    else:
        assert accessions is not None
        uids = [s.uid for s in client.search_accessions(read_accessions(accessions))]
    return pull_studies(zones, client, uids, on_instance=on_instance)


def pull_changes(
    zones: Zones,
    client: PacsClient,
    start: str = "now",
    on_instance: InstanceHook | None = None,
) -> PullResult:
    """What a sensor runs: the studies that became stable since the stored cursor, pulled as one
    batch; the cursor then moves past the studies claimed (and those deleted from the PACS since),
    never past a failed one. ``start``: where a first cursor begins (see :meth:`Cursor.load`)."""
    lock = cursor_path(zones, client.name).with_name("cursor.lock")
    private_dir(lock.parent, root=zones.restricted)
    with exclusive(lock):  # two ticks at once would both read the same changes
        cursor = Cursor.load(zones, client, start)
        feed = cursor.read(client)
        uid_of = feed_uids(client, feed)
        result = pull_studies(
            zones, client, [u for u in uid_of.values() if u is not None], on_instance=on_instance
        )
        pulled = set(result.pulled)
        handled = {oid for oid, uid in uid_of.items() if uid is None or uid in pulled}
        cursor.commit(feed, handled, zones)
    return result
