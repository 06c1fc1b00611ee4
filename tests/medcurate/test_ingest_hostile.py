"""Hostile input at ingest (issue 9): one test per row of the security review's table.

Rows 1, 5, 6, 7, 11 and 14 (ingest's share). Unreadable files and folders are real faults: tests
run as root, who reads anything, so the test drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (from
its own thread, or from a CLI child's bounding set) and the kernel then refuses like it would for
any other user.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pydicom
import pytest
from pydicom.data import get_testdata_file

from assets.ingest import raw_instances, raw_instances_accounting
from assets.resources import MedcurateHome
from medcurate import ingest as ing
from medcurate import validate as v
from medcurate.config import Zones

PATIENT, MRN = "Moriarty^Hedwig", "MRN73519826"
PHI = (PATIENT, "Moriarty", "Hedwig", MRN, "73519826")
PHI_FOLDER = f"{PATIENT} {MRN}"

# --- real permission faults, as root too ---------------------------------------------------------

_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
_V3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@contextlib.contextmanager
def no_dac_override() -> Iterator[None]:
    """This thread (and threads it starts) obeys file modes, root or not."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    data = (_CapData * 2)()
    assert libc.capget(ctypes.byref(_CapHeader(_V3, 0)), data) == 0
    saved = data[0].effective
    data[0].effective &= ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH))
    assert libc.capset(ctypes.byref(_CapHeader(_V3, 0)), data) == 0, ctypes.get_errno()
    try:
        yield
    finally:
        data[0].effective = saved
        assert libc.capset(ctypes.byref(_CapHeader(_V3, 0)), data) == 0


def _child_without_dac_override() -> None:
    """preexec_fn: the child (root or not) obeys file modes after exec."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A FIFO opened for reading would block forever: fail instead."""

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("blocked for 240 s (a FIFO opened for reading?)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(240)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# --- planted inputs ------------------------------------------------------------------------------


def nested_sequence_dicom(dst: Path, depth: int) -> Path:
    """CT_small with (5200,9229) sequences nested ``depth`` deep, undefined lengths, built as bytes
    (writing it through pydicom would recurse as deep)."""
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    at = ct.index(b"\xe0\x7f\x10\x00OW")  # Pixel Data: the only element after (5200,9229)
    sq = b"\x00\x52\x29\x92SQ\x00\x00\xff\xff\xff\xff"
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    ends = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    dst.write_bytes(ct[:at] + (sq + item) * depth + ends * depth + ct[at:])
    return dst


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


def _other_ct(dst: Path, entropy: str) -> Path:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[entropy])
    ds.PatientName = PATIENT
    ds.PatientID = MRN
    ds.save_as(dst, enforce_file_format=True)
    return dst


