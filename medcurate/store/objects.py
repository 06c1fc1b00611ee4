"""A content-addressed object store over fsspec: every file once, under its sha256.

Objects are written to a temporary name and moved into place, and their hash is computed while
the bytes stream, so a half-written or mislabelled object never sits at an address. An object's
address *is* its checksum, which is what lets versions share files and pulls verify them.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from medcurate.config import zones
from medcurate.io import sha256_bytes, sha256_file

CHUNK = 1 << 20
OBJECTS = "objects"
RESERVED_NAMES = frozenset({OBJECTS})


class StoreError(RuntimeError):
    """The store is missing something it should have, or was asked something impossible."""


class TamperedObjectError(StoreError):
    """A stored file's bytes do not match the sha256 it is addressed or listed by."""


class StoreUnavailableError(StoreError):
    """The store URL cannot be opened (unknown protocol, missing driver) or names no store."""


def _redact(url: str) -> str:
    """``proto://user:secret@host/x`` -> ``proto://***@host/x``: credentials never printed."""
    head, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{head}://***@{rest.split('@', 1)[1]}"
    return url


def _check_sha(sha: str) -> str:
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise StoreError(f"not a sha256 hex digest: {sha[:70]!r}")
    return sha


class ObjectStore:
    """A store root: a local folder (the default) or any fsspec URL (``s3://``, ``memory://``)."""

    def __init__(self, url: str | os.PathLike[str], **storage_options: Any) -> None:
        self.url = _redact(str(url))
        try:
            fs, root = fsspec.core.url_to_fs(str(url), **storage_options)
        except (ValueError, ImportError) as exc:
            proto = str(url).partition("://")[0] if "://" in str(url) else "?"
            raise StoreUnavailableError(
                f"cannot open the dataset store {self.url}: protocol {proto!r} is unknown or "
                f"its driver is not installed ({type(exc).__name__}: {exc})"
            ) from None
        self.fs: fsspec.AbstractFileSystem = fs
        self.root: str = root.rstrip("/") or "/"
        self.is_local = isinstance(fs, LocalFileSystem)
        if not self.is_local:
            # fsspec shares one filesystem object per URL and options, listings cached in it: a
            # store opened now must see what other processes wrote since (a release published by
            # one Celery worker, read by the evaluation step on another)
            fs.invalidate_cache()

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    def require_exists(self) -> ObjectStore:
        """This store, or StoreUnavailableError when its root folder does not exist (readers
        call this: a typo in ``--store`` must not read as an empty store)."""
        try:
            ok = bool(self.fs.isdir(self.root))
        except OSError as exc:
            raise StoreUnavailableError(
                f"no dataset store at {self.url}: {type(exc).__name__}"
            ) from None
        if not ok:
            raise StoreUnavailableError(
                f"no dataset store at {self.url}: the folder does not exist (check --store "
                f"or ${STORE_ENV}; publishing creates it)"
            )
        return self

    # paths -------------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def object_path(self, sha: str) -> str:
        _check_sha(sha)
        return self.path(OBJECTS, "sha256", sha[:2], sha)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def listdir(self, path: str) -> list[str]:
        """Names (not paths) of the entries directly under ``path``; empty when it is missing."""
        if not self.fs.exists(path):
            return []
        names = []
        for entry in self.fs.ls(path, detail=False):
            names.append(str(entry).rstrip("/").rsplit("/", 1)[-1])
        return sorted(names)

    # small files -------------------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        try:
            with self.fs.open(path, "rb") as f:
                return bytes(f.read())
        except FileNotFoundError as exc:
            raise StoreError(f"{self.url}: missing {path}") from exc

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a file whole: to a temporary sibling, then moved into place."""
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self._move(tmp, path)

    def _move(self, src: str, dst: str) -> None:
        if self.is_local:
            os.replace(src, dst)
        else:
            self.fs.mv(src, dst)

    # objects -----------------------------------------------------------------------------------
    def has_object(self, sha: str, size: int | None = None) -> bool:
        p = self.object_path(sha)
        if not self.fs.exists(p):
            return False
        return size is None or int(self.fs.size(p)) == size

    def put_file(self, local: str | os.PathLike[str], sha: str | None = None) -> tuple[str, int]:
        """Store a local file under its sha256; returns (sha, bytes written, 0 when present).

        When ``sha`` is given the streamed bytes must hash to it, else TamperedObjectError.
        """
        local = Path(local)
        size = local.stat().st_size
        if sha is None:
            sha = sha256_file(local)
        if self.has_object(sha, size):
            return sha, 0
        dst = self.object_path(sha)
        parent = dst.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        h = hashlib.sha256()
        try:
            with open(local, "rb") as src, self.fs.open(tmp, "wb") as out:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != sha:
                raise TamperedObjectError(
                    f"{local}: sha256 {h.hexdigest()[:12]} does not match the expected "
                    f"{sha[:12]} (the file changed after it was listed)"
                )
            self._move(tmp, dst)
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
        if self.is_local:
            os.chmod(dst, 0o444)
        return sha, size

    def put_bytes(self, data: bytes) -> str:
        sha = sha256_bytes(data)
        if not self.has_object(sha, len(data)):
            self.write_bytes(self.object_path(sha), data)
        return sha

    def iter_object(self, sha: str) -> Iterator[bytes]:
        """The object's bytes in chunks (unverified: callers hash what they consume)."""
        p = self.object_path(sha)
        try:
            f = self.fs.open(p, "rb")
        except FileNotFoundError as exc:
            raise StoreError(f"{self.url}: object {sha[:12]} is missing ({p})") from exc
        with f:
            while chunk := f.read(CHUNK):
                yield bytes(chunk)

    def fetch(self, sha: str, dest: str | os.PathLike[str], on_bytes: Any = None) -> int:
        """Copy an object to a local path, verifying its sha256; nothing lands on a mismatch."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".tmp-{uuid.uuid4().hex}"
        h = hashlib.sha256()
        n = 0
        try:
            with open(tmp, "wb") as out:
                for chunk in self.iter_object(sha):
                    h.update(chunk)
                    out.write(chunk)
                    n += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
            if h.hexdigest() != sha:
                raise TamperedObjectError(
                    f"{self.object_path(sha)}: content hashes to sha256 {h.hexdigest()[:12]}, "
                    f"not its address {sha[:12]} (the store copy is corrupt or was tampered "
                    f"with); refusing to write {dest.name}"
                )
            if dest.exists() or dest.is_symlink():
                dest.unlink()
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
        return n


STORE_ENV = "MEDCURATE_STORE"


def open_store(root: str | os.PathLike[str] | None = None, must_exist: bool = False) -> ObjectStore:
    """The store at ``root``, else at $MEDCURATE_STORE (any fsspec URL), else MEDCURATE_HOME's
    ``releases/`` zone. ``must_exist`` (list, show, pull, load): a missing root is an error."""
    if root is None or str(root) == "":
        root = os.environ.get(STORE_ENV) or None
    if root is None:
        root = zones().releases
    store = ObjectStore(root)
    return store.require_exists() if must_exist else store
