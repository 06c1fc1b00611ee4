"""The managed Orthanc servers: credentials, owner-only files, loopback only, start/stop, STOW."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from typer.testing import CliRunner

from medcurate.config import ConfigError, Zones
from medcurate.pacs.cli import pacs_app
from medcurate.services import orthanc

# the fixtures of tests/medcurate/pacs/conftest.py, shared here
from tests.medcurate.pacs.conftest import clinical_pacs, research_pacs  # noqa: F401

ENV_CLINICAL = {"MEDCURATE_PACS_USER": "ops", "MEDCURATE_PACS_PASSWORD": "pw-from-env"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _get(server: orthanc.OrthancServer, path: str) -> object:
    req = urllib.request.Request(server.url + path)
    req.add_header("Authorization", orthanc._auth_header(server.username, server.password))
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _instance(uid_seed: str) -> bytes:
    """One tiny Secondary Capture instance (8x8, 8-bit), deterministic UIDs from ``uid_seed``."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid_seed, "sop"])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.PatientName, ds.PatientID, ds.Modality = "TEST^ORTHANC", "P1", "OT"
    ds.StudyDate, ds.Rows, ds.Columns = "20240101", 8, 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(64))
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _stow(server: orthanc.OrthancServer, data: bytes) -> int:
    """STOW-RS of one instance (multipart/related, as dicomweb-client sends it)."""
    boundary = "medcurate-test-boundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(server.dicomweb + "/studies", data=body, method="POST")
    req.add_header(
        "Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}'
    )
    req.add_header("Accept", "application/dicom+json")
    req.add_header("Authorization", orthanc._auth_header(server.username, server.password))
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def _non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback (None when it has none)."""
    candidates: list[str] = []
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False)
        candidates += out.stdout.split()
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only picks the outgoing address
            candidates.append(s.getsockname()[0])
    except OSError:
        pass
    for addr in candidates:
        try:
            socket.inet_aton(addr)
        except OSError:
            continue
        if not addr.startswith("127.") and addr != "0.0.0.0":
            return addr
    return None


def _non_loopback_ipv6() -> str | None:
    """A global IPv6 address of this machine (None when it has none)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False)
    for addr in out.stdout.split():
        if ":" in addr and addr != "::1" and not addr.lower().startswith("fe80"):
            return addr
    return None


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- no server


def test_credentials_generated_once_private(tmp_path: Path) -> None:
    user, password = orthanc.credentials(tmp_path, orthanc.CLINICAL, env={})
    path = orthanc.ServicePaths(tmp_path, orthanc.CLINICAL).credentials_file
    assert path.is_relative_to(tmp_path / "restricted")
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert len(password) >= 24 and user == "medcurate-clinical"
    assert orthanc.credentials(tmp_path, orthanc.CLINICAL, env={}) == (user, password)
    other = orthanc.credentials(tmp_path, orthanc.RESEARCH, env={})
    assert other[1] != password  # each server its own password
    research = orthanc.ServicePaths(tmp_path, orthanc.RESEARCH).credentials_file
    assert research.is_relative_to(tmp_path / "pacs" / "research")


def test_environment_wins_and_is_not_written(tmp_path: Path) -> None:
    assert orthanc.credentials(tmp_path, orthanc.CLINICAL, env=ENV_CLINICAL) == (
        "ops",
        "pw-from-env",
    )
    research_env = {"MEDCURATE_RESEARCH_PACS_USER": "r", "MEDCURATE_RESEARCH_PACS_PASSWORD": "rp"}
    assert orthanc.credentials(tmp_path, orthanc.RESEARCH, env=research_env) == ("r", "rp")
    # the clinical variables do not leak into the research server
    assert orthanc.credentials(tmp_path, orthanc.RESEARCH, env=ENV_CLINICAL)[0] != "ops"
    assert not orthanc.ServicePaths(tmp_path, orthanc.CLINICAL).credentials_file.exists()
    with pytest.raises(ConfigError):
        orthanc.credentials(tmp_path, orthanc.CLINICAL, env={"MEDCURATE_PACS_USER": "a:b"})
    with pytest.raises(ConfigError):
        orthanc.credentials(tmp_path, "hospital", env={})


def test_config_has_auth_dicomweb_and_no_remote_access(tmp_path: Path) -> None:
    paths = orthanc.ServicePaths(tmp_path, orthanc.RESEARCH)
    cfg = orthanc.orthanc_config(paths, 1234, 5678, "u", "p", stable_age=1)
    assert cfg["RemoteAccessAllowed"] is False and cfg["AuthenticationEnabled"] is True
    assert cfg["RegisteredUsers"] == {"u": "p"} and cfg["StableAge"] == 1
    assert cfg["Plugins"] == [str(orthanc.DICOMWEB_PLUGIN)]
    assert cfg["DicomWeb"] == {"Enable": True, "Root": "/dicom-web/", "EnableWado": True}
    assert cfg["StorageDirectory"] == str(paths.storage)
    clinical = orthanc.orthanc_config(orthanc.ServicePaths(tmp_path), 1, 2, "u", "p")
    assert clinical["DicomAet"] != cfg["DicomAet"]


