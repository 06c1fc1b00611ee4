"""The content-addressed object store: addresses, idempotent writes, verified reads."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from medcurate.store.objects import ObjectStore, StoreError, TamperedObjectError, open_store


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_put_fetch_roundtrip(tmp_path: Path, kind: str) -> None:
    url = str(tmp_path / "s") if kind == "local" else f"memory://obj-{uuid.uuid4().hex}"
    store = ObjectStore(url)
    src = tmp_path / "a.bin"
    src.write_bytes(b"hello" * 1000)
    sha, n = store.put_file(src)
    assert sha == hashlib.sha256(src.read_bytes()).hexdigest() and n == 5000
    assert store.object_path(sha).endswith(f"objects/sha256/{sha[:2]}/{sha}")
    assert store.put_file(src) == (sha, 0)  # stored once
    out = tmp_path / "out" / "a.bin"
    assert store.fetch(sha, out) == 5000
    assert out.read_bytes() == src.read_bytes()
    assert store.put_bytes(b"xyz") == hashlib.sha256(b"xyz").hexdigest()


def test_put_with_wrong_sha_refused_and_nothing_stored(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "s")
    src = tmp_path / "a.bin"
    src.write_bytes(b"data")
    wrong = "0" * 64
    with pytest.raises(TamperedObjectError):
        store.put_file(src, wrong)
    assert not store.has_object(wrong)
    assert not list((tmp_path / "s").rglob(".tmp-*"))


def test_fetch_of_tampered_object_refused(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "s")
    src = tmp_path / "a.bin"
    src.write_bytes(b"original bytes")
    sha, _ = store.put_file(src)
    p = Path(store.object_path(sha))
    p.chmod(0o644)
    p.write_bytes(b"evil bytes")
    dest = tmp_path / "d" / "a.bin"
    with pytest.raises(TamperedObjectError, match="tampered"):
        store.fetch(sha, dest)
    assert not dest.exists() and not list(dest.parent.glob(".tmp-*"))


def test_missing_object_and_bad_address(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "s")
    with pytest.raises(StoreError, match="missing"):
        store.fetch("a" * 64, tmp_path / "x")
    with pytest.raises(StoreError, match="sha256"):
        store.object_path("../../etc/passwd")


def test_open_store_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDCURATE_STORE", raising=False)
    monkeypatch.setenv("MEDCURATE_HOME", str(tmp_path / "home"))
    assert open_store().root == str(tmp_path / "home" / "releases")
    monkeypatch.setenv("MEDCURATE_STORE", "memory://elsewhere")
    assert not open_store().is_local
    assert open_store(tmp_path / "x").root == str(tmp_path / "x")
