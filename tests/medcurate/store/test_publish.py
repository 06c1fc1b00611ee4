"""Publishing: version ids, immutability, atomicity under a crash, determinism, fsspec URLs."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest

from medcurate.splits import SplitConfig, assign_splits
from medcurate.store.manifest import curate_samples
from medcurate.store.objects import ObjectStore, StoreError, TamperedObjectError
from medcurate.store.publish import (
    list_datasets,
    list_versions,
    load_manifest,
    parse_ref,
    resolve,
    version_summary,
)
from medcurate.store.release import release_dataset


def _split(
    vol: pd.DataFrame, lab: pd.DataFrame, previous: pd.DataFrame | None = None
) -> pd.DataFrame:
    return assign_splits(curate_samples(vol, lab), SplitConfig(folds=2, seed=1), previous)


def _publish(store: ObjectStore, root: Path, assigned: pd.DataFrame, run: str = "run-1"):  # type: ignore[no-untyped-def]
    return release_dataset(
        store, "demo", assigned, root / "volumes", root / "labels", lineage={"dagster_run_id": run}
    )


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_publish_two_versions_share_objects_and_v1_is_unchanged(
    tmp_path: Path, release_cohort
) -> None:  # type: ignore[no-untyped-def]
    store = ObjectStore(tmp_path / "releases")
    vol, lab = release_cohort(tmp_path, 8)
    a1 = _split(vol, lab)
    r1 = _publish(store, tmp_path, a1)
    assert r1.created and r1.info.version == "v1"
    assert r1.info.id == f"v1-{r1.info.digest[:12]}"
    v1_bytes = _tree_bytes(tmp_path / "releases" / "demo" / "v1")
    objects_before = _tree_bytes(tmp_path / "releases" / "objects")

    vol2, lab2 = release_cohort(tmp_path, 3, start=8)
    a2 = _split(
        pd.concat([vol, vol2]), pd.concat([lab, lab2]), previous=load_manifest(store, r1.info)
    )
    r2 = _publish(store, tmp_path, a2)
    assert r2.created and r2.info.version == "v2" and r2.info.previous == "v1"
    # only the new samples' files were written: the rest are shared
    new_files = len(vol2) + int(lab2["mask_path"].notna().sum())
    assert r2.objects_written == new_files
    assert _tree_bytes(tmp_path / "releases" / "demo" / "v1") == v1_bytes
    objects_after = _tree_bytes(tmp_path / "releases" / "objects")
    assert all(objects_after[k] == v for k, v in objects_before.items())
    assert [v.version for v in list_versions(store, "demo")] == ["v1", "v2"]
    assert list_datasets(store) == ["demo"]
    assert resolve(store, "demo").version == "v2"
    assert resolve(store, "demo@v1").digest == r1.info.digest
    summary = version_summary(store, r2.info)
    assert summary["samples"] == len(a2) and sum(summary["splits"].values()) == len(a2)


def test_republish_same_content_is_a_noop_with_same_digest(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    store = ObjectStore(tmp_path / "releases")
    vol, lab = release_cohort(tmp_path, 6)
    a = _split(vol, lab)
    r1 = _publish(store, tmp_path, a, run="run-1")
    r2 = _publish(store, tmp_path, a, run="run-2")  # another run id: card differs, digest not
    assert not r2.created and r2.info == r1.info
    assert len(list_versions(store, "demo")) == 1


def test_publish_killed_midway_leaves_no_version_and_rerun_gives_same_digest(
    tmp_path: Path, release_cohort, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # reference digest from an untouched store
    vol, lab = release_cohort(tmp_path, 8)
    a = _split(vol, lab)
    reference = _publish(ObjectStore(tmp_path / "ref"), tmp_path, a)

    store = ObjectStore(tmp_path / "releases")
    real_put = ObjectStore.put_file
    calls = {"n": 0}

    def dying_put(self, local, sha=None):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return real_put(self, local, sha)

    monkeypatch.setattr(ObjectStore, "put_file", dying_put)
    with pytest.raises(KeyboardInterrupt):
        _publish(store, tmp_path, a)
    assert list_versions(store, "demo") == []
    assert not (tmp_path / "releases" / "demo" / "v1").exists()

    # a crash while committing the version folder, after all objects are in
    monkeypatch.setattr(ObjectStore, "put_file", real_put)
    import medcurate.store.publish as pub

    def dying_rename(src, dst):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt("killed at commit")

    monkeypatch.setattr(pub.os, "rename", dying_rename)
    with pytest.raises(KeyboardInterrupt):
        _publish(store, tmp_path, a)
    assert list_versions(store, "demo") == []
    assert not (tmp_path / "releases" / "demo" / "v1").exists()
    assert not list((tmp_path / "releases" / "demo").glob(".staging/*"))

    monkeypatch.undo()
    rerun = _publish(store, tmp_path, a)
    assert rerun.created and rerun.info.version == "v1"
    assert rerun.info.digest == reference.info.digest


def test_memory_url_store_and_uncommitted_folder_is_invisible(
    tmp_path: Path, release_cohort
) -> None:  # type: ignore[no-untyped-def]
    store = ObjectStore(f"memory://medcurate-{uuid.uuid4().hex}/releases")
    assert not store.is_local
    vol, lab = release_cohort(tmp_path, 5)
    a = _split(vol, lab)
    # a crashed publish on an object store: files without version.json
    store.write_bytes(store.path("demo", "v1", "manifest.parquet"), b"partial")
    assert list_versions(store, "demo") == []
    r = _publish(store, tmp_path, a)
    assert r.info.version == "v1"
    assert len(load_manifest(store, r.info)) == len(a)
    local = _publish(ObjectStore(tmp_path / "local"), tmp_path, a)
    assert local.info.digest == r.info.digest


def test_tampered_version_files_are_refused(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    store = ObjectStore(tmp_path / "releases")
    vol, lab = release_cohort(tmp_path, 5)
    r = _publish(store, tmp_path, _split(vol, lab))
    m = tmp_path / "releases" / "demo" / "v1" / "manifest.parquet"
    m.chmod(0o644)
    m.write_bytes(m.read_bytes() + b"x")
    with pytest.raises(TamperedObjectError, match=r"manifest\.parquet"):
        load_manifest(store, r.info)


def test_refs_and_names() -> None:
    assert parse_ref("demo") == ("demo", None)
    assert parse_ref("demo@latest") == ("demo", None)
    assert parse_ref("demo@v12") == ("demo", "v12")
    for bad in ("demo@12", "demo@v0", "objects@v1", "../x@v1", "a/b"):
        with pytest.raises(StoreError):
            parse_ref(bad)


def test_missing_version_and_dataset(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    with pytest.raises(StoreError, match="no versions"):
        resolve(store, "nothing")
    with pytest.raises(StoreError, match="does not exist"):
        resolve(store, "nothing@v3")
