"""Issue 9, de-identification and normalization rooms: one test per row (3, 4, 11, 14, 15).

Each builds the hostile input or fault of its row and checks the new behaviour: one bad file is
quarantined with a reason and the batch goes on; no identifier of the patient survives anywhere;
restricted/ is owner-only whatever the umask; litter of killed runs is cleaned and the re-run is
byte-identical; an unwritable target fails cleanly before any output exists.
"""

from __future__ import annotations

import csv
import os
import stat
import struct
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import dagster as dg
import pandas as pd
import pydicom
import pytest

from assets.deid import deid_instances, deid_instances_verified
from assets.resources import DeidSecrets, MedcurateHome
from medcurate.deid import deidentify_tree
from medcurate.deid.run import DeidTargetError
from medcurate.deid.verify import verify
from medcurate.ingest import claim_inbox, drop_into_inbox, read_catalog, run_ingest
from medcurate.io import alive, clean_litter
from medcurate.normalize import normalize_tree
from medcurate.normalize.phantom import PhantomSeries, write_series
from tests.deid_helpers import ct_instance, item, save, seq

SALT = b"hostile-deid-salt-0001"
NAME = "ZQXSURNAME^ZQXGIVEN"
MRN = "ZQXMRN4711"
PHI = (b"zqxsurname", b"zqxgiven", b"zqxmrn4711")


def _deep(depth: int, defined: bool, tag: tuple[int, int] = (0x0040, 0x0275)) -> bytes:
    """``depth`` sequences, each holding one item that holds the next (explicit VR LE)."""
    if not defined:
        head = struct.pack("<HH2sHL", *tag, b"SQ", 0, 0xFFFFFFFF)
        head += struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        tail = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
        return head * depth + tail * depth
    inner = b""
    for _ in range(depth):
        it = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
        inner = struct.pack("<HH2sHL", *tag, b"SQ", 0, len(it)) + it
    return inner


def _write_deep(path: Path, sop: str, depth: int = 1000, defined: bool = True) -> Path:
    """A CT instance with a nested sequence spliced in before the pixel data."""
    save(ct_instance(sop_uid=sop), path)
    data = path.read_bytes()
    k = data.index(b"\xe0\x7f\x10\x00OW")
    path.write_bytes(data[:k] + _deep(depth, defined) + data[k:])
    return path


def _batch(root: Path, deep: bool = True) -> Path:
    base = "1.2.826.0.1.3680043.9.7777.1.1.1."
    for i in range(3):
        save(ct_instance(sop_uid=f"{base}{i + 1}"), root / f"ZQXSURNAME/ok{i}.dcm")
    us = ct_instance(sop_uid=f"{base}50")
    us.Modality = "US"  # quarantined as burned_in: restricted/ gets a copy and a reason
    us.RecognizableVisualFeatures = "YES"  # OCR cleans text, not faces: still refused
    save(us, root / "ZQXSURNAME/us.dcm")
    if deep:
        _write_deep(root / "ZQXSURNAME/deep_defined.dcm", f"{base}98")
        _write_deep(root / "ZQXSURNAME/deep_undefined.dcm", f"{base}99", defined=False)
    return root


def _reasons(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["source"]: r["reason"] for r in csv.DictReader(fh)}


# -- row 3 --------------------------------------------------------------------------------------
def test_row3_sequence_nested_1000_deep_is_quarantined_and_the_batch_goes_on(
    tmp_path: Path,
) -> None:
    src = _batch(tmp_path / "src")
    result = deidentify_tree(src, tmp_path / "out", tmp_path / "restricted", SALT)
    assert result.received == 6 and result.written == 3
    assert result.quarantined == {"SEQUENCE_TOO_DEEP": 2, "BURNED_IN": 1}
    reasons = _reasons(tmp_path / "restricted" / "quarantine" / "reasons.csv")
    assert reasons["ZQXSURNAME/deep_defined.dcm"] == "SEQUENCE_TOO_DEEP"
    assert reasons["ZQXSURNAME/deep_undefined.dcm"] == "SEQUENCE_TOO_DEEP"
    assert (tmp_path / "restricted" / "crosswalk" / "crosswalk.csv").exists()
    assert len(pd.read_parquet(tmp_path / "out" / "deid.parquet")) == 3


