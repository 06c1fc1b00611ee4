"""Diff between versions: added, removed, relabelled, moved, files changed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medcurate.splits import SplitConfig, assign_splits
from medcurate.store.diff import diff_manifests, diff_versions
from medcurate.store.manifest import build_manifest, curate_samples
from medcurate.store.objects import ObjectStore
from medcurate.store.publish import publish


def _manifest(tmp_path: Path, release_cohort, n: int = 6) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(tmp_path, n)
    a = assign_splits(curate_samples(vol, lab), SplitConfig(seed=0))
    m, _ = build_manifest(a, tmp_path / "volumes", tmp_path / "labels")
    return m


def test_diff_manifests_finds_each_kind_of_change(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    a = _manifest(tmp_path, release_cohort)
    b = a.copy()
    b = b.iloc[1:].reset_index(drop=True)  # removed: first sample
    extra = a.iloc[[0]].assign(sample_id="zz-new")
    b = pd.concat([b, extra], ignore_index=True)  # added
    b.loc[b["sample_id"] == a["sample_id"].iloc[1], "label"] = "unreadable"  # relabelled
    other = "validation" if a["split"].iloc[2] != "validation" else "test"
    b.loc[b["sample_id"] == a["sample_id"].iloc[2], "split"] = other  # moved
    b.loc[b["sample_id"] == a["sample_id"].iloc[3], "image_sha256"] = "f" * 64  # re-imaged
    d = diff_manifests(a, b, "demo@v1", "demo@v2")
    assert list(d.added["sample_id"]) == ["zz-new"]
    assert list(d.removed["sample_id"]) == [a["sample_id"].iloc[0]]
    assert list(d.relabelled["label_b"]) == ["unreadable"]
    assert d.moved.to_dict("records") == [
        {"sample_id": a["sample_id"].iloc[2], "split_a": a["split"].iloc[2], "split_b": other}
    ]
    assert d.changed_files.to_dict("records") == [
        {"sample_id": a["sample_id"].iloc[3], "what": "image"}
    ]
    assert not d.unchanged
    text = d.format()
    assert text.startswith("demo@v1 -> demo@v2: 1 added, 1 removed, 1 relabelled")
    assert "+ zz-new" in text
    assert diff_manifests(a, a).unchanged


def test_diff_versions_from_store(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    store = ObjectStore(tmp_path / "releases")
    vol, lab = release_cohort(tmp_path, 6)
    a = assign_splits(curate_samples(vol, lab))
    m, src = build_manifest(a, tmp_path / "volumes", tmp_path / "labels")
    publish(store, "demo", m, src)
    m2 = m.copy()
    m2.loc[0, "label"] = "unreadable" if m.loc[0, "label"] != "unreadable" else "normal"
    publish(store, "demo", m2, src)
    d = diff_versions(store, "demo@v1", "demo@v2")
    assert len(d.relabelled) == 1 and d.added.empty and d.removed.empty
    counts = d.label_counts.set_index("label")["delta"]
    assert counts.sum() == 0 and counts.abs().sum() == 2
