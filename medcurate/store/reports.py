"""Reports attached to a released version after the fact: evaluation, augmentation.

A version is immutable, but what is learnt by using it (a baseline's metrics per subgroup, what
augmentation did) belongs in its dataset card. Reports therefore live beside the version, never
inside it: ``<dataset>/reports/<vN>/<kind>/``, each with a ``report.json`` that names the version
it was made from (its id and manifest digest) and the sha256 of every file, written last as the
commit marker, and a ``report.sig`` under the store key when one is set. The version's id, files
and signature never change; :func:`full_card` is ``card.md`` followed by the reports' sections.

Re-attaching a report of the same kind replaces it whole (a re-evaluation supersedes the old one).
A report whose digest names another version, whose files do not match, or whose signature fails
under a store key is refused on reading.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from medcurate.io import sha256_bytes
from medcurate.store import signing
from medcurate.store.objects import ObjectStore, StoreError, TamperedObjectError
from medcurate.store.publish import VersionInfo, read_version_file

REPORTS = "reports"
REPORT_JSON = "report.json"
REPORT_SIG = "report.sig"
SECTION = "section.md"  # the markdown a report adds to the dataset card
_KIND = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CONTEXT = b"medcurate-store-report-v1\n"


@dataclass(frozen=True)
class Report:
    """One attached report: its kind, the version it describes and its files' sha256."""

    kind: str
    dataset: str
    version: str
    version_id: str
    digest: str
    files: dict[str, str]

    def to_json(self) -> bytes:
        doc = {
            "kind": self.kind,
            "dataset": self.dataset,
            "version": self.version,
            "version_id": self.version_id,
            "digest": self.digest,
            "files": dict(sorted(self.files.items())),
        }
        return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()


def _folder(store: ObjectStore, info: VersionInfo, kind: str) -> str:
    if not _KIND.match(kind):
        raise StoreError(f"invalid report kind {kind!r} (lower-case letters, digits, '-')")
    return store.path(info.dataset, REPORTS, info.version, kind)


def _signature(report_json: bytes, key: bytes) -> bytes:
    mac = hmac.new(key, _CONTEXT + report_json, hashlib.sha256).hexdigest()
    doc = {"alg": signing.ALG, "key_id": signing.key_id(key), "mac": mac}
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()


def attach_report(
    store: ObjectStore, info: VersionInfo, kind: str, files: Mapping[str, bytes]
) -> Report:
    """Attach ``files`` (flat names -> bytes; ``section.md`` is what the card shows) as the
    ``kind`` report of ``info``, replacing an earlier one of that kind."""
    key = signing.store_key()
    bad = [n for n in files if not _FILE.match(n) or n in (REPORT_JSON, REPORT_SIG)]
    if bad:
        raise StoreError(f"a report may not hold a file named {bad[0]!r}")
    report = Report(
        kind,
        info.dataset,
        info.version,
        info.id,
        info.digest,
        {n: sha256_bytes(b) for n, b in files.items()},
    )
    docs = dict(files)
    docs[REPORT_JSON] = report.to_json()
    if key is not None:
        docs[REPORT_SIG] = _signature(docs[REPORT_JSON], key)
    folder = _folder(store, info, kind)
    if store.is_local:
        _replace_local(Path(folder), docs)
    else:
        if store.exists(folder):
            store.fs.rm(folder, recursive=True)
        for name in sorted(docs, key=lambda n: n == REPORT_JSON):  # commit marker last
            store.write_bytes(f"{folder}/{name}", docs[name])
    return report


def _replace_local(final: Path, docs: Mapping[str, bytes]) -> None:
    """Build the report in a sibling folder and swap it in, so a reader never sees half."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    old = final.parent / f".old-{uuid.uuid4().hex}"
    try:
        for name, data in docs.items():
            (staging / name).write_bytes(data)
            os.chmod(staging / name, 0o444)
        if final.exists():
            os.rename(final, old)
        os.rename(staging, final)
    finally:
        for p in (staging, old):
            if p.exists():
                shutil.rmtree(p)


def read_report(store: ObjectStore, info: VersionInfo, kind: str) -> Report:
    """The verified ``kind`` report of ``info`` (StoreError when none is attached)."""
    folder = _folder(store, info, kind)
    if not store.exists(f"{folder}/{REPORT_JSON}"):
        raise StoreError(f"{info.ref} has no {kind} report")
    raw = store.read_bytes(f"{folder}/{REPORT_JSON}")
    try:
        report = Report(**json.loads(raw))
    except (ValueError, TypeError):
        raise StoreError(f"{info.ref}: the {kind} report's {REPORT_JSON} is malformed") from None
    if (report.kind, report.dataset, report.version, report.digest) != (
        kind,
        info.dataset,
        info.version,
        info.digest,
    ):
        raise TamperedObjectError(
            f"{info.ref}: the {kind} report was made from another version ({report.version_id})"
        )
    _verify_signature(store, info, kind, folder, raw)
    return report


def _verify_signature(
    store: ObjectStore, info: VersionInfo, kind: str, folder: str, raw: bytes
) -> None:
    key = signing.store_key()
    if key is None:
        return
    sig = f"{folder}/{REPORT_SIG}"
    if not store.exists(sig):
        raise signing.SignatureError(
            f"{info.ref}: the {kind} report is unsigned and {signing.KEY_ENV} is set: refusing it"
        )
    try:
        mac = json.loads(store.read_bytes(sig))["mac"]
    except (ValueError, KeyError, TypeError):
        raise signing.SignatureError(
            f"{info.ref}: the {kind} report's signature is malformed"
        ) from None
    if not isinstance(mac, str) or not hmac.compare_digest(
        mac, json.loads(_signature(raw, key))["mac"]
    ):
        raise signing.SignatureError(
            f"{info.ref}: the {kind} report's signature does not match {signing.KEY_ENV}"
        )


def read_report_file(store: ObjectStore, info: VersionInfo, kind: str, name: str) -> bytes:
    """One file of a verified report, checked against its sha256."""
    report = read_report(store, info, kind)
    if name not in report.files:
        raise StoreError(f"{info.ref}: the {kind} report has no file {name!r}")
    data = store.read_bytes(f"{_folder(store, info, kind)}/{name}")
    if sha256_bytes(data) != report.files[name]:
        raise TamperedObjectError(
            f"{info.ref}: {name} of the {kind} report was modified after it was attached"
        )
    return data


def list_reports(store: ObjectStore, info: VersionInfo) -> list[str]:
    """Kinds of the reports attached to ``info`` (committed ones: with a report.json)."""
    base = store.path(info.dataset, REPORTS, info.version)
    return [
        k
        for k in store.listdir(base)
        if _KIND.match(k) and store.exists(f"{base}/{k}/{REPORT_JSON}")
    ]


def full_card(store: ObjectStore, info: VersionInfo) -> str:
    """The dataset card: the version's ``card.md`` followed by each report's section."""
    card = read_version_file(store, info, "card.md").decode().rstrip("\n")
    parts = [card]
    for kind in list_reports(store, info):
        if SECTION in read_report(store, info, kind).files:
            parts.append(read_report_file(store, info, kind, SECTION).decode().rstrip("\n"))
    return "\n\n".join(parts) + "\n"
