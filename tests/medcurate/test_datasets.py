"""medcurate.datasets.load: manifest, splits, folds, MONAI data dicts from a local pull."""

from __future__ import annotations

import uuid
from pathlib import Path

import nibabel as nib
import pytest

from medcurate import datasets
from medcurate.splits import SplitConfig, assign_splits
from medcurate.store.manifest import curate_samples
from medcurate.store.objects import ObjectStore, StoreError
from medcurate.store.release import release_dataset


def _release(tmp_path: Path, release_cohort, url: str) -> None:  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(tmp_path, 12)
    a = assign_splits(curate_samples(vol, lab), SplitConfig(folds=3))
    release_dataset(ObjectStore(url), "demo", a, tmp_path / "volumes", tmp_path / "labels")


def test_load_from_home_releases(tmp_path: Path, release_cohort, zones_tmp, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MEDCURATE_STORE", raising=False)
    _release(tmp_path, release_cohort, str(zones_tmp.releases))
    ds = datasets.load("demo", "v1")
    assert ds.id.startswith("v1-") and len(ds.manifest) == ds.info.n_samples
    parts = [ds.split(s) for s in ds.splits]
    assert sum(len(p) for p in parts) == len(ds.manifest)
    tr, va = ds.fold(0)
    assert set(tr["patient"]).isdisjoint(set(va["patient"])) and len(va) > 0
    dicts = ds.data_dicts("train")
    assert len(dicts) == len(ds.split("train"))
    for d in dicts:
        assert Path(d["image"]).is_absolute() and nib.load(d["image"]).shape == (8, 8, 4)
        if "label" in d:
            assert Path(d["label"]).is_file() and d["class"] == "abnormal"
    assert ds.cache_dir == zones_tmp.home / "cache" / "datasets" / "demo" / "v1"
    assert "training" in ds.datalist() and ds.card().startswith("# demo v1-")
    with pytest.raises(ValueError, match="unknown split"):
        ds.split("dev")


def test_load_from_url_with_cache_dir(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    url = f"memory://ds-{uuid.uuid4().hex}/releases"
    _release(tmp_path, release_cohort, url)
    ds = datasets.load("demo", root=url, cache_dir=tmp_path / "cache")
    assert ds.version == "v1"
    assert all(Path(d["image"]).is_file() for d in ds.data_dicts())
    with pytest.raises(StoreError):
        datasets.load("demo@v1", root=url)
