"""Issue 9, the store's rows: forged manifest paths (8), signed versions, store URL errors (10),
litter of killed publishes and pulls (14). Each test failed before the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medcurate.cli import app
from medcurate.io import sha256_bytes, sha256_file
from medcurate.splits import SplitConfig, assign_splits
from medcurate.store.manifest import curate_samples, manifest_bytes, manifest_digest
from medcurate.store.objects import ObjectStore, StoreError, TamperedObjectError
from medcurate.store.paths import UnsafeManifestError
from medcurate.store.publish import (
    MANIFEST,
    VERSION_JSON,
    VersionInfo,
    list_versions,
    load_manifest,
    publish,
    resolve,
)
from medcurate.store.pull import PULL_RECORD, pull
from medcurate.store.release import release_dataset
from medcurate.store.signing import (
    KEY_ENV,
    NOT_VERIFIED,
    SIGNATURE,
    UNSIGNED,
    VERIFIED,
    SignatureError,
    StoreKeyError,
)

runner = CliRunner()
KEY = "5f0c2a9e8b7d41c3a6e2f90b1d48c7a35e6f0b2c9d8a7e41f3b6c5d2a0e9f817"
OTHER_KEY = "c1b7e04d9a2f3865e1d0c7b4a93f2e6d8c5b1a0f7e4d3c2b9a8f6e5d4c3b2a19"


def _release(tmp_path: Path, release_cohort, store: ObjectStore, patients: int = 6):  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(tmp_path, patients)
    a = assign_splits(curate_samples(vol, lab), SplitConfig(folds=2, seed=1))
    return release_dataset(store, "demo", a, tmp_path / "volumes", tmp_path / "labels")


def _forge(store: ObjectStore, base: VersionInfo, version: str, edit) -> VersionInfo:  # type: ignore[no-untyped-def]
    """A version written by hand, as an attacker with write access to the store would: an
    edited manifest with a matching digest and version.json (hashes all re-computed)."""
    m = edit(load_manifest(store, base).copy())
    data = manifest_bytes(m)
    info = VersionInfo(
        dataset=base.dataset,
        version=version,
        digest=manifest_digest(m),
        n_samples=len(m),
        files={MANIFEST: sha256_bytes(data)},
        previous=base.version,
    )
    store.write_bytes(store.path(base.dataset, version, MANIFEST), data)
    store.write_bytes(store.path(base.dataset, version, VERSION_JSON), info.to_json())
    return info


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# row 8 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["local", "memory"])
@pytest.mark.parametrize(
    "evil",
    ["../../escaped/x.nii.gz", "/tmp/escaped-abs.nii.gz", "images\\..\\..\\x.nii.gz", "a\x00b"],
)
def test_row8_forged_manifest_path_is_refused_before_writing(
    tmp_path: Path, release_cohort, kind: str, evil: str
) -> None:  # type: ignore[no-untyped-def]
    url = tmp_path / "releases" if kind == "local" else f"memory://h-{uuid.uuid4().hex}/r"
    store = ObjectStore(url)
    v1 = _release(tmp_path, release_cohort, store).info

    def edit(m: pd.DataFrame) -> pd.DataFrame:
        m.loc[2, "image"] = evil
        return m

    _forge(store, v1, "v2", edit)
    work = tmp_path / "work"
    dest = work / "pulls" / "v2"
    for fmt in ("nifti", "nnunet"):
        with pytest.raises(UnsafeManifestError) as err:
            pull(store, "demo@v2", dest, fmt=fmt)
        msg = str(err.value)
        assert "demo@v2" in msg and "row 3" in msg and "\n" not in msg
        assert "escaped" not in msg and "s000" not in msg  # neither the path nor a sample id
    assert not dest.exists()  # nothing half-written inside
    assert _files(work) == [] and not (tmp_path / "escaped").exists()
    assert not Path("/tmp/escaped-abs.nii.gz").exists()
    assert pull(store, "demo@v1", dest).files > 0  # the honest version still pulls


def test_row8_forged_sample_id_and_symlink_inside_dest_are_refused(
    tmp_path: Path, release_cohort
) -> None:  # type: ignore[no-untyped-def]
    store = ObjectStore(tmp_path / "releases")
    v1 = _release(tmp_path, release_cohort, store).info

    def edit(m: pd.DataFrame) -> pd.DataFrame:  # nnU-Net names files after the sample id
        m.loc[0, "sample_id"] = "../../../escaped"
        return m

    _forge(store, v1, "v2", edit)
    with pytest.raises(UnsafeManifestError, match=r"demo@v2: manifest row \d+, column sample_id"):
        pull(store, "demo@v2", tmp_path / "nn", fmt="nnunet")
    assert not (tmp_path / "nn").exists() and not (tmp_path / "escaped").exists()

    outside = tmp_path / "outside"
    outside.mkdir()
    for fmt, folder in (("nifti", "images"), ("nnunet", "imagesTr")):
        dest = tmp_path / f"dest-{fmt}"
        dest.mkdir()
        (dest / folder).symlink_to(outside, target_is_directory=True)
        with pytest.raises(UnsafeManifestError, match="resolves outside the destination"):
            pull(store, "demo@v1", dest, fmt=fmt)
        assert list(outside.iterdir()) == [] and _files(dest) == [folder]

    dest = tmp_path / "dest-file"  # a symlinked file, and a symlink loop
    first = sorted(load_manifest(store, v1)["image"])[0]
    (dest / first).parent.mkdir(parents=True)
    (dest / first).symlink_to(outside / "victim.nii.gz")
    (dest / "masks").symlink_to(dest / "masks")
    with pytest.raises(UnsafeManifestError, match="resolves outside the destination"):
        pull(store, "demo@v1", dest)
    (dest / first).unlink()
    with pytest.raises(UnsafeManifestError, match="resolves outside the destination"):
        pull(store, "demo@v1", dest)  # the loop
    assert list(outside.iterdir()) == [] and _files(dest) == ["images", "masks"]

    # a version.json naming a document outside the version folder
    bad = json.loads(store.read_bytes(store.path("demo", "v1", VERSION_JSON)))
    bad["files"]["../../../escaped.md"] = "0" * 64
    store.write_bytes(store.path("demo", "v3", VERSION_JSON), json.dumps(bad).encode())
    with pytest.raises(StoreError, match="malformed"):
        resolve(store, "demo@v3")

    # and the publisher refuses such a manifest before writing anything
    m = edit(load_manifest(store, v1).copy())
    fresh = ObjectStore(tmp_path / "fresh")
    with pytest.raises(UnsafeManifestError):
        publish(fresh, "demo", m, {})
    assert _files(tmp_path / "fresh") == []


# signed versions -------------------------------------------------------------------------------
def test_signed_round_trip_keeps_id_and_bytes(
    tmp_path: Path, release_cohort, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(KEY_ENV, raising=False)
    plain = _release(tmp_path, release_cohort, ObjectStore(tmp_path / "plain")).info
    monkeypatch.setenv(KEY_ENV, KEY)
    signed = _release(tmp_path, release_cohort, ObjectStore(tmp_path / "signed")).info
    again = _release(tmp_path, release_cohort, ObjectStore(tmp_path / "again")).info
    assert signed.id == plain.id == again.id  # the signature is outside the digest
    a, b = tmp_path / "signed" / "demo" / "v1", tmp_path / "again" / "demo" / "v1"
    assert (a / SIGNATURE).read_bytes() == (b / SIGNATURE).read_bytes()  # deterministic
    assert (a / VERSION_JSON).read_bytes() == (
        tmp_path / "plain" / "demo" / "v1" / VERSION_JSON
    ).read_bytes()
    res = pull(ObjectStore(tmp_path / "signed"), "demo@v1", tmp_path / "p1")
    assert res.signature == VERIFIED and VERIFIED in res.summary_line()

    monkeypatch.delenv(KEY_ENV)  # no key: signed pulls with a note, unsigned as before
    res = pull(ObjectStore(tmp_path / "signed"), "demo@v1", tmp_path / "p2")
    assert res.signature == NOT_VERIFIED and "not verified" in res.summary_line()
    assert pull(ObjectStore(tmp_path / "plain"), "demo@v1", tmp_path / "p3").signature == UNSIGNED


def test_signed_refusals_tampered_wrong_key_unsigned(
    tmp_path: Path, release_cohort, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(KEY_ENV, KEY)
    store = ObjectStore(tmp_path / "releases")
    v1 = _release(tmp_path, release_cohort, store).info
    root = tmp_path / "releases" / "demo"

    # tampered: the attacker relabels a sample, re-computes every hash, but has no key
    def relabel(m: pd.DataFrame) -> pd.DataFrame:
        m.loc[0, "label"] = "normal" if m.loc[0, "label"] != "normal" else "abnormal"
        return m

    forged = _forge(store, v1, "v2", relabel)
    (root / "v2" / SIGNATURE).write_bytes((root / "v1" / SIGNATURE).read_bytes())
    with pytest.raises(SignatureError, match="does not match") as err:
        pull(store, "demo@v2", tmp_path / "d2")
    assert isinstance(err.value, TamperedObjectError) and not (tmp_path / "d2").exists()
    (root / "v2" / SIGNATURE).unlink()  # or drops the signature
    with pytest.raises(SignatureError, match="unsigned"):
        load_manifest(store, forged)

    # wrong key
    monkeypatch.setenv(KEY_ENV, OTHER_KEY)
    with pytest.raises(SignatureError, match="another key"):
        pull(store, "demo@v1", tmp_path / "d1")
    out = runner.invoke(app, ["datasets", "show", "demo@v1", "--store", str(tmp_path / "releases")])
    assert out.exit_code == 1 and "another key" in out.stderr

    # unsigned version (published before the key existed) refused once a key is set
    monkeypatch.delenv(KEY_ENV)
    old = ObjectStore(tmp_path / "old")
    u1 = _release(tmp_path, release_cohort, old).info
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(SignatureError, match="unsigned"):
        load_manifest(old, u1)
    assert load_manifest(store, v1) is not None  # the genuine signed one still reads


@pytest.mark.parametrize("weak", ["short-key", "a" * 64, "abcd" * 16, " " * 40])
def test_weak_store_key_is_refused_with_how_to(
    tmp_path: Path, release_cohort, monkeypatch: pytest.MonkeyPatch, weak: str
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(KEY_ENV, weak)
    store = ObjectStore(tmp_path / "releases")
    if weak.strip():
        with pytest.raises(StoreKeyError, match=r"secrets\.token_hex\(32\)") as err:
            _release(tmp_path, release_cohort, store)
        assert weak not in str(err.value)
        assert _files(tmp_path / "releases") == []
    else:  # whitespace only: no key configured
        assert _release(tmp_path, release_cohort, store).created


# row 10 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["list", "--store", "nosuchproto://bucket/releases"],
        ["show", "demo", "--store", "nosuchproto://bucket/releases"],
        ["list", "--store", "{missing}"],
        ["show", "demo@v1", "--store", "{missing}"],
        ["pull", "demo@v1", "{dest}", "--store", "{missing}"],
        ["diff", "demo@v1", "demo@v2", "--store", "{missing}"],
    ],
)
def test_row10_bad_store_url_is_one_line_and_status_2(tmp_path: Path, args: list[str]) -> None:
    fill = {"missing": str(tmp_path / "no-such-store"), "dest": str(tmp_path / "dest")}
    out = runner.invoke(app, ["datasets", *[a.format(**fill) for a in args]])
    assert out.exit_code == 2, out.output
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    assert ("no dataset store at" in out.stderr) or ("protocol 'nosuchproto'" in out.stderr)
    assert not (tmp_path / "dest").exists() and not (tmp_path / "no-such-store").exists()


def test_row10_console_script_and_publish_creates_the_store(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    exe = Path(sys.executable).with_name("medcurate")
    env = {**os.environ, "MEDCURATE_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [str(exe), "datasets", "list", "--store", "zz9://x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    # publishing into a store path that does not exist yet creates it
    assert _release(tmp_path, release_cohort, ObjectStore(tmp_path / "new" / "store")).created
    out = runner.invoke(app, ["datasets", "list", "--store", str(tmp_path / "new" / "store")])
    assert out.exit_code == 0 and "demo@v1" in out.stdout


# row 14 ----------------------------------------------------------------------------------------
def test_row14_litter_of_killed_publish_and_pull_is_cleaned(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "releases"
    store = ObjectStore(root)
    v1 = _release(tmp_path, release_cohort, store).info
    before = {p: (root / "demo" / "v1" / p).read_bytes() for p in _files(root / "demo" / "v1")}

    staged = root / "demo" / ".staging" / f"v2-{uuid.uuid4().hex}"
    staged.mkdir(parents=True)
    (staged / "manifest.parquet").write_bytes(b"half")
    (staged / "manifest.parquet").chmod(0o444)
    fanout = root / "objects" / "sha256" / "ab"
    fanout.mkdir(parents=True, exist_ok=True)
    old_tmp = fanout / f".tmp-{uuid.uuid4().hex}"
    old_tmp.write_bytes(b"x" * 100)
    hour_ago = time.time() - 3600
    os.utime(old_tmp, (hour_ago, hour_ago))
    fresh_tmp = fanout / f".tmp-{uuid.uuid4().hex}"  # a concurrent publish may be writing it
    fresh_tmp.write_bytes(b"y")

    again = _release(tmp_path, release_cohort, store)  # same content: a no-op publish
    assert not again.created and again.info == v1
    assert not (root / "demo" / ".staging").exists() and not old_tmp.exists()
    assert fresh_tmp.exists()
    after = {p: (root / "demo" / "v1" / p).read_bytes() for p in _files(root / "demo" / "v1")}
    assert after == before and [v.version for v in list_versions(store, "demo")] == ["v1"]

    dest = tmp_path / "pull"
    pull(store, "demo@v1", dest)
    litter = [
        dest / f".tmp-{uuid.uuid4().hex}",
        dest / "images" / ".tmp-link-s00000.nii.gz",
        dest / ".card.md.tmp-12345",  # medcurate.io's atomic write of a document
    ]
    for p in litter:
        p.write_bytes(b"killed")
    res = pull(store, "demo@v1", dest)
    assert not any(p.exists() for p in litter)
    assert res.present_files == res.files
    rec = json.loads((dest / PULL_RECORD).read_text())
    assert all(sha256_file(dest / rel) == sha for rel, sha in rec["files"].items())


def test_a_symlink_where_a_pull_writes_a_document_is_replaced_not_followed(
    tmp_path: Path, release_cohort
) -> None:  # type: ignore[no-untyped-def]
    store = ObjectStore(tmp_path / "releases")
    _release(tmp_path, release_cohort, store)
    dest = tmp_path / "pull"
    dest.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (dest / "card.md").symlink_to(outside / "card.md")  # dangling: a plain write follows it
    (dest / "dataset.json").symlink_to(outside / "kept.json")
    (outside / "kept.json").write_text("mine")
    pull(store, "demo@v1", dest)
    assert _files(outside) == ["kept.json"] and (outside / "kept.json").read_text() == "mine"
    assert not (dest / "card.md").is_symlink() and (dest / "card.md").read_text().startswith("#")
    assert not (dest / "dataset.json").is_symlink()