def test_loopback_shim_rewrites_wildcard_binds() -> None:
    """Any program run with the shim binds loopback when it asks for every interface."""
    code = (
        "import socket\n"
        "s = socket.socket(); s.bind(('0.0.0.0', 0)); print(s.getsockname()[0])\n"
        "try:\n"
        "    t = socket.socket(socket.AF_INET6); t.bind(('::', 0)); print(t.getsockname()[0])\n"
        "except OSError:\n"
        "    print('::1')\n"  # no IPv6 here: nothing to prove
    )
    env = {**os.environ, "LD_PRELOAD": str(orthanc.loopback_shim())}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["127.0.0.1", "::1"], out.stderr
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert plain.stdout.split()[0] == "0.0.0.0"  # without it: every interface


def test_password_not_in_repr() -> None:
    server = orthanc.OrthancServer(
        "clinical", "http://127.0.0.1:1", "http://127.0.0.1:1/dicom-web", 1, 2, 3, Path("/x"),
        "u", "secret-pw",
    )  # fmt: skip
    assert "secret-pw" not in repr(server)


# --------------------------------------------------------------------------- real servers


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.integration
def test_start_status_stop_and_second_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert not orthanc.status(home).running
    server = orthanc.start(
        home, port=orthanc.free_port(), dicom_port=orthanc.free_port(), env=ENV_CLINICAL
    )
    try:
        assert not orthanc.status(home, env={}).healthy  # running, but not for other users
        st = orthanc.status(home, env=ENV_CLINICAL)
        assert st.running and st.healthy and st.url == server.url and st.pid == server.pid
        assert server.dicomweb == server.url + "/dicom-web"
        assert orthanc.start(home, env=ENV_CLINICAL) == server  # the running one, not a second
        assert (server.username, server.password) == ("ops", "pw-from-env")
        assert orthanc.http_status(server.url + "/system") == 401
        assert orthanc.http_status(server.url + "/system", "ops", "wrong") == 401
        assert orthanc.http_status(server.url + "/system", "ops", "pw-from-env") == 200
        assert orthanc.http_status(server.dicomweb + "/studies", "ops", "pw-from-env") == 200
        config = json.loads(orthanc.ServicePaths(home).config_file.read_text())
        assert config["RemoteAccessAllowed"] is False
    finally:
        assert orthanc.stop(home)
    assert not _connects("127.0.0.1", server.port)
    st = orthanc.status(home)
    assert not st.running and st.pid is None
    paths = orthanc.ServicePaths(home)
    assert not paths.pid_file.exists() and not paths.state_file.exists()
    assert not orthanc.stop(home)


@pytest.mark.integration
def test_stale_pid_file_does_not_block_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = orthanc.ServicePaths(home)
    dead = subprocess.Popen(["true"])
    dead.wait()
    orthanc.credentials(home, env={})  # makes the folder
    for pid in (dead.pid, os.getpid()):  # a dead process, and a live one that is not Orthanc
        paths.pid_file.write_text(f"{pid}\n")
        assert not orthanc.status(home).running
        assert not orthanc.stop(home)  # never signals the live stranger (this test process)
        assert not paths.pid_file.exists()
    paths.pid_file.write_text(f"{dead.pid}\n")
    server = orthanc.start(home, port=orthanc.free_port(), dicom_port=orthanc.free_port(), env={})
    try:
        assert server.pid != dead.pid and orthanc.status(home, env={}).healthy
    finally:
        assert orthanc.stop(home, kill=True)
    assert not _connects("127.0.0.1", server.port) and not paths.pid_file.exists()


@pytest.mark.integration
def test_busy_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(orthanc.OrthancError, match="busy"):
            orthanc.start(tmp_path / "h", port=busy, dicom_port=orthanc.free_port(), env={})
    assert not orthanc.status(tmp_path / "h").running


@pytest.mark.integration
def test_files_owner_only_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    home = tmp_path / "home"
    server = orthanc.start(home, port=orthanc.free_port(), dicom_port=orthanc.free_port(), env={})
    try:
        assert _stow(server, _instance("umask")) == 200
    finally:
        orthanc.stop(home, kill=True)
    paths = orthanc.ServicePaths(home)
    assert paths.base.is_relative_to(Zones(home).restricted)
    for folder in (Zones(home).restricted, paths.base.parent, paths.base, paths.storage):
        assert _mode(folder) == 0o700, folder
    for f in (paths.credentials_file, paths.config_file, paths.log_file):
        assert _mode(f) == 0o600, f
    written = [p for p in paths.storage.rglob("*")]
    assert any(p.is_file() for p in written)  # the stored instance and the index
    for p in written:
        assert _mode(p) == (0o700 if p.is_dir() else 0o600), p