@pytest.mark.slow
@pytest.mark.integration
def test_row3_deep_file_through_the_asset(tmp_path: Path, zones_tmp, salt: bytes) -> None:  # type: ignore[no-untyped-def]

    drop_into_inbox(_batch(tmp_path / "src", deep=False), zones_tmp)
    batch = claim_inbox(zones_tmp)
    assert batch is not None
    run_ingest(zones_tmp, batch)
    catalog = read_catalog(zones_tmp, batch)
    ok = [Path(p) for p in catalog.loc[catalog["status"] == "ok", "path"]]
    # the deep file "passed ingest": deid must defend itself (ingest may refuse it one day)
    victim = sorted(p for p in ok if "ok0" in p.name)[0]
    victim.chmod(0o600)
    _write_deep(victim, "1.2.826.0.1.3680043.9.7777.1.1.1.1")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batch", [batch])
    result = dg.materialize(
        [deid_instances, deid_instances_verified],
        partition_key=batch,
        instance=instance,
        resources={"home": MedcurateHome(home=str(zones_tmp.home)), "secrets": DeidSecrets()},
        raise_on_error=False,
    )
    assert result.success
    [mat] = result.asset_materializations_for_node("deid_instances")
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["quarantined_SEQUENCE_TOO_DEEP"] == 1
    assert md["received"] == len(ok) == md["written"] + md["quarantined"]
    assert zones_tmp.deid_reasons(batch).exists()
    assert zones_tmp.crosswalk(batch).exists()


# -- row 4 --------------------------------------------------------------------------------------
def _planted_series(root: Path) -> list[Path]:
    """A 12-slice phantom series whose patient's name and MRN sit in unlisted elements."""
    paths = write_series(root / "s", PhantomSeries(patient=MRN))
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.PatientName = NAME
        ds.PatientBirthDate = "19591224"
        ds.Manufacturer = NAME  # LO, not in Table E.1-1
        ds.BodyPartExamined = MRN  # CS, not in the table; a valid code string
        ds.Laterality = "ZQXGIVEN"  # CS
        ds.ManufacturerModelName = f"SCANNER {MRN}"  # LO
        ds.ConvolutionKernel = "ZQXSURNAME"  # SH
        ds.add_new(0x00091010, "LO", "ZQX STATION PRIVATE")
        ds.add_new(0x00091001, "LO", f"WS ZQXSURNAME {MRN}")  # private free text
        ds.ContentSequence = seq(item(TextValue=f"ref {MRN}", ConceptNameCodeSequence=seq(
            item(CodeValue=MRN, CodingSchemeDesignator="99ZQX", CodeMeaning="ZQXGIVEN")
        )))  # fmt: skip
        ds.save_as(p, enforce_file_format=True)
    return paths


def _all_output_bytes(folder: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()).lower()


@pytest.mark.slow
def test_row4_identifiers_in_unlisted_elements_survive_nowhere(tmp_path: Path) -> None:
    _planted_series(tmp_path / "src")
    good = ct_instance(sop_uid="1.2.826.0.1.3680043.9.7777.8.1", patient_id="ZQXPID0777")
    good.BodyPartExamined = "CHEST"
    save(good, tmp_path / "src" / "good.dcm")
    out, vol = tmp_path / "out", tmp_path / "vol"
    result = deidentify_tree(src := tmp_path / "src", out, tmp_path / "restricted", SALT)
    assert src.is_dir() and result.written == 13 and result.verifier_hits == 0
    blob = _all_output_bytes(out)
    for token in PHI:
        assert token not in blob
    manifest = pd.read_parquet(out / "deid.parquet")
    assert not any(t.decode() in manifest.to_csv().lower() for t in PHI)
    # legitimate values survive: vendor and body part on the clean instance
    kept = [pydicom.dcmread(p) for p in out.rglob("*.dcm") if b"CHEST" in p.read_bytes()]
    assert len(kept) == 1 and kept[0].Manufacturer == "ACME"
    assert set(manifest["manufacturer"].dropna()) == {"ACME"}
    normalize_tree(out, vol)
    volumes = pd.read_parquet(vol / "volumes.parquet")
    assert len(volumes) == 1
    assert not any(t.decode() in volumes.to_csv().lower() for t in PHI)


