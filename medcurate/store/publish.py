"""Publishing immutable versions atomically, and finding them again.

Order of a publish: objects first (content-addressed, so writing one twice is harmless and an
orphan from a crash is only garbage), then the version folder. On a local store the folder is
built under ``<dataset>/.staging/`` and renamed into place in one step; on object stores, where no
folder rename exists, ``version.json`` is written last and is the commit marker: a folder without
it is not a version, is never listed, and is replaced by the next publish. Either way a crash at
any point leaves no partial version, and the re-run publishes the same digest because nothing
time- or run-dependent enters the manifest.

On a local store a publish holds the dataset's cross-process lock (``<dataset>/.publish.lock``)
from choosing the version number to the commit, so two writers queue instead of racing, and the
lock holder may clear the ``.staging`` litter of killed publishes. Object stores have no lock: a
single writer per dataset is assumed there, and the commit refuses to overwrite a version.
Manifest paths are checked before anything is written (see ``paths``); with a store key the
version is signed (see ``signing``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medcurate.io import sha256_bytes
from medcurate.locks import exclusive
from medcurate.store import signing
from medcurate.store.litter import STAGING, clean_publish_litter
from medcurate.store.manifest import (
    file_entries,
    manifest_bytes,
    manifest_digest,
    normalise_manifest,
    read_manifest,
)
from medcurate.store.objects import RESERVED_NAMES, ObjectStore, StoreError, TamperedObjectError
from medcurate.store.paths import check_manifest, unsafe_reason

VERSION_JSON = "version.json"
MANIFEST = "manifest.parquet"
LOCK = ".publish.lock"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_VERSION = re.compile(r"^v([1-9][0-9]*)$")


@dataclass(frozen=True)
class VersionInfo:
    """What ``version.json`` holds: the id is ``vN-<first 12 hex of the manifest digest>``."""

    dataset: str
    version: str
    digest: str
    n_samples: int
    files: dict[str, str] = field(default_factory=dict)
    previous: str | None = None

    @property
    def number(self) -> int:
        return int(self.version[1:])

    @property
    def id(self) -> str:
        return f"{self.version}-{self.digest[:12]}"

    @property
    def ref(self) -> str:
        return f"{self.dataset}@{self.version}"

    def to_json(self) -> bytes:
        d = asdict(self)
        d["id"] = self.id
        return (json.dumps(d, sort_keys=True, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> VersionInfo:
        try:
            d = json.loads(data)
            d.pop("id", None)
            info = cls(**d)
        except (ValueError, TypeError, AttributeError):
            raise StoreError("version.json is malformed (not the fields of a version)") from None
        problem = info._problem()
        if problem:
            raise StoreError(f"version.json is malformed ({problem})")
        return info

    def _problem(self) -> str | None:
        """What is wrong with the fields' types and shapes, if anything."""
        if not isinstance(self.dataset, str) or not _NAME.match(self.dataset):
            return "dataset"
        if not isinstance(self.version, str) or not _VERSION.match(self.version):
            return "version"
        if self.previous is not None and not (
            isinstance(self.previous, str) and _VERSION.match(self.previous)
        ):
            return "previous"
        if not _is_sha(self.digest) or not isinstance(self.n_samples, int):
            return "digest or n_samples"
        if not isinstance(self.files, dict):
            return "files"
        for name, sha in self.files.items():
            bad = unsafe_reason(name, single=True) or (name in _NOT_DOCS and "reserved")
            if bad or not _is_sha(sha):
                return f"a document name or hash in files: {bad or 'hash'}"
        return None


def _is_sha(v: object) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


_NOT_DOCS = frozenset({VERSION_JSON, signing.SIGNATURE, LOCK})


@dataclass(frozen=True)
class PublishResult:
    info: VersionInfo
    created: bool
    objects_written: int
    bytes_written: int


def check_name(name: str) -> str:
    if not _NAME.match(name) or name in RESERVED_NAMES:
        raise StoreError(f"invalid dataset name {name!r} (letters, digits, '._-'; not 'objects')")
    return name


def list_datasets(store: ObjectStore) -> list[str]:
    """Datasets with at least one committed version."""
    out = []
    for name in store.listdir(store.root):
        if name in RESERVED_NAMES or not _NAME.match(name):
            continue
        if list_versions(store, name):
            out.append(name)
    return out