def plant_hostile_inbox(inbox: Path, outside: Path) -> dict[str, str | None]:
    """Every ingest failure under a folder named after a patient; relpath -> expected reason.
    Call with DAC override dropped for the unreadable file and folder to be unreadable."""
    d = inbox / PHI_FOLDER / "CT"
    d.mkdir(parents=True)
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / f"{PATIENT}.txt"
    secret.write_text(f"{PATIENT} {MRN}\n")
    _other_ct(d / "good.dcm", "good")
    locked = _other_ct(d / "locked.dcm", "locked")
    os.chmod(locked, 0)
    (d / "link.dcm").symlink_to(secret)
    (d / "link-dir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(d / "pipe.dcm")
    (d / f".{MRN}.txt").write_text(f"{PATIENT} {MRN}\n")
    (d / ".old.dcm.part").write_bytes(b"\0" * 100)
    (d / "empty.dcm").write_bytes(b"")
    (d / "zero.dcm").write_bytes(b"\0" * (1 << 20))
    nested_sequence_dicom(d / "deep.dcm", 1000)
    (d / "closed").mkdir()
    (d / "closed" / "inside.dcm").write_bytes(b"x")
    os.chmod(d / "closed", 0)
    for p in d.iterdir():
        _age(p, 7200)
    rel = f"{PHI_FOLDER}/CT"
    return {
        f"{rel}/good.dcm": None,
        f"{rel}/locked.dcm": "UNREADABLE",
        f"{rel}/link.dcm": "SYMLINK",
        f"{rel}/link-dir": "SYMLINK",
        f"{rel}/pipe.dcm": "SPECIAL_FILE",
        f"{rel}/.{MRN}.txt": "HIDDEN_FILE",
        f"{rel}/.old.dcm.part": "PARTIAL_TRANSFER",
        f"{rel}/empty.dcm": "EMPTY_FILE",
        f"{rel}/zero.dcm": "NOT_DICOM",
        f"{rel}/deep.dcm": "SEQUENCE_TOO_DEEP",
        f"{rel}/closed": "UNREADABLE_FOLDER",
    }


def _reasons(z: Zones, batch: str) -> dict[str, str | None]:
    df = ing.read_catalog(z, batch)
    return {r.relpath: (r.reason or None) for r in df.itertuples()}


def _phi_in(text: str) -> list[str]:
    return [p for p in PHI if p in text]


# --- row 1: an unreadable file, and no failure leaks PHI -----------------------------------------


@pytest.mark.slow
def test_row1_unreadable_file_and_every_failure_leak_no_phi(
    tmp_path: Path,
    zones_tmp: Zones,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: the claim crashed on an unreadable file with a traceback naming its patient folder,
    printed and stored in Dagster's event log. Now: the sensor claims, raw_instances quarantines
    each failure with a reason, and no console, log, event or file of the Dagster instance (nor the
    CLI's output) holds the patient's name or MRN."""
    from pipelines.sensors import inbox_sensor

    caplog.set_level(logging.DEBUG)
    instance_root = tmp_path / "dagster"
    instance_root.mkdir()
    resources = {"home": MedcurateHome(home=str(zones_tmp.home))}
    no_telemetry = {"telemetry": {"enabled": False}}
    with (
        no_dac_override(),
        dg.DagsterInstance.local_temp(str(instance_root), overrides=no_telemetry) as instance,
    ):
        expected = plant_hostile_inbox(zones_tmp.inbox, tmp_path / "outside")
        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        tick = inbox_sensor(ctx)
        assert isinstance(tick, dg.SensorResult)
        (request,) = tick.run_requests or []
        batch = str(request.partition_key)
        for add in tick.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions("batch", list(add.partition_keys or []))
        result = dg.materialize(
            [raw_instances, raw_instances_accounting],
            partition_key=batch,
            instance=instance,
            resources=resources,
        )
        assert result.success
        events = [e for r in instance.get_runs() for e in instance.all_logs(r.run_id)]
        event_text = "\n".join(dg.serialize_value(e) for e in events)
    assert _reasons(zones_tmp, batch) == expected
    [mat] = result.asset_materializations_for_node("raw_instances")
    md = {k: m.value for k, m in mat.metadata.items()}
    assert md["received"] == len(expected) and md["accounting_balanced"] is True
    assert md["catalogued"] == 1 and md["quarantined"] == len(expected) - 1
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    assert (tmp_path / "outside" / f"{PATIENT}.txt").read_text() == f"{PATIENT} {MRN}\n"
    assert not any(zones_tmp.inbox.iterdir())

    # the same failures through the command line, as a process that obeys file modes
    home2 = tmp_path / "home2"
    Zones(home2).ensure()
    with no_dac_override():
        plant_hostile_inbox(home2 / "inbox", tmp_path / "outside2")
    cli = subprocess.run(
        [sys.executable, "-m", "medcurate.cli", "ingest"],
        env=dict(os.environ, MEDCURATE_HOME=str(home2)),
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=_child_without_dac_override,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert (
        f"received {len(expected)} = catalogued 1 + quarantined {len(expected) - 1}" in cli.stdout
    )

    out, err = capfd.readouterr()
    logs = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    kinds = {e.dagster_event.event_type for e in events if e.dagster_event}
    assert {dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.ASSET_MATERIALIZATION} <= kinds
    assert _phi_in(out + err) == []
    assert _phi_in(logs) == []
    assert _phi_in(event_text) == []
    assert _phi_in(cli.stdout + cli.stderr) == []
    for f in (p for p in instance_root.rglob("*") if p.is_file()):  # sqlite, compute logs
        data = f.read_bytes()
        assert not any(p.encode() in data for p in PHI), f.relative_to(instance_root)


def test_row1_validation_messages_never_name_the_path(tmp_path: Path) -> None:
    """An OSError's text holds the path; the reason message holds only its type and errno."""
    folder = tmp_path / PHI_FOLDER
    folder.mkdir()
    locked = _other_ct(folder / "locked.dcm", "x")
    os.chmod(locked, 0)
    with no_dac_override():
        res = v.validate_file(locked)
    assert res.reason is not None and res.reason.code == v.UNREADABLE
    assert res.reason.message == "UNREADABLE: PermissionError (EACCES)"


# --- row 5: every inbox entry is accounted for ---------------------------------------------------


def test_row5_every_inbox_entry_is_counted_and_quarantined(
    tmp_path: Path, zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: symlinks, dot-files and FIFOs stayed in the inbox, uncounted. Now each is moved as
    itself (never followed, never opened) and quarantined with a reason; the books balance."""
    outside = tmp_path / "outside"
    (outside / "deeper").mkdir(parents=True)
    ct = Path(get_testdata_file("CT_small.dcm"))
    shutil.copyfile(ct, outside / "deeper" / "ct.dcm")
    d = zones_tmp.inbox / "study"
    d.mkdir(parents=True)
    shutil.copyfile(ct, d / "ct.dcm")
    (d / "to-file.dcm").symlink_to(outside / "deeper" / "ct.dcm")
    (d / "to-dir").symlink_to(outside, target_is_directory=True)
    (d / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(d / "fifo")
    monkeypatch.chdir(d)  # AF_UNIX paths are short: bind relative to the folder
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("sock")
    (d / ".hidden.dcm").write_bytes(ct.read_bytes())
    (d / ".dotdir").mkdir()
    (d / ".dotdir" / "x.dcm").write_bytes(b"x")
    (d / ".fresh.dcm.part").write_bytes(b"in transit")  # still being copied: waits
    (d / "closed").mkdir()
    (d / "closed" / "a.dcm").write_bytes(b"a")
    os.chmod(d / "closed", 0o000)
    try:
        with no_dac_override():
            batch = ing.claim_inbox(zones_tmp)
            assert batch is not None
            res = ing.run_ingest(zones_tmp, batch)
            problems = ing.check_ingest(zones_tmp, batch)
    finally:
        sock.close()
    assert _reasons(zones_tmp, batch) == {
        "study/ct.dcm": None,
        "study/to-file.dcm": "SYMLINK",
        "study/to-dir": "SYMLINK",
        "study/dangling": "SYMLINK",
        "study/fifo": "SPECIAL_FILE",
        "study/sock": "SPECIAL_FILE",
        "study/.hidden.dcm": "HIDDEN_FILE",
        "study/.dotdir/x.dcm": "HIDDEN_FILE",
        "study/closed": "UNREADABLE_FOLDER",
    }
    assert (res.received, res.catalogued, res.quarantined, res.duplicates) == (9, 1, 8, 0)
    assert res.balanced and problems == []
    q = zones_tmp.quarantine_batch(batch) / "study"
    # moved as themselves: the link is still a link to the same target, which is untouched
    assert os.readlink(q / "to-file.dcm") == str(outside / "deeper" / "ct.dcm")
    assert (outside / "deeper" / "ct.dcm").read_bytes() == ct.read_bytes()
    assert stat.S_ISFIFO(os.lstat(q / "fifo").st_mode)
    assert stat.S_ISSOCK(os.lstat(q / "sock").st_mode)
    assert stat.S_IMODE(os.lstat(q / "closed").st_mode) == 0
    assert [p.name for p in d.iterdir()] == [".fresh.dcm.part"]
    # the in-progress copy is claimed as PARTIAL_TRANSFER once it is stale (row 14)
    assert ing.claim_inbox(zones_tmp) is None


# --- row 6: large zero files and deep sequences, refused before any full parse -------------------


def test_row6_zero_files_and_deep_sequences_never_reach_the_full_parser(
    tmp_path: Path, zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: 7.6 s and 16.6 s to reject 10 and 20 MB zero files (a full parse), and a sequence
    nested 1,000 deep passed ingest. Now a cheap header walk refuses them: pydicom never runs."""
    zero10, zero20 = tmp_path / "zero10.dcm", tmp_path / "zero20.dcm"
    zero10.write_bytes(b"\0" * (10 << 20))
    zero20.write_bytes(b"\0" * (20 << 20))
    dicm = tmp_path / "dicm-zeros.dcm"
    dicm.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * (10 << 20))
    deep = nested_sequence_dicom(tmp_path / "deep.dcm", 1000)
    big_pixels = tmp_path / "big-pixels.dcm"
    data = bytearray(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    at = data.index(b"\xe0\x7f\x10\x00OW") + 8
    data[at : at + 4] = (1 << 30).to_bytes(4, "little")  # Pixel Data claims 1 GiB
    big_pixels.write_bytes(bytes(data))
    calls: list[object] = []

    def counting(*a: object, **k: object) -> None:
        calls.append(a)
        raise AssertionError("the full parser ran")

    monkeypatch.setattr(v.pydicom, "dcmread", counting)
    got = {p.name: v.validate_file(p).reason for p in (zero10, zero20, dicm, deep, big_pixels)}
    assert {k: r.code if r else None for k, r in got.items()} == {
        "zero10.dcm": v.NOT_DICOM,
        "zero20.dcm": v.NOT_DICOM,
        "dicm-zeros.dcm": v.NOT_DICOM,
        "deep.dcm": v.SEQUENCE_TOO_DEEP,
        "big-pixels.dcm": v.TRUNCATED,
    }
    assert calls == []
    monkeypatch.undo()
    # the limit is a setting: 40 levels pass with 64, not with the default 32
    forty = nested_sequence_dicom(tmp_path / "forty.dcm", 40)
    assert v.validate_file(forty, max_depth=64).ok
    assert v.validate_file(forty).reason.code == v.SEQUENCE_TOO_DEEP  # type: ignore[union-attr]
    # and through a batch: quarantined, the rest of the batch goes on
    shutil.copyfile(deep, zones_tmp.inbox / "deep.dcm")
    shutil.copyfile(get_testdata_file("CT_small.dcm"), zones_tmp.inbox / "ct.dcm")
    batch = ing.claim_inbox(zones_tmp)
    assert batch is not None
    res = ing.run_ingest(zones_tmp, batch)
    assert res.reasons == {"SEQUENCE_TOO_DEEP": 1} and res.catalogued == 1


# --- row 7: a claimed batch whose run was killed is finished next time ---------------------------


@pytest.mark.slow
def test_row7_kill_9_after_the_claim_is_resumed_by_the_next_cli_run(
    tmp_path: Path, zones_tmp: Zones
) -> None:
    """Before: kill -9 right after the claim stranded the files in raw/<batch>/ with no catalog and
    the next run said "inbox empty". Now the next run finds the batch and finishes it."""
    src = tmp_path / "src" / PHI_FOLDER
    src.mkdir(parents=True)
    for i in range(3):
        _other_ct(src / f"{i}.dcm", str(i))
    (src / "notes.txt").write_text("not an image")
    env = dict(os.environ, MEDCURATE_HOME=str(zones_tmp.home))
    cmd = [sys.executable, "-m", "medcurate.cli", "ingest"]
    # Hold the catalog lock: the CLI claims, then waits for the lock in run_ingest; kill it there.
    lock = zones_tmp.catalog_lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        child = subprocess.Popen([*cmd, str(tmp_path / "src")], env=env)
        deadline = time.time() + 120
        while not list(zones_tmp.catalog.glob("*.pending")) or any(zones_tmp.inbox.iterdir()):
            assert child.poll() is None and time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        child.wait()
    [batch] = [p.name for p in zones_tmp.raw.iterdir()]
    assert not zones_tmp.catalog_file(batch).exists()
    assert len(list((zones_tmp.raw / batch).rglob("*.dcm"))) == 3
    assert ing.pending_batches(zones_tmp) == [batch]

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert f"batch {batch}: received 4 = catalogued 3 + quarantined 1" in again.stdout
    assert ing.check_ingest(zones_tmp, batch) == []
    assert ing.pending_batches(zones_tmp) == []
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert "inbox empty" in third.stdout


def test_row7_sensor_requests_a_run_for_a_stranded_batch(tmp_path: Path, zones_tmp: Zones) -> None:
    """A batch claimed by a tick (or a CLI) that died before its run: the next tick requests it,
    adds its partition, and stops once the batch is ingested."""
    from pipelines.sensors import inbox_sensor

    shutil.copyfile(get_testdata_file("CT_small.dcm"), zones_tmp.inbox / "ct.dcm")
    batch = ing.claim_inbox(zones_tmp)  # ... and then the process died
    assert batch is not None
    resources = {"home": MedcurateHome(home=str(zones_tmp.home))}
    instance = dg.DagsterInstance.ephemeral()
    tick = inbox_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(tick, dg.SensorResult)
    assert [(r.partition_key, r.run_key) for r in tick.run_requests or []] == [(batch, batch)]
    [add] = tick.dynamic_partitions_requests or []
    assert list(add.partition_keys or []) == [batch]
    # its run died (here: a home it cannot use): the next tick asks again, under a new run key

    instance.add_dynamic_partitions("batch", [batch])
    (tmp_path / "not-a-folder").write_text("")
    failed = dg.materialize(
        [raw_instances],
        partition_key=batch,
        instance=instance,
        resources={"home": MedcurateHome(home=str(tmp_path / "not-a-folder"))},
        raise_on_error=False,
    )
    assert not failed.success
    tick = inbox_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(tick, dg.SensorResult) and not tick.dynamic_partitions_requests
    assert [r.run_key for r in tick.run_requests or []] == [f"{batch}-resume-1"]
    ing.run_ingest(zones_tmp, batch)
    tick = inbox_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(tick, dg.SensorResult) and not tick.run_requests


# --- row 11: owner-only, whatever the umask ------------------------------------------------------


def test_row11_everything_ingest_creates_in_restricted_is_owner_only(
    tmp_path: Path, zones_tmp: Zones
) -> None:
    """Before: folders 755 and the catalog 644 under umask 022. Now 0700 and 0600 throughout."""
    old = os.umask(0o022)
    try:
        src = tmp_path / "src" / PHI_FOLDER / "series"
        src.mkdir(parents=True)
        ct = get_testdata_file("CT_small.dcm")
        shutil.copyfile(ct, src / "a.dcm")
        shutil.copyfile(ct, src / "same-as-a.dcm")
        (src / "letter.txt").write_text("not an image")
        ing.drop_into_inbox(tmp_path / "src", zones_tmp)
        (zones_tmp.inbox / ".dot").write_text(PATIENT)
        batch = ing.claim_inbox(zones_tmp)
        assert batch is not None
        res = ing.run_ingest(zones_tmp, batch)
    finally:
        os.umask(old)
    assert (res.catalogued, res.quarantined, res.duplicates) == (1, 2, 1)
    seen = {"dirs": 0, "files": 0}
    for p in [zones_tmp.restricted, *zones_tmp.restricted.rglob("*")]:
        st = os.lstat(p)
        if stat.S_ISDIR(st.st_mode):
            assert stat.S_IMODE(st.st_mode) == 0o700, p.relative_to(zones_tmp.home)
            seen["dirs"] += 1
        else:
            assert stat.S_IMODE(st.st_mode) == 0o600, p.relative_to(zones_tmp.home)
            seen["files"] += 1
    assert zones_tmp.catalog_file(batch).exists() and zones_tmp.ingest_reasons(batch).exists()
    assert seen["dirs"] >= 10 and seen["files"] >= 6


# --- row 14: litter of killed runs ---------------------------------------------------------------


def test_row14_litter_of_killed_runs_is_cleaned_or_accounted(zones_tmp: Zones) -> None:
    """Before: temporary catalogs of killed runs and abandoned .part copies stayed for ever. Now
    the next ingest removes the temporary files and claims stale .part copies as
    PARTIAL_TRANSFER; a .part still being written waits."""
    z = zones_tmp
    shutil.copyfile(get_testdata_file("CT_small.dcm"), z.inbox / "ct.dcm")
    first = ing.claim_inbox(z)
    assert first is not None
    ing.run_ingest(z, first)
    litter = [
        z.catalog / f".{first}.parquet.tmp",
        z.quarantine / f".{first}.reasons.csv.tmp",
        z.catalog / ".b20990101-000000-abcdef.parquet.tmp",
    ]
    for p in litter:
        p.write_bytes(b"half-written by a run that was killed")
    stale, fresh = z.inbox / ".scan1.dcm.part", z.inbox / ".scan2.dcm.part"
    stale.write_bytes(b"\0" * 64)
    fresh.write_bytes(b"\0" * 64)
    _age(stale, 2 * ing.STALE_PART_S)
    batch = ing.claim_inbox(z)
    assert batch is not None
    res = ing.run_ingest(z, batch)
    assert not any(p.exists() for p in litter)
    assert res.reasons == {"PARTIAL_TRANSFER": 1} and res.received == 1
    assert (z.quarantine_batch(batch) / ".scan1.dcm.part").is_file()
    assert fresh.is_file() and not stale.exists()
    assert ing.check_ingest(z, batch) == []
    # json-serializable metadata, reason codes upper case
    assert json.dumps(res.metadata()) and all(k.isupper() for k in res.reasons)