def test_row4_verifier_finds_the_mrn_in_any_element_when_the_engine_is_bypassed(
    tmp_path: Path,
) -> None:
    [first, *_] = _planted_series(tmp_path / "src")
    source = first.read_bytes()
    out = tmp_path / "out"
    deidentify_tree(tmp_path / "src", out, tmp_path / "restricted", SALT)
    produced = sorted(out.rglob("*.dcm"))[0]
    relpath = produced.relative_to(out).as_posix()
    assert verify(source, produced.read_bytes(), relpath).clean
    for tamper in ("BodyPartExamined", "StationName", "sequence"):
        ds = pydicom.dcmread(produced)
        if tamper == "sequence":
            ds.ReferencedImageSequence = seq(item(CodeMeaning=f"x {MRN}"))
        else:
            setattr(ds, tamper, MRN)
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        result = verify(source, buf.getvalue(), relpath)
        assert not result.clean and result.kinds["identity"] >= 1, tamper

    # through the run: a value the profile keeps as it is (PatientSex, Retain Patient
    # Characteristics) holding the MRN reaches the verifier, which quarantines the file
    ds = pydicom.dcmread(first)
    ds.PatientSex = MRN
    save(ds, tmp_path / "src2" / "x.dcm")
    result = deidentify_tree(tmp_path / "src2", tmp_path / "out2", tmp_path / "r2", SALT)
    assert result.written == 0 and result.quarantined == {"VERIFIER_HIT": 1}
    assert not list((tmp_path / "out2").rglob("*.dcm"))


# -- row 11 -------------------------------------------------------------------------------------
def test_row11_restricted_outputs_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    src = _batch(tmp_path / "src")
    restricted = tmp_path / "restricted"
    old = os.umask(0o022)
    try:
        deidentify_tree(src, tmp_path / "out", restricted, SALT)
    finally:
        os.umask(old)
    seen = 0
    for dirpath, _dirs, files in os.walk(restricted):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700, dirpath
        for f in files:
            assert stat.S_IMODE(os.stat(Path(dirpath) / f).st_mode) == 0o600, f
            seen += 1
    assert seen >= 2 + 3  # crosswalk, reasons.csv and the three quarantined originals


