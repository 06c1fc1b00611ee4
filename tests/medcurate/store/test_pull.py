"""Pulling: verification, tamper refusal, incremental pulls, nifti and nnU-Net layouts."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest

from medcurate.io import sha256_file
from medcurate.splits import SplitConfig, assign_splits
from medcurate.store.manifest import UNLABELLED, curate_samples
from medcurate.store.objects import ObjectStore, StoreError, TamperedObjectError
from medcurate.store.publish import load_manifest
from medcurate.store.pull import PULL_RECORD, nnunet_plan, pull, pull_record
from medcurate.store.release import release_dataset


@pytest.fixture
def two_versions(tmp_path: Path, release_cohort):  # type: ignore[no-untyped-def]
    store = ObjectStore(tmp_path / "releases")
    vol, lab = release_cohort(tmp_path, 10)
    cfg = SplitConfig(folds=2, seed=2)
    a1 = assign_splits(curate_samples(vol, lab), cfg)
    r1 = release_dataset(store, "demo", a1, tmp_path / "volumes", tmp_path / "labels")
    vol2, lab2 = release_cohort(tmp_path, 3, start=10)
    a2 = assign_splits(
        curate_samples(pd.concat([vol, vol2]), pd.concat([lab, lab2])),
        cfg,
        load_manifest(store, r1.info),
    )
    r2 = release_dataset(store, "demo", a2, tmp_path / "volumes", tmp_path / "labels")
    return store, r1.info, r2.info


def test_pull_nifti_layout_is_complete_and_verified(tmp_path: Path, two_versions) -> None:  # type: ignore[no-untyped-def]
    store, v1, _ = two_versions
    dest = tmp_path / "pulls" / "v1"
    res = pull(store, "demo@v1", dest)
    m = pd.read_parquet(dest / "manifest.parquet")
    assert len(m) == v1.n_samples
    for rec in m.to_dict("records"):
        assert sha256_file(dest / rec["image"]) == rec["image_sha256"]
        assert nib.load(dest / rec["image"]).shape == (8, 8, 4)
        if pd.notna(rec["mask"]):
            assert sha256_file(dest / rec["mask"]) == rec["mask_sha256"]
    dl = json.loads((dest / "dataset.json").read_text())
    assert {"training", "validation", "test"} <= set(dl)
    assert len(dl["training"]) == int((m["split"] == "train").sum())
    assert (dest / "card.md").read_text().startswith("# demo v1-")
    assert res.fetched_files == res.files and res.reused_files == 0
    assert pull_record(dest)["digest"] == v1.digest  # type: ignore[index]


def test_pull_next_to_older_copies_only_missing_objects(tmp_path: Path, two_versions) -> None:  # type: ignore[no-untyped-def]
    store, v1, v2 = two_versions
    pull(store, "demo@v1", tmp_path / "pulls" / "v1")
    res = pull(store, "demo@v2", tmp_path / "pulls" / "v2")
    m1 = load_manifest(store, v1)
    m2 = load_manifest(store, v2)
    new_ids = set(m2["sample_id"]) - set(m1["sample_id"])
    new = m2.loc[m2["sample_id"].isin(new_ids)]
    expected = int(new["image_bytes"].sum() + new["mask_bytes"].fillna(0).sum())
    assert res.fetched_bytes == expected
    assert res.reused_files == res.files - res.fetched_files > 0
    # a second pull of the same version into the same place copies nothing
    again = pull(store, "demo@v2", tmp_path / "pulls" / "v2")
    assert again.fetched_bytes == 0 and again.present_files == again.files


def test_tampered_object_is_refused_with_clear_error(tmp_path: Path, two_versions) -> None:  # type: ignore[no-untyped-def]
    store, v1, _ = two_versions
    m = load_manifest(store, v1)
    victim = m["image_sha256"].iloc[0]
    obj = Path(store.object_path(victim))
    obj.chmod(0o644)
    data = bytearray(obj.read_bytes())
    data[20] ^= 0xFF  # one flipped byte
    obj.write_bytes(bytes(data))
    dest = tmp_path / "pulls" / "x"
    with pytest.raises(TamperedObjectError, match="tampered") as err:
        pull(store, "demo@v1", dest)
    assert victim[:12] in str(err.value)
    assert not (dest / m["image"].iloc[0]).exists()
    assert not (dest / PULL_RECORD).exists()


def test_tampered_sibling_is_not_reused(tmp_path: Path, two_versions) -> None:  # type: ignore[no-untyped-def]
    store, _, _ = two_versions
    d1 = tmp_path / "pulls" / "v1"
    pull(store, "demo@v1", d1)
    rec = pull_record(d1)
    first = sorted(rec["files"])[0]  # type: ignore[index]
    (d1 / first).chmod(0o644)
    (d1 / first).write_bytes(b"not the image")
    res = pull(store, "demo@v2", tmp_path / "pulls" / "v2")
    assert res.fetched_files >= 1
    assert sha256_file(tmp_path / "pulls" / "v2" / first) == rec["files"][first]  # type: ignore[index]


def test_nnunet_layout(tmp_path: Path, two_versions) -> None:  # type: ignore[no-untyped-def]
    store, v1, _ = two_versions
    dest = tmp_path / "nn"
    res = pull(store, "demo@v1", dest, fmt="nnunet")
    m = load_manifest(store, v1)
    ds = json.loads((dest / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "lesion": 1}
    assert ds["file_ending"] == ".nii.gz"
    tr = sorted(p.name for p in (dest / "imagesTr").glob("*.nii.gz"))
    lab = sorted(p.name for p in (dest / "labelsTr").glob("*.nii.gz"))
    assert ds["numTraining"] == len(tr) == len(lab) > 0
    assert all(t.endswith("_0000.nii.gz") for t in tr)
    assert [t.replace("_0000", "") for t in tr] == lab
    ts = sorted((dest / "imagesTs").glob("*.nii.gz"))
    assert len(ts) == int(m["split"].isin(["test", "external"]).sum())
    splits = json.loads((dest / "splits_final.json").read_text())
    cases = {t.replace("_0000.nii.gz", "") for t in tr}
    # one entry per fold that holds a case with a mask, then train-vs-validation (with so few
    # masked samples, the evaluation splits' positives can leave a fold without one)
    folds = set(m.loc[m["sample_id"].isin(cases) & m["split"].eq("train"), "fold"])
    assert len(splits) == len(folds) + 1 >= 2
    for s in splits:
        assert not set(s["train"]) & set(s["val"])
        assert set(s["train"]) | set(s["val"]) <= cases
    unmasked_trainval = m.loc[m["split"].isin(["train", "validation"]) & m["mask"].isna()]
    assert sorted(res.skipped) == sorted(unmasked_trainval["sample_id"])


def test_repull_other_version_into_same_folder_removes_stale_files(
    tmp_path: Path, two_versions
) -> None:  # type: ignore[no-untyped-def]
    store, _, _ = two_versions
    dest = tmp_path / "one"
    pull(store, "demo@v2", dest)
    pull(store, "demo@v1", dest)
    rec = pull_record(dest)
    files = {str(p.relative_to(dest)) for p in dest.rglob("*.nii.gz")}
    assert files == set(rec["files"])  # type: ignore[index]


def test_nnunet_never_gives_an_unlabelled_sample_a_label_file(two_versions) -> None:  # type: ignore[no-untyped-def]
    store, v1, _ = two_versions
    m = load_manifest(store, v1)
    row = m.index[m["mask"].notna() & m["split"].isin(["train", "validation"])][0]
    m.loc[row, "label"] = UNLABELLED  # a mask left on a sample released without a label
    sid = str(m.loc[row, "sample_id"])
    plan, skipped = nnunet_plan(m)
    assert sid in skipped
    assert not [rel for rel, _, _ in plan if sid in rel]


def test_unknown_format(tmp_path: Path, two_versions) -> None:  # type: ignore[no-untyped-def]
    store, _, _ = two_versions
    with pytest.raises(StoreError, match="format"):
        pull(store, "demo@v1", tmp_path / "z", fmt="zip")
