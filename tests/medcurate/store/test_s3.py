"""The dataset store on S3 (s3fs against the managed moto server on loopback) releases the same
version, byte for byte, as the local store, and pulls from it verify like local pulls.

The store gets no S3 setting of its own: the endpoint and the dummy credentials reach s3fs
through the environment (``AWS_ENDPOINT_URL`` ...), as they would for a user's real bucket.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import s3fs
from typer.testing import CliRunner

from medcurate.cli import app
from medcurate.services import s3local
from medcurate.splits import SplitConfig, assign_splits
from medcurate.store.manifest import curate_samples
from medcurate.store.objects import (
    STORE_ENV,
    ObjectStore,
    StoreUnavailableError,
    TamperedObjectError,
    open_store,
)
from medcurate.store.publish import PublishResult, list_versions, load_manifest, signature_status
from medcurate.store.pull import PULL_LOCK, pull
from medcurate.store.release import release_dataset
from medcurate.store.signing import KEY_ENV, VERIFIED

runner = CliRunner()
STORE_KEY = hashlib.sha256(b"medcurate s3 test store key, not a secret").hexdigest()
LOCAL_ONLY = {".publish.lock"}  # the cross-process lock of a local store (object stores: none)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3local.S3Server]:
    """One moto server for the module, its endpoint in the environment of every test."""
    home = tmp_path_factory.mktemp("s3home")
    server = s3local.start(home)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in server.client_env().items():
                mp.setenv(name, value)
            s3fs.S3FileSystem.clear_instance_cache()  # a cached client knows an older endpoint
            yield server
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        s3local.stop(home)


def _s3_url(s3: s3local.S3Server, request: pytest.FixtureRequest) -> str:
    return s3.store_url(f"{request.node.name}/releases")  # one prefix per test


def _files(store: ObjectStore) -> dict[str, bytes]:
    """Every file under the store root: path relative to the root -> bytes."""
    out = {}
    for path in store.fs.find(store.root):
        rel = str(path)[len(store.root) :].lstrip("/")
        if rel.rsplit("/", 1)[-1] not in LOCAL_ONLY:
            out[rel] = store.read_bytes(str(path))
    return out


def _folder(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != PULL_LOCK
    }


def _release(
    store: ObjectStore, root: Path, cohort: tuple[pd.DataFrame, pd.DataFrame]
) -> PublishResult:
    assigned = assign_splits(curate_samples(*cohort), SplitConfig(folds=2, seed=2))
    return release_dataset(store, "demo", assigned, root / "volumes", root / "labels")


@pytest.mark.integration
def test_release_on_s3_is_the_same_version_byte_for_byte(
    tmp_path: Path,
    s3: s3local.S3Server,
    release_cohort,  # type: ignore[no-untyped-def]
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, STORE_KEY)  # the signature must match too
    local, remote = ObjectStore(tmp_path / "releases"), ObjectStore(_s3_url(s3, request))
    assert not remote.is_local and remote.root.startswith(s3.bucket + "/")
    vol, lab = release_cohort(tmp_path, 6)
    first = _release(local, tmp_path, (vol, lab))
    on_s3 = _release(remote, tmp_path, (vol, lab))
    assert on_s3.created and on_s3.info == first.info and on_s3.info.id == first.info.id
    assert (on_s3.objects_written, on_s3.bytes_written) == (
        first.objects_written,
        first.bytes_written,
    )
    assert first.objects_written > 0

    # a second version sharing most objects: the same id, and only the new objects written
    vol2, lab2 = release_cohort(tmp_path, 2, start=6)
    both = (pd.concat([vol, vol2]), pd.concat([lab, lab2]))
    second, second_s3 = _release(local, tmp_path, both), _release(remote, tmp_path, both)
    assert second_s3.info.id == second.info.id and second.info.version == "v2"
    assert second_s3.objects_written == second.objects_written < first.objects_written

    local_files, s3_files = _files(local), _files(remote)
    assert any(k.startswith("objects/sha256/") for k in s3_files)
    assert {"demo/v1/version.json", "demo/v2/version.sig"} <= set(s3_files)
    assert not [k for k in s3_files if ".tmp-" in k or ".staging" in k]  # no litter
    assert s3_files.keys() == local_files.keys()
    for rel, data in local_files.items():
        assert s3_files[rel] == data, rel

    assert list_versions(remote, "demo") == list_versions(local, "demo")
    assert signature_status(remote, second_s3.info) == VERIFIED
    again = _release(remote, tmp_path, both)  # nothing new: nothing written
    assert not again.created and again.bytes_written == 0 and _files(remote) == s3_files


@pytest.mark.integration
def test_pull_from_s3_through_the_cli_gives_the_local_pull(
    tmp_path: Path,
    s3: s3local.S3Server,
    release_cohort,  # type: ignore[no-untyped-def]
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = _s3_url(s3, request)
    local, remote = ObjectStore(tmp_path / "releases"), ObjectStore(url)
    cohort = release_cohort(tmp_path, 6)
    info = _release(local, tmp_path, cohort).info
    assert _release(remote, tmp_path, cohort).info.id == info.id
    monkeypatch.setenv(STORE_ENV, url)  # the store as a user configures it

    out = runner.invoke(app, ["datasets", "list"])
    assert out.exit_code == 0, out.output
    assert "demo@v1" in out.output and info.id in out.output
    for fmt in ("nifti", "nnunet"):
        mine, theirs = tmp_path / f"from-local-{fmt}", tmp_path / f"from-s3-{fmt}"
        pull(local, "demo@v1", mine, fmt=fmt)
        out = runner.invoke(app, ["datasets", "pull", "demo@v1", str(theirs), "-f", fmt, "-q"])
        assert out.exit_code == 0, out.output
        assert info.id in out.output
        got, want = _folder(theirs), _folder(mine)
        assert got.keys() == want.keys() and len(got) > 3
        for rel, data in want.items():
            assert got[rel] == data, rel

    again = pull(open_store(must_exist=True), "demo@v1", tmp_path / "from-s3-nifti")
    assert again.fetched_files == 0 and again.present_files == again.files > 0  # re-verified


@pytest.mark.integration
def test_tampered_object_on_s3_is_refused(
    tmp_path: Path,
    s3: s3local.S3Server,
    release_cohort,  # type: ignore[no-untyped-def]
    request: pytest.FixtureRequest,
) -> None:
    remote = ObjectStore(_s3_url(s3, request))
    info = _release(remote, tmp_path, release_cohort(tmp_path, 4)).info
    row = load_manifest(remote, info).iloc[0]
    obj = remote.object_path(row["image_sha256"])
    data = bytearray(remote.read_bytes(obj))
    data[20] ^= 0xFF  # one flipped byte, written behind the store's back
    remote.fs.pipe(obj, bytes(data))
    dest = tmp_path / "pulled"
    with pytest.raises(TamperedObjectError, match="tampered"):
        pull(remote, "demo@v1", dest)
    assert not (dest / row["image"]).exists()
    assert not [p for p in dest.rglob("*") if p.name.startswith(".tmp-")]


@pytest.mark.integration
def test_missing_s3_store_is_an_error_not_an_empty_store(
    s3: s3local.S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        open_store(s3.store_url("no-such-prefix"), must_exist=True)
    monkeypatch.setenv(STORE_ENV, s3.store_url("no-such-prefix"))
    out = runner.invoke(app, ["datasets", "list"])
    assert out.exit_code != 0 and "no dataset store" in out.output
    assert os.environ["AWS_ENDPOINT_URL"] == s3.url


def test_a_store_opened_again_sees_what_another_process_wrote(
    s3: s3local.S3Server, request: pytest.FixtureRequest
) -> None:
    url = _s3_url(s3, request)
    first = ObjectStore(url)
    parent = url.removeprefix("s3://").rsplit("/", 1)[0]
    first.fs.pipe(parent + "/other", b"x")
    first.fs.ls(parent)  # the listing of the parent, without the store, is cached in the client
    with pytest.raises(StoreUnavailableError):
        first.require_exists()
    other = s3fs.S3FileSystem(skip_instance_cache=True)  # another process's client
    other.pipe(url.removeprefix("s3://") + "/objects/x", b"written elsewhere")
    assert ObjectStore(url).require_exists().fs.exists(url + "/objects/x")
