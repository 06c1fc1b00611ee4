"""Running over a tree or a batch: tables, counts, incremental skips, upserts, real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pydicom.data
import pytest

from medcurate.config import Zones
from medcurate.io import sha256_file
from medcurate.normalize import (
    QUARANTINE_TABLE,
    VOLUMES_TABLE,
    check_normalize,
    normalize_batch,
    normalize_tree,
    run_normalize,
)
from medcurate.normalize import run as run_module
from medcurate.normalize.assembly import (
    LOAD_ERROR,
    MISSING_SLICES,
    REASONS,
    UNREADABLE,
    VolumePlan,
    assemble,
    read_instance,
)
from medcurate.normalize.config import NormalizeConfig, load_config
from medcurate.normalize.phantom import PhantomSeries, write_projection, write_series
from medcurate.normalize.run import (
    QUARANTINE_COLUMNS,
    VOLUME_COLUMNS,
    check_batch,
    display_tags,
)
from medcurate.normalize.transforms import load_plan
from medcurate.stage import StageResult

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def _tree(root: Path) -> Path:
    src = root / "src"
    write_series(src / "ct", PhantomSeries(name="ct", slices=6, patient="P-0001"))
    write_series(src / "gap", PhantomSeries(name="gap", slices=6, drop_slices=[2]))
    write_projection(src / "cr", rows=12, cols=10)
    (src / "notes.dcm").write_bytes(b"not a dicom file")
    return src


def _accounted(r) -> None:  # type: ignore[no-untyped-def]
    assert r.instances_total == r.instances_used + r.instances_quarantined
    assert r.volumes_planned == r.written + r.skipped_unchanged + r.quarantined.get(LOAD_ERROR, 0)


def test_tree_writes_volumes_tables_and_counts(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    r = normalize_tree(src, tmp_path / "out")
    assert (r.series_found, r.written, r.skipped_unchanged) == (3, 2, 0)
    assert r.quarantined == {MISSING_SLICES: 1, UNREADABLE: 1}
    _accounted(r)
    assert "2 written" in r.summary_line()
    vol = pd.read_parquet(tmp_path / "out" / VOLUMES_TABLE)
    assert list(vol.columns) == VOLUME_COLUMNS and len(vol) == 2
    ct = vol[vol["modality"] == "CT"].iloc[0]
    assert ct["site"] == "S-unknown" and ct["patient"] == "P-0001" and ct["n_instances"] == 6
    assert list(ct["orig_shape"]) == [20, 24, 6] and list(ct["orig_spacing"]) == [2.0, 2.0, 3.0]
    assert list(ct["out_spacing"]) == pytest.approx(load_config().settings("CT")["spacing"])
    path = tmp_path / "out" / ct["nifti_path"]
    assert sha256_file(path) == ct["nifti_sha256"]
    img = nib.load(path)
    assert np.allclose(img.affine.ravel(), ct["affine"]) and list(img.shape) == list(
        ct["out_shape"]
    )
    assert ct["p01"] <= ct["intensity_mean"] <= ct["p99"]
    assert ct[["window_center", "window_width", "body_part"]].isna().all()  # none in the header
    q = pd.read_parquet(tmp_path / "out" / QUARANTINE_TABLE)
    assert set(q["reason"]) <= set(REASONS) and len(q) == 2
    assert check_batch(tmp_path / "out", "") == []
    # metadata is PHI-free: no UIDs, no patient ids, JSON-serializable
    blob = json.dumps(r.metadata())
    assert "P-0001" not in blob and all(uid not in blob for uid in vol["series_uid"])


def test_same_input_gives_same_bytes_and_unchanged_input_is_skipped(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    normalize_tree(src, tmp_path / "a")
    normalize_tree(src, tmp_path / "b")
    va = pd.read_parquet(tmp_path / "a" / VOLUMES_TABLE)
    vb = pd.read_parquet(tmp_path / "b" / VOLUMES_TABLE)
    pd.testing.assert_frame_equal(va, vb)
    for rel in va["nifti_path"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    again = normalize_tree(src, tmp_path / "a")
    assert (again.written, again.skipped_unchanged) == (0, 2)
    _accounted(again)
    pd.testing.assert_frame_equal(va, pd.read_parquet(tmp_path / "a" / VOLUMES_TABLE))


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
def test_series_display_window_and_body_part(tmp_path: Path) -> None:
    """The first instance's WindowCenter/WindowWidth (first of several values) and a defined-term
    BodyPartExamined reach the volumes table; absent or odd values are null."""
    src = tmp_path / "src"
    write_series(src / "ct", PhantomSeries(name="ct", slices=4, patient="P-0002"))
    files = sorted((src / "ct").rglob("*.dcm"))
    for f in files:
        ds = pydicom.dcmread(f)
        ds.WindowCenter = ["40", "300"]
        ds.WindowWidth = ["400", "1500"]
        ds.BodyPartExamined = "CHEST"
        ds.save_as(f)
    assert display_tags(files[0]) == {"window_center": 40.0, "window_width": 400.0,
                                      "body_part": "CHEST"}  # fmt: skip
    odd = pydicom.dcmread(files[0])
    odd.WindowWidth = "0"
    odd.BodyPartExamined = "chest, see Dr X"
    odd.save_as(tmp_path / "odd.dcm")
    assert display_tags(tmp_path / "odd.dcm") == dict.fromkeys(
        ["window_center", "window_width", "body_part"]
    )
    assert display_tags(tmp_path / "missing.dcm")["window_center"] is None
    normalize_tree(src, tmp_path / "out")
    vol = pd.read_parquet(tmp_path / "out" / VOLUMES_TABLE)
    (row,) = vol.to_dict("records")
    assert (row["window_center"], row["window_width"], row["body_part"]) == (40.0, 400.0, "CHEST")
    # a table written before these columns: unchanged series gain them without recomputing
    old = vol.drop(columns=["window_center", "window_width", "body_part"])
    old.to_parquet(tmp_path / "out" / VOLUMES_TABLE, index=False)
    again = normalize_tree(src, tmp_path / "out")
    assert (again.written, again.skipped_unchanged) == (0, 1)
    pd.testing.assert_frame_equal(vol, pd.read_parquet(tmp_path / "out" / VOLUMES_TABLE))


def _manifest(root: Path, rels: list[str]) -> pd.DataFrame:
    rows = []
    for rel in rels:
        ds = pydicom.dcmread(root / rel, stop_before_pixels=True)
        rows.append(
            {
                "path": rel, "patient": ds.PatientID, "study_uid": ds.StudyInstanceUID,
                "series_uid": ds.SeriesInstanceUID, "sop_uid": ds.SOPInstanceUID,
                "modality": ds.Modality, "site": "S-07", "sex": "F", "age_years": 61.0,
                "sha256": sha256_file(root / rel),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def test_batches_upsert_and_config_change_recomputes_only_its_modality(tmp_path: Path) -> None:
    deid, vols = tmp_path / "deid", tmp_path / "volumes"
    a = write_series(deid / "pa" / "st" / "se1", PhantomSeries(name="a", slices=4))
    b = write_series(deid / "pb" / "st" / "se2", PhantomSeries(name="b", slices=4, modality="MR"))
    rel = lambda ps: [p.relative_to(deid).as_posix() for p in ps]  # noqa: E731
    r1 = normalize_batch(_manifest(deid, rel(a)), deid, vols, batch="b1")
    r2 = normalize_batch(_manifest(deid, rel(b)), deid, vols, batch="b2")
    assert r1.written == r2.written == 1
    vol = pd.read_parquet(vols / VOLUMES_TABLE)
    assert sorted(vol["batch"]) == ["b1", "b2"] and set(vol["site"]) == {"S-07"}
    assert set(vol["sex"]) == {"F"} and set(vol["age_years"]) == {61.0}

    # change the CT window only: the CT series is recomputed, the MR one is not
    cfg = load_config()
    ct = dict(cfg.modalities["CT"])
    ct["intensity"] = {**ct["intensity"], "a_max": 500.0}
    changed = NormalizeConfig(cfg.assembly, cfg.defaults, {**cfg.modalities, "CT": ct})
    both = _manifest(deid, rel(a) + rel(b))
    r3 = normalize_batch(both, deid, vols, batch="b3", config=changed)
    assert (r3.written, r3.skipped_unchanged) == (1, 1)
    vol2 = pd.read_parquet(vols / VOLUMES_TABLE)
    assert len(vol2) == 2 and not vol2["sample_id"].duplicated().any()
    assert dict(zip(vol2["modality"], vol2["batch"], strict=True)) == {"CT": "b3", "MR": "b2"}

    # changed content of one slice: new digest, row replaced in place
    ds = pydicom.dcmread(a[0])
    ds.RescaleIntercept = "-1000"
    ds.save_as(a[0])
    r4 = normalize_batch(_manifest(deid, rel(a)), deid, vols, batch="b4", config=changed)
    assert r4.written == 1 and len(pd.read_parquet(vols / VOLUMES_TABLE)) == 2


def test_series_that_becomes_quarantined_loses_its_volume(tmp_path: Path) -> None:
    deid, vols = tmp_path / "deid", tmp_path / "volumes"
    paths = write_series(deid / "s", PhantomSeries(slices=5))
    rels = [p.relative_to(deid).as_posix() for p in paths]
    normalize_batch(_manifest(deid, rels), deid, vols, batch="b1")
    (nifti,) = pd.read_parquet(vols / VOLUMES_TABLE)["nifti_path"]
    r = normalize_batch(_manifest(deid, rels[:2] + rels[3:]), deid, vols, batch="b2")
    assert r.quarantined == {MISSING_SLICES: 1}
    assert len(pd.read_parquet(vols / VOLUMES_TABLE)) == 0 and not (vols / nifti).exists()
    q = pd.read_parquet(vols / QUARANTINE_TABLE)
    assert list(q["reason"]) == [MISSING_SLICES] and list(q["batch"]) == ["b2"]


def test_undecodable_pixels_are_quarantined_and_the_rest_continues(tmp_path: Path) -> None:
    src = tmp_path / "src"
    bad = write_series(src / "bad", PhantomSeries(name="bad", slices=3))
    write_series(src / "good", PhantomSeries(name="good", slices=3))
    ds = pydicom.dcmread(bad[1])
    ds.PixelData = ds.PixelData[:100]  # truncated pixel data
    ds.save_as(bad[1])
    r = normalize_tree(src, tmp_path / "out")
    assert r.written == 1 and r.quarantined == {LOAD_ERROR: 1}
    _accounted(r)
    message = pd.read_parquet(tmp_path / "out" / QUARANTINE_TABLE)["message"].iloc[0]
    assert str(src) not in message


def test_deid_manifest_in_src_supplies_site_sex_age(tmp_path: Path) -> None:
    src = tmp_path / "src"
    paths = write_series(src / "p" / "s", PhantomSeries(slices=3))
    _manifest(src, [p.relative_to(src).as_posix() for p in paths]).to_parquet(src / "deid.parquet")
    normalize_tree(src, tmp_path / "out")
    row = pd.read_parquet(tmp_path / "out" / VOLUMES_TABLE).iloc[0]
    assert (row["site"], row["sex"], row["age_years"]) == ("S-07", "F", 61.0)


def test_real_pydicom_series_and_single_images(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(TEST_FILES / "dicomdirtests" / "98892001" / "CT5N", src / "ct5n")
    shutil.copytree(TEST_FILES / "dicomdirtests" / "98892003" / "MR2", src / "mr2")
    for name in ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm"):
        shutil.copy(TEST_FILES / name, src / name)
    data_store = pytest.importorskip("data_store")
    store = Path(data_store.__file__).parent / "data"
    for name in (
        "MR2_UNCR.dcm",
        "MR2_J2KR.dcm",
        "eCT_Supplemental.dcm",
        "emri_small.dcm",
        "SC_rgb.dcm",
    ):
        shutil.copy(store / name, src / name)
    r = normalize_tree(src, tmp_path / "out")
    _accounted(r)
    assert set(r.quarantined) <= set(REASONS)
    vol = pd.read_parquet(tmp_path / "out" / VOLUMES_TABLE)
    ct5n = vol[(vol["modality"] == "CT") & (vol["n_instances"] == 5)]
    assert len(ct5n) == 1 and list(ct5n["orig_shape"].iloc[0]) == [16, 16, 5]
    q = pd.read_parquet(tmp_path / "out" / QUARANTINE_TABLE)
    assert {"MULTIFRAME", "MULTIFRAME_ENHANCED", "SINGLE_SLICE"} <= set(q["reason"])


def test_a_pool_is_started_only_when_each_worker_has_enough_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (plan,) = assemble(
        [i for i in (read_instance(p) for p in write_series(tmp_path, PhantomSeries())) if i]
    )
    assert isinstance(plan, VolumePlan)
    voxels = sum((i.rows or 0) * (i.cols or 0) for i in plan.instances)
    monkeypatch.setattr(run_module.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    monkeypatch.setattr(run_module, "POOL_MIN_VOXELS_PER_WORKER", voxels * 3)
    assert run_module.pool_size([plan] * 4, workers=2) == 1  # 4 plans: work for 1 worker
    assert run_module.pool_size([plan] * 6, workers=2) == 2
    assert run_module.pool_size([plan] * 60, workers=8) == 2  # never more than the CPUs
    assert run_module.pool_size([plan] * 60, workers=1) == 1
    monkeypatch.setattr(run_module, "POOL_MIN_VOXELS_PER_WORKER", 0)
    assert run_module.pool_size([plan], workers=2) == 1  # one plan, one worker


@pytest.mark.slow
def test_process_pool_gives_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    write_series(src / "a", PhantomSeries(name="a", slices=4))
    write_series(src / "b", PhantomSeries(name="b", slices=4, modality="MR"))
    one = normalize_tree(src, tmp_path / "one", workers=1)
    monkeypatch.setattr(run_module, "POOL_MIN_VOXELS_PER_WORKER", 0)  # a pool even for this
    two = normalize_tree(src, tmp_path / "two", workers=2)
    assert one.written == two.written == 2
    v1 = pd.read_parquet(tmp_path / "one" / VOLUMES_TABLE)
    pd.testing.assert_frame_equal(v1, pd.read_parquet(tmp_path / "two" / VOLUMES_TABLE))


def test_thread_count_is_bounded_by_cpus_series_and_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_module.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    assert run_module.thread_count(32) == 2
    assert run_module.thread_count(1) == 1
    assert run_module.thread_count(0) == 1
    monkeypatch.setattr(run_module.os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    assert run_module.thread_count(32) == run_module.MAX_THREADS


def test_series_in_threads_give_the_bytes_of_one_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    src = tmp_path / "src"
    write_series(src / "a", PhantomSeries(name="a", slices=4))
    write_series(src / "b", PhantomSeries(name="b", slices=5, modality="MR"))
    write_series(src / "c", PhantomSeries(name="c", slices=3))
    write_projection(src / "cr", rows=12, cols=10)
    monkeypatch.setattr(run_module.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    monkeypatch.setattr(run_module, "MAX_THREADS", 1)
    one = normalize_tree(src, tmp_path / "one")
    threads = torch.get_num_threads()
    monkeypatch.setattr(run_module, "MAX_THREADS", 4)
    used: list[int] = []
    real = run_module.ThreadPoolExecutor

    def counting(max_workers: int) -> object:
        used.append(max_workers)
        return real(max_workers=max_workers)

    monkeypatch.setattr(run_module, "ThreadPoolExecutor", counting)
    two = normalize_tree(src, tmp_path / "two")
    assert used == [2]  # two CPUs: two series at a time
    assert torch.get_num_threads() == threads  # the caller's torch threads are given back
    assert one.written == two.written == 4
    v1 = pd.read_parquet(tmp_path / "one" / VOLUMES_TABLE)
    pd.testing.assert_frame_equal(v1, pd.read_parquet(tmp_path / "two" / VOLUMES_TABLE))
    for rel in v1["nifti_path"]:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()


def test_generated_studies_agree_with_their_truth_masks(synth_studies: tuple[Path, Path]) -> None:
    """medcurate.synth writes each series' label mask with the RAS affine it rendered with."""

    studies, truth = synth_studies
    labels = pd.read_parquet(truth / "labels.parquet")
    picked = labels[labels["modality"].isin(["CT", "MR"])].drop_duplicates("series_kind")
    assert len(picked) >= 2
    for row in picked.head(4).to_dict("records"):
        files = sorted((studies / row["series_dir"]).glob("*"))
        (plan,) = assemble([i for i in (read_instance(p) for p in files) if i])
        assert isinstance(plan, VolumePlan) and len(plan.instances) == row["n_instances"]
        loaded = load_plan(plan)
        mine = nib.as_closest_canonical(nib.Nifti1Image(loaded.array, loaded.affine))
        mask = nib.as_closest_canonical(nib.load(truth / row["mask_file"]))
        assert mine.shape == mask.shape, row["series_kind"]
        assert np.allclose(mine.affine, mask.affine, atol=1e-2), row["series_kind"]


