"""release_dataset: manifest + datalist + card published in one call."""

from __future__ import annotations

import json
from pathlib import Path

from medcurate.splits import assign_splits
from medcurate.store.manifest import curate_samples
from medcurate.store.objects import ObjectStore
from medcurate.store.publish import read_version_file
from medcurate.store.release import release_dataset


def test_release_writes_documents_listed_in_version_json(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    store = ObjectStore(tmp_path / "releases")
    vol, lab = release_cohort(tmp_path, 6)
    a = assign_splits(curate_samples(vol, lab))
    r = release_dataset(
        store,
        "demo",
        a,
        tmp_path / "volumes",
        tmp_path / "labels",
        lineage={"dagster_run_id": "r1"},
        description="A test dataset.",
    )
    assert sorted(r.info.files) == ["card.md", "dataset.json", "manifest.parquet"]
    dl = json.loads(read_version_file(store, r.info, "dataset.json"))
    assert dl["version"] == r.info.id and dl["name"] == "demo"
    card = read_version_file(store, r.info, "card.md").decode()
    assert "A test dataset." in card and r.info.id in card
    v = json.loads((tmp_path / "releases" / "demo" / "v1" / "version.json").read_text())
    assert v["id"] == r.info.id and v["digest"] == r.info.digest
