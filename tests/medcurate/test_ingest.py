"""Ingest: inbox claiming, batch accounting, quarantine, duplicates, idempotence, the catalog."""

from __future__ import annotations

import csv
import os
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files

from medcurate import ingest as ing
from medcurate.config import Zones
from medcurate.stage import StageResult

CONTRACT_COLUMNS = [
    "batch", "relpath", "path", "sha256", "size_bytes", "status", "reason", "message",
    "sop_class_uid", "sop_uid", "study_uid", "series_uid",
    "frame_of_reference_uid", "modality", "manufacturer", "transfer_syntax_uid", "rows",
    "columns", "number_of_frames", "image_position_patient", "image_orientation_patient",
    "pixel_spacing", "slice_thickness",
]  # fmt: skip


def _bad_tree(root: Path) -> dict[str, str | None]:
    """A small tree of good and broken files; returns relpath -> expected reason (None = ok)."""
    ct = Path(get_testdata_file("CT_small.dcm"))
    (root / "Smith^John" / "series1").mkdir(parents=True)
    (root / "misc").mkdir()
    shutil.copyfile(ct, root / "Smith^John" / "series1" / "ct.dcm")
    shutil.copyfile(get_testdata_file("MR_small_RLE.dcm"), root / "Smith^John" / "mr.dcm")
    (root / "misc" / "empty.dcm").write_bytes(b"")
    data = ct.read_bytes()
    (root / "misc" / "half.dcm").write_bytes(data[: len(data) // 2])
    (root / "misc" / "letter.txt").write_text("Dear Dr Who, please find enclosed...\n")
    ds = pydicom.dcmread(ct)
    del ds.PixelData
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["nopix"])
    ds.save_as(root / "misc" / "nopix.dcm", enforce_file_format=False)
    ds = pydicom.dcmread(ct)
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.9.9999.1"
    ds.save_as(root / "misc" / "uts.dcm", enforce_file_format=False)
    shutil.copyfile(get_testdata_file("DICOMDIR"), root / "DICOMDIR")
    shutil.copyfile(get_testdata_file("test-SR.dcm"), root / "misc" / "report.dcm")
    return {
        "Smith^John/series1/ct.dcm": None,
        "Smith^John/mr.dcm": None,
        "misc/empty.dcm": "EMPTY_FILE",
        "misc/half.dcm": "TRUNCATED",
        "misc/letter.txt": "NOT_DICOM",
        "misc/nopix.dcm": "NO_PIXEL_DATA",
        "misc/uts.dcm": "UNSUPPORTED_TRANSFER_SYNTAX",
        "DICOMDIR": "DICOMDIR",
        "misc/report.dcm": "NOT_AN_IMAGE",
    }


def _ingest_tree(src: Path, z: Zones) -> tuple[str, ing.IngestResult]:
    ing.drop_into_inbox(src, z)
    batch = ing.claim_inbox(z)
    assert batch is not None
    return batch, ing.run_ingest(z, batch)


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- inbox and claiming -------------------------------------------------------------------------


def test_drop_keeps_relative_paths(tmp_path: Path, zones_tmp: Zones) -> None:
    expected = _bad_tree(tmp_path / "src")
    assert ing.drop_into_inbox(tmp_path / "src", zones_tmp) == len(expected)
    got = {p.relative_to(zones_tmp.inbox).as_posix() for p in _all_files(zones_tmp.inbox)}
    assert got == set(expected)


def test_claim_moves_everything_and_empties_inbox(tmp_path: Path, zones_tmp: Zones) -> None:
    expected = _bad_tree(tmp_path / "src")
    ing.drop_into_inbox(tmp_path / "src", zones_tmp)
    batch = ing.claim_inbox(zones_tmp)
    assert batch is not None and re.fullmatch(r"b\d{8}-\d{6}-[0-9a-f]{6}", batch)
    assert "Smith" not in batch
    assert list(zones_tmp.inbox.iterdir()) == []  # files and emptied subfolders gone
    raw = zones_tmp.raw / batch
    assert {p.relative_to(raw).as_posix() for p in _all_files(raw)} == set(expected)
    assert ing.claim_inbox(zones_tmp) is None  # nothing is claimed twice


def test_claim_waits_for_settling_files(tmp_path: Path, zones_tmp: Zones) -> None:
    (zones_tmp.inbox / "sub").mkdir(parents=True)
    old, fresh = zones_tmp.inbox / "sub" / "old.dcm", zones_tmp.inbox / "fresh.dcm"
    old.write_bytes(b"a")
    fresh.write_bytes(b"b")
    past = time.time() - 60
    os.utime(old, (past, past))
    batch = ing.claim_inbox(zones_tmp, min_age_s=10)
    assert batch is not None
    assert (zones_tmp.raw / batch / "sub" / "old.dcm").is_file()
    assert fresh.is_file() and not (zones_tmp.inbox / "sub").exists()
    assert ing.claim_inbox(zones_tmp, min_age_s=10) is None
    assert ing.claim_inbox(zones_tmp) is not None


def test_claim_ignores_partial_dotfiles(zones_tmp: Zones) -> None:
    (zones_tmp.inbox / ".scan.dcm.part").write_bytes(b"half")
    assert ing.claim_inbox(zones_tmp) is None


def test_batch_id_is_deterministic_and_content_bound() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    a = ing.batch_id(["aa", "bb"], now)
    assert a == ing.batch_id(["bb", "aa"], now)
    assert a.startswith("b20260102-030405-")
    assert a != ing.batch_id(["aa", "cc"], now)


def test_same_second_same_content_gets_a_new_batch(zones_tmp: Zones) -> None:
    (zones_tmp.inbox / "x").write_bytes(b"same")
    b1 = ing.claim_inbox(zones_tmp)
    (zones_tmp.inbox / "x").write_bytes(b"same")
    b2 = ing.claim_inbox(zones_tmp)
    assert b1 and b2 and b1 != b2
    assert (zones_tmp.raw / b1 / "x").is_file() and (zones_tmp.raw / b2 / "x").is_file()


# --- one batch ----------------------------------------------------------------------------------


def test_ingest_sorts_quarantines_and_accounts(tmp_path: Path, zones_tmp: Zones) -> None:
    expected = _bad_tree(tmp_path / "src")
    batch, res = _ingest_tree(tmp_path / "src", zones_tmp)
    assert res.received == len(expected) == res.catalogued + res.quarantined + res.duplicates
    assert (res.catalogued, res.quarantined, res.duplicates) == (2, 7, 0)
    assert res.reasons == {c: 1 for c in expected.values() if c}
    df = ing.read_catalog(zones_tmp, batch)
    assert list(df.columns) == CONTRACT_COLUMNS
    got = {r.relpath: (r.reason or None) for r in df.itertuples()}
    assert got == expected
    for r in df.itertuples():
        folder = {"ok": zones_tmp.raw, "quarantined": zones_tmp.quarantine}[r.status]
        assert Path(r.path) == folder / batch / r.relpath
        assert Path(r.path).is_file()
    ok = df[df.status == "ok"].set_index("relpath")
    assert ok.loc["Smith^John/series1/ct.dcm", "modality"] == "CT"
    assert ok.loc["Smith^John/series1/ct.dcm", "rows"] == 128
    assert len(ok.loc["Smith^John/series1/ct.dcm", "image_position_patient"]) == 3
    assert ok.loc["Smith^John/mr.dcm", "transfer_syntax_uid"] == pydicom.uid.RLELossless
    # raw/<batch> now holds only the good files
    assert {p.name for p in _all_files(zones_tmp.raw / batch)} == {"ct.dcm", "mr.dcm"}
    with open(zones_tmp.ingest_reasons(batch)) as f:
        reasons = {row["relpath"]: row["reason"] for row in csv.DictReader(f)}
    assert reasons == {k: c for k, c in expected.items() if c}
    assert ing.check_ingest(zones_tmp, batch) == []


def test_summary_and_metadata_are_phi_free(tmp_path: Path, zones_tmp: Zones) -> None:
    _bad_tree(tmp_path / "src")
    _, res = _ingest_tree(tmp_path / "src", zones_tmp)
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    text = res.summary_line() + repr(res.metadata())
    for phi in ("Smith", "John", str(ct.PatientName), str(ct.PatientID), str(ct.SOPInstanceUID)):
        assert phi not in text
    md = res.metadata()
    assert md["received"] == 9 and md["accounting_balanced"] is True
    assert md["modalities"] == {"CT": 1, "MR": 1}
    assert md["reasons"]["TRUNCATED"] == 1


def test_ingest_is_idempotent(tmp_path: Path, zones_tmp: Zones) -> None:
    _bad_tree(tmp_path / "src")
    batch, first = _ingest_tree(tmp_path / "src", zones_tmp)
    catalog = zones_tmp.catalog_file(batch).read_bytes()
    layout = _all_files(zones_tmp.restricted)
    second = ing.run_ingest(zones_tmp, batch)
    assert second == first
    assert zones_tmp.catalog_file(batch).read_bytes() == catalog
    assert _all_files(zones_tmp.restricted) == layout


def test_interrupted_run_is_finished_by_the_next(
    tmp_path: Path, zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    _bad_tree(tmp_path / "src")
    ing.drop_into_inbox(tmp_path / "src", zones_tmp)
    batch = ing.claim_inbox(zones_tmp)
    assert batch
    real_move, calls = ing._move, []

    def flaky(src: Path, dst: Path) -> None:
        calls.append(src)
        if len(calls) > 2:
            raise OSError("disk full")
        real_move(src, dst)

    monkeypatch.setattr(ing, "_move", flaky)
    with pytest.raises(OSError) as failure:
        ing.run_ingest(zones_tmp, batch)
    # every move was tried (one bad file does not stop the others); the error names no path
    assert len(calls) == 7 and "Smith" not in str(failure.value)
    assert f"batch {batch}: 5 file(s) could not be moved" in str(failure.value)
    assert ing.pending_batches(zones_tmp) == [batch]  # unfinished: found by the next run
    monkeypatch.setattr(ing, "_move", real_move)
    res = ing.run_ingest(zones_tmp, batch)
    assert (res.received, res.catalogued, res.quarantined) == (9, 2, 7)
    assert ing.check_ingest(zones_tmp, batch) == []
    assert ing.pending_batches(zones_tmp) == []


def test_duplicates_within_and_across_batches(tmp_path: Path, zones_tmp: Zones) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    ct = get_testdata_file("CT_small.dcm")
    shutil.copyfile(ct, src / "a" / "one.dcm")
    shutil.copyfile(ct, src / "a" / "two.dcm")  # same bytes, other name
    (src / "a" / "empty").write_bytes(b"")
    b1, r1 = _ingest_tree(src, zones_tmp)
    assert (r1.catalogued, r1.quarantined, r1.duplicates) == (1, 1, 1)
    dup = ing.read_catalog(zones_tmp, b1).set_index("relpath").loc["a/two.dcm"]
    assert dup.status == "duplicate" and dup.reason == "DUPLICATE"
    assert Path(dup.path) == zones_tmp.duplicates / b1 / "a" / "two.dcm"
    # re-dropping the whole batch: everything is a duplicate, nothing re-validated
    b2, r2 = _ingest_tree(src, zones_tmp)
    assert b2 != b1
    assert (r2.received, r2.catalogued, r2.quarantined, r2.duplicates) == (3, 0, 0, 3)
    assert ing.check_ingest(zones_tmp, b2) == []
    everything = ing.read_catalog(zones_tmp)
    assert len(everything) == 6 and list(everything.batch.unique()) == sorted([b1, b2])


@pytest.mark.slow
def test_batches_ingested_at_once_still_find_each_others_duplicates(
    tmp_path: Path, zones_tmp: Zones
) -> None:
    """Two processes ingest two claimed batches holding the same file at the same moment: exactly
    one copy is catalogued, the other is a duplicate (the catalog lock serializes the decision)."""

    batches = []
    for name in ("first", "second"):
        src = tmp_path / name
        src.mkdir()
        shutil.copyfile(get_testdata_file("CT_small.dcm"), src / f"{name}.dcm")
        ing.drop_into_inbox(src, zones_tmp)
        batch = ing.claim_inbox(zones_tmp)
        assert batch is not None
        batches.append(batch)
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(ing.run_ingest, [zones_tmp, zones_tmp], batches))
    assert sorted((r.catalogued, r.duplicates) for r in results) == [(0, 1), (1, 0)]
    assert (ing.read_catalog(zones_tmp)["status"] == "ok").sum() == 1


def test_unknown_batch_is_an_error(zones_tmp: Zones) -> None:
    with pytest.raises(FileNotFoundError):
        ing.run_ingest(zones_tmp, "b20260101-000000-000000")


def test_read_catalog_empty_and_unknown(zones_tmp: Zones) -> None:
    df = ing.read_catalog(zones_tmp)
    assert df.empty and list(df.columns) == CONTRACT_COLUMNS
    with pytest.raises(FileNotFoundError):
        ing.read_catalog(zones_tmp, "b20260101-000000-000000")
    with pytest.raises(ValueError):
        ing.read_catalog(zones_tmp, "../etc")


@pytest.mark.slow
def test_every_pydicom_test_file_is_accounted_for(tmp_path: Path, zones_tmp: Zones) -> None:
    """All of pydicom's and pydicom-data's test files in one batch: none crashes the run, every
    file has a row with a status and (unless ok) a reason; re-dropping gives only duplicates."""
    src = tmp_path / "src"
    files = [Path(f) for f in get_testdata_files() if Path(f).is_file()]
    for i, f in enumerate(files):
        dst = src / f"{i:03d}" / f.name
        dst.parent.mkdir(parents=True)
        shutil.copyfile(f, dst)
    batch, res = _ingest_tree(src, zones_tmp)
    assert res.received == len(files)
    assert res.received == res.catalogued + res.quarantined + res.duplicates
    assert res.catalogued > 50 and res.quarantined > 50
    df = ing.read_catalog(zones_tmp, batch)
    assert len(df) == len(files)
    assert set(df.status) == {"ok", "quarantined", "duplicate"}
    assert (df[df.status != "ok"].reason != "").all()
    assert (df[df.status == "ok"].reason == "").all()
    assert sum(res.reasons.values()) == res.quarantined
    assert ing.check_ingest(zones_tmp, batch) == []
    # the same files again: all duplicates of the first batch
    _, again = _ingest_tree(src, zones_tmp)
    assert again.duplicates == again.received == len(files)


@pytest.mark.slow
def test_generated_studies_truncated_and_redropped(
    synth_studies: tuple[Path, Path], tmp_path: Path, zones_tmp: Zones
) -> None:
    """Generated files: all catalogued; one cut in half is TRUNCATED; a re-drop is duplicates."""
    studies, _ = synth_studies
    files = _all_files(studies)
    src = tmp_path / "src"
    shutil.copytree(studies, src)
    victim = src / files[len(files) // 2].relative_to(studies)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    batch, res = _ingest_tree(src, zones_tmp)
    assert (res.received, res.catalogued, res.quarantined) == (len(files), len(files) - 1, 1)
    assert res.reasons == {"TRUNCATED": 1}
    row = ing.read_catalog(zones_tmp, batch).set_index("status").loc["quarantined"]
    assert row.relpath == victim.relative_to(src).as_posix()
    _, again = _ingest_tree(studies, zones_tmp)
    # the cut file's original content is new; every other file is a duplicate
    assert (again.duplicates, again.catalogued) == (len(files) - 1, 1)


def test_run_ingest_is_a_stage_and_check_ingest_finds_a_moved_file(
    tmp_path: Path, zones_tmp: Zones
) -> None:

    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(get_testdata_file("CT_small.dcm"), src / "ct.dcm")
    (src / "notes.txt").write_text("not an image")
    batch, res = _ingest_tree(src, zones_tmp)
    assert isinstance(res, StageResult) and res.problems == []
    assert f"batch {batch}" in res.summary_line() and res.metadata()["received"] == 2
    assert ing.check_ingest(zones_tmp, batch) == []
    (zones_tmp.raw_batch(batch) / "ct.dcm").unlink()
    problems = ing.check_ingest(zones_tmp, batch)
    assert any("not where the catalog says" in p for p in problems)


def test_catalogs_of_older_versions_are_read_with_the_new_column_names(
    tmp_path: Path, zones_tmp: Zones
) -> None:
    """Catalogs written before issue 10 say sop_instance_uid etc.; they still read and resume."""

    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(get_testdata_file("CT_small.dcm"), src / "ct.dcm")
    batch, _ = _ingest_tree(src, zones_tmp)
    path = zones_tmp.catalog_file(batch)
    new = pq.read_table(path)
    old_names = {"sop_uid": "sop_instance_uid", "study_uid": "study_instance_uid"}
    old_names["series_uid"] = "series_instance_uid"
    pq.write_table(new.rename_columns([old_names.get(n, n) for n in new.column_names]), path)
    df = ing.read_catalog(zones_tmp, batch)
    assert list(df.columns) == CONTRACT_COLUMNS and df["series_uid"].notna().all()
    assert ing.run_ingest(zones_tmp, batch).catalogued == 1
    assert pq.read_table(path).equals(new)


def test_validation_workers_only_for_batches_that_repay_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ing.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    assert ing.validation_workers(ing.POOL_MIN_FILES - 1) == 1
    assert ing.validation_workers(1170) == 2
    monkeypatch.setattr(ing.os, "sched_getaffinity", lambda _: set(range(64)), raising=False)
    assert ing.validation_workers(1170) == ing.MAX_WORKERS


def test_validating_in_workers_gives_the_same_catalog(tmp_path: Path) -> None:
    """Bad files, duplicates and good ones: forked workers write the catalog one process does."""
    expected = _bad_tree(tmp_path / "src")
    ct = get_testdata_file("CT_small.dcm")
    shutil.copyfile(ct, tmp_path / "src" / "misc" / "again.dcm")  # a duplicate of the first copy
    tables = []
    for workers in (1, 2):
        z = Zones(tmp_path / f"home{workers}")
        z.ensure()
        ing.drop_into_inbox(tmp_path / "src", z)
        batch = ing.claim_inbox(z)
        assert batch is not None
        res = ing.run_ingest(z, batch, workers=workers)
        assert res.received == len(expected) + 1
        assert res.received == res.catalogued + res.quarantined + res.duplicates
        assert res.duplicates == 1
        df = ing.read_catalog(z, batch).drop(columns=["path", "batch"])
        # a duplicate's message names the first copy by its batch, whose name holds the time
        df["message"] = df["message"].str.replace(batch, "BATCH", regex=False)
        tables.append(df)
        assert ing.check_ingest(z, batch) == []
    pd.testing.assert_frame_equal(tables[0], tables[1])