def _deid_batch(z: Zones, batch: str, series: list[PhantomSeries]) -> None:
    """Phantom series under deid/ with the batch's manifest, as de-identification leaves them."""
    rows = []
    for k, spec in enumerate(series):
        for p in write_series(z.deid / "PAT1" / "STU1" / f"SER{k}", spec):
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            rows.append(
                {"path": p.relative_to(z.deid).as_posix(), "series_uid": ds.SeriesInstanceUID,
                 "site": "S-01", "sex": "M", "age_years": 50.0, "sha256": sha256_file(p)}
            )  # fmt: skip
    z.deid_manifests.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(z.deid_manifest(batch))


def test_run_normalize_writes_a_batch_into_the_zones_and_check_normalize_finds_damage(
    zones_tmp: Zones,
) -> None:

    z = zones_tmp
    _deid_batch(
        z, "b1", [PhantomSeries(name="a", slices=4), PhantomSeries(name="b", drop_slices=(5,))]
    )
    r = run_normalize(z, "b1")
    assert isinstance(r, StageResult) and r.problems == []
    assert (r.written, r.quarantined) == (1, {MISSING_SLICES: 1})
    assert check_normalize(z, "b1") == []
    q = pd.read_parquet(z.volumes_quarantine)
    assert list(q["reason"]) == ["MISSING_SLICES"] and "missing" in q["message"].iloc[0]
    [row] = pd.read_parquet(z.volumes_table).to_dict("records")
    z.volume_file(row["nifti_path"]).write_bytes(b"damaged")
    assert check_normalize(z, "b1") == [f"{row['sample_id']}: NIfTI sha256 differs from the table"]


def test_quarantine_tables_of_older_versions_are_upgraded_on_the_next_upsert(
    zones_tmp: Zones,
) -> None:
    """Before issue 10 the table said ``detail`` and lower-case reasons; other series keep their
    rows, renamed, when a batch is upserted."""
    z = zones_tmp
    _deid_batch(z, "b1", [PhantomSeries(name="a", slices=4)])
    old = pd.DataFrame(
        [{"sample_id": "0" * 16, "patient": "P", "study_uid": "2.25.1", "series_uid": "2.25.2",
          "part": "missing_slices", "modality": "CT", "reason": "missing_slices",
          "detail": "1 slice(s) missing", "n_instances": 3, "source_digest": "d",
          "source_paths": ["a.dcm"], "batch": "b0"}]
    )  # fmt: skip
    z.volumes.mkdir(parents=True, exist_ok=True)
    old.to_parquet(z.volumes_quarantine, index=False)
    run_normalize(z, "b1")
    q = pd.read_parquet(z.volumes_quarantine)
    assert list(q.columns) == QUARANTINE_COLUMNS
    assert q.to_dict("records")[0]["reason"] == "MISSING_SLICES"
    assert q.to_dict("records")[0]["message"] == "1 slice(s) missing"