@pytest.mark.integration
def test_listens_on_loopback_only(
    clinical_pacs: orthanc.OrthancServer,  # noqa: F811
) -> None:
    for port in (clinical_pacs.port, clinical_pacs.dicom_port):
        assert _connects("127.0.0.1", port)
    outside = _non_loopback_ipv4()
    if outside is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    addresses = [outside] + [a for a in [_non_loopback_ipv6()] if a]
    for address in addresses:
        for port in (clinical_pacs.port, clinical_pacs.dicom_port):
            assert not _connects(address, port), f"port {port} answers on {address}"


@pytest.mark.integration
def test_clinical_and_research_side_by_side_and_stow(
    clinical_pacs: orthanc.OrthancServer,  # noqa: F811
    research_pacs: orthanc.OrthancServer,  # noqa: F811
) -> None:
    clin, res = clinical_pacs, research_pacs
    assert len({clin.port, clin.dicom_port, res.port, res.dicom_port}) == 4
    assert clin.home == res.home and clin.password != res.password
    assert clin.aet != res.aet
    clin_paths = orthanc.ServicePaths(clin.home, orthanc.CLINICAL)
    res_paths = orthanc.ServicePaths(res.home, orthanc.RESEARCH)
    assert clin_paths.storage.is_relative_to(Zones(clin.home).restricted)
    assert res_paths.storage == res.home / "pacs" / "research" / "storage"
    # each server's credentials only open its own door
    assert orthanc.http_status(res.url + "/system", clin.username, clin.password) == 401

    assert _stow(res, _instance("seg-like")) == 200
    assert len(_get(res, "/instances")) == 1  # type: ignore[arg-type]
    assert _get(clin, "/instances") == []  # nothing crossed over
    study_uid = generate_uid(entropy_srcs=["seg-like", "study"])
    assert (
        orthanc.http_status(
            f"{res.dicomweb}/studies/{study_uid}/series", res.username, res.password
        )
        == 200
    )
    assert any(p.is_file() for p in res_paths.storage.rglob("*"))

    st_c, st_r = orthanc.status(clin.home, "clinical"), orthanc.status(res.home, "research")
    assert st_c.healthy and st_r.healthy and st_c.pid != st_r.pid


@pytest.mark.integration
def test_cli_start_status_stop(zones_tmp: Zones) -> None:
    runner = CliRunner()
    port, dicom_port = str(orthanc.free_port()), str(orthanc.free_port())
    args = ["--server", "research"]
    started = runner.invoke(pacs_app, ["start", *args, "--port", port, "--dicom-port", dicom_port])
    try:
        assert started.exit_code == 0, started.output
        assert f"http://127.0.0.1:{port}" in started.output
        _, password = orthanc.credentials(zones_tmp.home, orthanc.RESEARCH)
        assert password not in started.output
        status = runner.invoke(pacs_app, ["status", *args])
        assert status.exit_code == 0 and "running" in status.output and "healthy" in status.output
        clinical = runner.invoke(pacs_app, ["status", "--server", "clinical"])
        assert clinical.exit_code == 0 and "stopped" in clinical.output
    finally:
        stopped = runner.invoke(pacs_app, ["stop", *args])
    assert stopped.exit_code == 0 and "pacs research: stopped" in stopped.output
    again = runner.invoke(pacs_app, ["stop", *args])
    assert "was not running" in again.output
    bad = runner.invoke(pacs_app, ["status", "--server", "hospital"])
    assert bad.exit_code != 0


@pytest.mark.integration
def test_start_all_moves_off_default_ports_someone_else_holds(zones_tmp: Zones) -> None:
    """`make ui` and `make demo` start both servers; a default port taken by another program
    (here a listener of this test on the clinical one) sends that server to free ports."""
    said: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            other.bind(("127.0.0.1", 8044))
        except OSError:
            pytest.skip("port 8044 is already taken here")
        other.listen(1)
        servers = orthanc.start_all(zones_tmp.home, said.append)
        try:
            by_name = {s.name: s for s in servers}
            assert set(by_name) == {orthanc.CLINICAL, orthanc.RESEARCH}, said
            assert by_name[orthanc.CLINICAL].port != 8044
            assert orthanc.status(zones_tmp.home, orthanc.CLINICAL).healthy
        finally:
            for s in servers:
                orthanc.stop(zones_tmp.home, s.name, kill=True)