# -- row 14 -------------------------------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _tree(folder: Path) -> list[tuple[str, bytes]]:
    return [
        (p.relative_to(folder).as_posix(), p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".normalize.lock"
    ]


def test_row14_litter_of_killed_runs_is_cleaned_and_the_rerun_is_byte_identical(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    write_series(src / "s", PhantomSeries(patient="ZQXPID0100"))
    save(ct_instance(sop_uid="1.2.826.0.1.3680043.9.7777.9.1"), src / "x.dcm")
    clean_out, clean_vol = tmp_path / "clean_out", tmp_path / "clean_vol"
    deidentify_tree(src, clean_out, tmp_path / "clean_restricted", SALT)
    normalize_tree(clean_out, clean_vol)

    out, vol, restricted = tmp_path / "out", tmp_path / "vol", tmp_path / "restricted"
    deidentify_tree(src, out, restricted, SALT)
    normalize_tree(out, vol)
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # what kill -9 leaves: half-written outputs, no tables, temporary files
        outputs = sorted(out.rglob("*.dcm"))
        outputs[0].write_bytes(outputs[0].read_bytes()[:100])
        (out / "deid.parquet").unlink()
        (restricted / "crosswalk" / "crosswalk.csv").unlink()
        litter = [
            outputs[1].with_name(outputs[1].name + ".tmp3"),
            outputs[1].with_name(outputs[1].name + f".tmp{dead}-7"),
            out / f"deid.parquet.tmp{dead}",
            restricted / "crosswalk" / f".crosswalk.csv.tmp-{dead}",
            vol / f"{sorted(vol.glob('*.nii.gz'))[0].name}.tmp{dead}",
            vol / f"volumes.parquet.tmp{dead}",
        ]
        for p in litter:
            p.write_bytes(b"half")
        keep = out / f"other-batch.dcm.tmp{live.pid}-1"  # a batch running side by side
        keep.write_bytes(b"in progress")
        nifti = sorted(vol.glob("*.nii.gz"))[0]
        nifti.write_bytes(nifti.read_bytes()[:50])  # damaged volume with an intact row

        deidentify_tree(src, out, restricted, SALT)
        normalize_tree(out, vol)
        assert not any(p.exists() for p in litter)
        assert keep.exists()
        keep.unlink()
    finally:
        live.kill()
        live.wait()
    assert _tree(out) == _tree(clean_out)
    assert _tree(vol) == _tree(clean_vol)
    assert (restricted / "crosswalk" / "crosswalk.csv").read_bytes() == (
        tmp_path / "clean_restricted" / "crosswalk" / "crosswalk.csv"
    ).read_bytes()


# -- row 15 -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_row15_unwritable_quarantine_fails_before_writing_and_a_rerun_completes(
    tmp_path: Path,
) -> None:
    src = _batch(tmp_path / "src", deep=False)
    out, restricted = tmp_path / "out", tmp_path / "restricted"
    restricted.mkdir()
    (restricted / "quarantine").write_text("a file where the quarantine folder must be")
    with pytest.raises(DeidTargetError) as err:
        deidentify_tree(src, out, restricted, SALT)
    message = str(err.value)
    assert "quarantine folder" in message and "\n" not in message
    assert str(src) not in message and "ZQX" not in message
    assert not list(out.rglob("*.dcm"))

    env = {**os.environ, "MEDCURATE_DEID_SALT": "qK8v-Zr2pX7mLw4T9bNc3hYd-e6Fj"}
    cli = [sys.executable, "-c", "from medcurate.cli import main; main()", "deid"]
    run = subprocess.run(
        [*cli, str(src), str(out), "--restricted", str(restricted)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert "ZQX" not in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert "quarantine folder" in run.stderr

    (restricted / "quarantine").unlink()
    result = deidentify_tree(src, out, restricted, SALT)
    assert result.written == 3 and result.quarantined == {"BURNED_IN": 1}
    assert _reasons(restricted / "quarantine" / "reasons.csv") == {"ZQXSURNAME/us.dcm": "BURNED_IN"}
    assert (restricted / "crosswalk" / "crosswalk.csv").exists()
    assert (out / "deid.parquet").exists()


def test_clean_litter_removes_only_the_temporary_files_of_dead_processes(tmp_path: Path) -> None:
    """``medcurate.io.clean_litter`` (shared by deid, normalize and ingest): by the writer's pid."""

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    gone = int(dead.stdout)
    assert not alive(gone) and alive(os.getpid())
    (tmp_path / "sub").mkdir()
    litter = [tmp_path / f"a.dcm.tmp{gone}-3", tmp_path / "sub" / f".t.parquet.tmp-{gone}",
              tmp_path / "old.dcm.tmp7", tmp_path / f".write-probe-{gone}"]  # fmt: skip
    kept = [tmp_path / f"b.dcm.tmp{os.getpid()}-1", tmp_path / "notes.tmp.txt",
            tmp_path / "x.parquet"]  # fmt: skip
    for p in litter + kept:
        p.write_bytes(b"x")
    assert clean_litter(tmp_path, recursive=False) == 3  # not below sub/
    assert clean_litter(tmp_path) == 1
    assert not any(p.exists() for p in litter) and all(p.exists() for p in kept)
