"""Samples join, manifest building, canonical digest and the MONAI datalist."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medcurate.splits import assign_splits
from medcurate.store.manifest import (
    MANIFEST_COLUMNS,
    UNLABELLED,
    ManifestError,
    build_manifest,
    curate_samples,
    datalist,
    file_entries,
    manifest_bytes,
    manifest_digest,
    read_manifest,
)


def test_curate_samples_joins_labels_and_defaults(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(tmp_path, 4)
    s = curate_samples(vol, lab.iloc[:2])
    assert len(s) == len(vol)
    assert set(s.loc[~s["sample_id"].isin(lab["sample_id"].iloc[:2]), "label"]) == {UNLABELLED}
    assert not s["synthetic"].any() and s["generator_id"].isna().all()
    assert "study_uid" not in s.columns and "series_uid" not in s.columns
    assert s["out_shape"].iloc[0] == "8x8x4" and s["out_spacing"].iloc[0] == "1x1x2.5"
    assert set(curate_samples(vol, None)["label"]) == {UNLABELLED}
    with pytest.raises(ManifestError, match="duplicate"):
        curate_samples(pd.concat([vol, vol]), lab)


def test_manifest_has_every_column_and_hashes(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(tmp_path, 6)
    a = assign_splits(curate_samples(vol, lab))
    m, sources = build_manifest(a, tmp_path / "volumes", tmp_path / "labels")
    assert list(m.columns) == list(MANIFEST_COLUMNS)
    assert list(m["sample_id"]) == sorted(m["sample_id"])
    entries = file_entries(m)
    assert {sha for _, sha, _ in entries} == set(sources)
    assert all(rel.startswith(("images/", "masks/")) for rel, _, _ in entries)
    masked = m.loc[m["mask"].notna()]
    assert len(masked) == int(lab["mask_path"].notna().sum())


def test_digest_is_canonical(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(tmp_path, 6)
    a = assign_splits(curate_samples(vol, lab))
    m, _ = build_manifest(a, tmp_path / "volumes", tmp_path / "labels")
    d = manifest_digest(m)
    shuffled = m.sample(frac=1.0, random_state=1)[list(reversed(m.columns))]
    assert manifest_digest(shuffled) == d
    assert manifest_digest(read_manifest(manifest_bytes(m))) == d
    assert manifest_bytes(m) == manifest_bytes(shuffled)
    relabelled = m.copy()
    relabelled.loc[0, "label"] = "abnormal" if m.loc[0, "label"] != "abnormal" else "normal"
    assert manifest_digest(relabelled) != d


def test_missing_file_named_in_error(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(tmp_path, 2)
    a = assign_splits(curate_samples(vol, lab))
    (tmp_path / "volumes" / vol["nifti_path"].iloc[0]).unlink()
    with pytest.raises(ManifestError, match="image file missing"):
        build_manifest(a, tmp_path / "volumes", tmp_path / "labels")


def test_datalist_monai_keys(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(tmp_path, 10)
    a = assign_splits(curate_samples(vol, lab))
    m, _ = build_manifest(a, tmp_path / "volumes", tmp_path / "labels")
    dl = datalist(m, "demo", "v1-abc")
    n = sum(len(dl[k]) for k in ("training", "validation", "test"))
    assert n == len(m) and "external_test" not in dl
    item = next(d for d in dl["training"] + dl["validation"] + dl["test"] if "label" in d)
    assert item["label"].startswith("masks/") and item["class"] == "abnormal"


def test_datalist_keeps_unlabelled_samples_apart(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(tmp_path, 10)
    a = assign_splits(curate_samples(vol, lab.iloc[5:]))
    m, _ = build_manifest(a, tmp_path / "volumes", tmp_path / "labels")
    dl = datalist(m, "demo", "v1-abc")
    unlabelled = set(m.loc[m["label"] == UNLABELLED, "sample_id"])
    listed = [d for k in ("training", "validation", "test") for d in dl[k]]
    assert unlabelled and not unlabelled & {d["sample_id"] for d in listed}
    assert {d["sample_id"] for d in dl[UNLABELLED]} == unlabelled
    assert UNLABELLED not in dl["classes"] and all(d["class"] != UNLABELLED for d in listed)
    labelled_train = m.loc[(m["split"] == "train") & (m["label"] != UNLABELLED)]
    assert dl["numTraining"] == len(labelled_train)


def test_labels_pending_adjudication_are_withheld(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(tmp_path, patients=4)
    lab = lab.copy()
    lab["pending_adjudication"] = False
    pending = lab.loc[lab["label"] == "abnormal", "sample_id"].iloc[0]
    lab.loc[lab["sample_id"] == pending, "pending_adjudication"] = True
    s = curate_samples(vol, lab).set_index("sample_id")
    assert s.loc[pending, "label"] == "unlabelled"
    assert pd.isna(s.loc[pending, "mask_path"])
    settled = lab.loc[~lab["pending_adjudication"], "sample_id"]
    assert (s.loc[settled, "label"] == lab.set_index("sample_id").loc[settled, "label"]).all()