def list_versions(store: ObjectStore, dataset: str) -> list[VersionInfo]:
    """Committed versions (those with version.json), oldest first."""
    check_name(dataset)
    found = []
    for name in store.listdir(store.path(dataset)):
        m = _VERSION.match(name)
        if m and store.exists(store.path(dataset, name, VERSION_JSON)):
            found.append((int(m.group(1)), name))
    return [read_info(store, dataset, v) for _, v in sorted(found)]


def latest_version(store: ObjectStore, dataset: str) -> VersionInfo | None:
    """The newest committed version of ``dataset``, or None when it has none yet."""
    versions = list_versions(store, dataset)
    return versions[-1] if versions else None


def read_info(store: ObjectStore, dataset: str, version: str) -> VersionInfo:
    p = store.path(dataset, version, VERSION_JSON)
    if not store.exists(p):
        raise StoreError(f"{dataset}@{version} does not exist in {store.url}")
    try:
        info = VersionInfo.from_json(store.read_bytes(p))
    except StoreError as exc:
        raise StoreError(f"{dataset}@{version}: {exc}") from None
    if (info.dataset, info.version) != (dataset, version):
        raise TamperedObjectError(
            f"{dataset}@{version}: version.json names another version (copied from elsewhere?)"
        )
    return info


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME``, ``NAME@latest`` or ``NAME@vN`` -> (name, version or None for latest)."""
    name, _, version = ref.partition("@")
    check_name(name)
    if version in ("", "latest"):
        return name, None
    if not _VERSION.match(version):
        raise StoreError(f"invalid version {version!r} in {ref!r}: expected vN, e.g. v1")
    return name, version


def resolve(store: ObjectStore, ref: str) -> VersionInfo:
    """The version a reference names (the newest for ``NAME`` or ``NAME@latest``)."""
    name, version = parse_ref(ref)
    if version is not None:
        return read_info(store, name, version)
    versions = list_versions(store, name)
    if not versions:
        raise StoreError(f"dataset {name!r} has no versions in {store.url}")
    return versions[-1]


def read_version_file(store: ObjectStore, info: VersionInfo, name: str) -> bytes:
    """A file of a version folder, checked against the sha256 recorded in version.json."""
    data = store.read_bytes(store.path(info.dataset, info.version, name))
    want = info.files.get(name)
    if want is None:
        raise StoreError(f"{info.ref}: {name} is not part of this version")
    if sha256_bytes(data) != want:
        raise TamperedObjectError(
            f"{store.path(info.dataset, info.version, name)}: sha256 does not match version.json "
            "(the version was modified after publishing)"
        )
    return data


def signature_status(store: ObjectStore, info: VersionInfo) -> str:
    """``signing.VERIFIED``, ``UNSIGNED`` or ``NOT_VERIFIED``; SignatureError when a store key is
    set and the version is unsigned or signed with another key or modified after signing."""
    folder = store.path(info.dataset, info.version)
    return signing.verify(store, info.ref, folder, info.to_json())


def load_manifest(store: ObjectStore, info: VersionInfo) -> pd.DataFrame:
    """The verified manifest of a version: signature (when a store key is set), file hash,
    manifest digest, and every path it lists (relative, inside the version's folder)."""
    signature_status(store, info)
    df = read_manifest(read_version_file(store, info, MANIFEST))
    if manifest_digest(df) != info.digest:
        raise TamperedObjectError(f"{info.ref}: manifest digest does not match version.json")
    check_manifest(info.ref, df)
    return df


Renderer = Callable[[VersionInfo, pd.DataFrame], Mapping[str, bytes]]


def publish(
    store: ObjectStore,
    dataset: str,
    manifest: pd.DataFrame,
    sources: Mapping[str, str | os.PathLike[str]],
    render: Renderer | None = None,
) -> PublishResult:
    """Publish a manifest and its files as the next version, atomically.

    ``sources`` maps each sha256 the manifest lists to a local file; ``render`` returns extra
    documents for the version folder (``dataset.json``, ``card.md``) given its VersionInfo. When
    the newest version already has this manifest digest, nothing is written and it is returned.
    """
    check_name(dataset)
    key = signing.store_key()  # a bad key fails before anything is written
    manifest = normalise_manifest(manifest)
    check_manifest(f"{dataset} (to publish)", manifest)
    with _publish_lock(store, dataset):
        clean_publish_litter(store, dataset)
        return _publish_locked(store, dataset, manifest, sources, render, key)


def _publish_lock(store: ObjectStore, dataset: str) -> contextlib.AbstractContextManager[None]:
    if not store.is_local:
        return contextlib.nullcontext()
    return exclusive(Path(store.path(dataset, LOCK)))


def _publish_locked(
    store: ObjectStore,
    dataset: str,
    manifest: pd.DataFrame,
    sources: Mapping[str, str | os.PathLike[str]],
    render: Renderer | None,
    key: bytes | None,
) -> PublishResult:
    digest = manifest_digest(manifest)
    versions = list_versions(store, dataset)
    if versions and versions[-1].digest == digest:
        return PublishResult(versions[-1], created=False, objects_written=0, bytes_written=0)
    entries = file_entries(manifest)
    missing = sorted({sha for _, sha, _ in entries} - set(sources))
    if missing:
        raise StoreError(f"no source file for {len(missing)} listed object(s), e.g. {missing[0]}")

    n_written = bytes_written = 0
    for sha in sorted({sha for _, sha, _ in entries}):
        _, n = store.put_file(sources[sha], sha)
        n_written += n > 0
        bytes_written += n

    number = versions[-1].number + 1 if versions else 1
    version = f"v{number}"
    docs: dict[str, bytes] = {MANIFEST: manifest_bytes(manifest)}
    info = VersionInfo(
        dataset=dataset,
        version=version,
        digest=digest,
        n_samples=len(manifest),
        previous=versions[-1].version if versions else None,
    )
    if render is not None:
        for name, data in render(info, manifest).items():
            if name in (MANIFEST, *_NOT_DOCS) or unsafe_reason(name, single=True):
                raise StoreError(f"a renderer may not write {name!r}")
            docs[name] = data
    info = VersionInfo(
        dataset=dataset,
        version=version,
        digest=digest,
        n_samples=len(manifest),
        files={k: sha256_bytes(v) for k, v in sorted(docs.items())},
        previous=info.previous,
    )
    docs[VERSION_JSON] = info.to_json()
    if key is not None:  # outside version.json: the id and the other bytes do not change
        docs[signing.SIGNATURE] = signing.signature_bytes(docs[VERSION_JSON], key)
    _commit(store, dataset, version, docs)
    return PublishResult(info, created=True, objects_written=n_written, bytes_written=bytes_written)


def _commit(store: ObjectStore, dataset: str, version: str, docs: Mapping[str, bytes]) -> None:
    final = store.path(dataset, version)
    if store.exists(store.path(dataset, version, VERSION_JSON)):
        raise StoreError(f"{dataset}@{version} already exists; versions are immutable")
    order = [k for k in docs if k != VERSION_JSON] + [VERSION_JSON]  # commit marker last
    if store.is_local:
        staging_root = Path(store.path(dataset, STAGING))
        staging = staging_root / f"{version}-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            for name in order:
                (staging / name).write_bytes(docs[name])
                os.chmod(staging / name, 0o444)
            if Path(final).exists():  # an uncommitted leftover (no version.json): not a version
                _rmtree(Path(final))
            os.rename(staging, final)
        finally:
            if staging.exists():
                _rmtree(staging)
            if staging_root.exists() and not any(staging_root.iterdir()):
                staging_root.rmdir()
    else:
        if store.exists(final):
            store.fs.rm(final, recursive=True)
        for name in order:
            store.write_bytes(store.path(dataset, version, name), docs[name])


def _rmtree(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()
    path.rmdir()


def version_summary(store: ObjectStore, info: VersionInfo) -> dict[str, Any]:
    """Counts of a version for ``show``: samples per split and label, patients, bytes."""
    m = load_manifest(store, info)
    files = file_entries(m)
    return {
        "id": info.id,
        "dataset": info.dataset,
        "version": info.version,
        "digest": info.digest,
        "previous": info.previous,
        "samples": len(m),
        "patients": int(m["patient"].nunique()),
        "files": len(files),
        "bytes": sum(b for _, _, b in files),
        "splits": {str(k): int(v) for k, v in m["split"].value_counts().sort_index().items()},
        "labels": {str(k): int(v) for k, v in m["label"].value_counts().sort_index().items()},
        "synthetic": int(m["synthetic"].sum()),
        "signature": signature_status(store, info),
    }
