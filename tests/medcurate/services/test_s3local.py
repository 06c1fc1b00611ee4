"""The managed local S3 endpoint (moto server): loopback only, owner-only files, a bucket on
start, idempotent start, and a stop that leaves nothing running."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from medcurate.config import ConfigError
from medcurate.services import s3local


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) of sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append(addr)
    return found


def _non_loopback_ipv4() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only picks the outgoing address
            addr = str(s.getsockname()[0])
    except OSError:
        return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


# --------------------------------------------------------------------------- no server


def test_status_of_a_home_without_server(tmp_path: Path) -> None:
    st = s3local.status(tmp_path)
    assert (st.running, st.healthy, st.pid) == (False, False, None)
    assert st.line() == "s3 (local): stopped"
    assert s3local.stop(tmp_path) is False


def test_bucket_names_are_checked(tmp_path: Path) -> None:
    assert s3local.check_bucket("medcurate-test.1") == "medcurate-test.1"
    for bad in ("", "ab", "UPPER", "-x-bucket", "a..b", "a/b", "x" * 64):
        with pytest.raises(ConfigError):
            s3local.check_bucket(bad)
    with pytest.raises(ConfigError):
        s3local.start(tmp_path, bucket="Not_A_Bucket")
    assert not s3local.ServicePaths(tmp_path).base.exists()  # refused before anything is made


def test_stale_pid_file_never_signals_an_unrelated_process(tmp_path: Path) -> None:
    paths = s3local.ServicePaths(tmp_path)
    paths.base.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        paths.pid_file.write_text(f"{other.pid}\n")
        assert s3local.status(tmp_path).running is False
        assert s3local.stop(tmp_path) is False
        assert other.poll() is None  # still alive
        assert not paths.pid_file.exists()
    finally:
        other.kill()
        other.wait()


def test_client_settings_point_at_the_server(tmp_path: Path) -> None:
    server = s3local.S3Server("http://127.0.0.1:1", 1, "bkt", 1, tmp_path)
    env = server.client_env()
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    assert env["AWS_ACCESS_KEY_ID"] == s3local.DUMMY_KEY_ID
    assert server.storage_options()["endpoint_url"] == server.url
    assert server.store_url() == "s3://bkt/releases"
    assert server.store_url("/a/b/") == "s3://bkt/a/b" and server.store_url("") == "s3://bkt"


# --------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3local.S3Server]:
    home = tmp_path_factory.mktemp("s3home")
    server = s3local.start(home)
    yield server
    s3local.stop(home)


@pytest.mark.integration
def test_start_makes_bucket_and_owner_only_files(s3: s3local.S3Server) -> None:
    paths = s3local.ServicePaths(s3.home)
    assert _mode(paths.base) == 0o700
    for p in (paths.pid_file, paths.state_file, paths.log_file):
        assert _mode(p) == 0o600, p
    st = s3local.status(s3.home)
    assert st.running and st.healthy and st.pid == s3.pid and st.url == s3.url
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3.storage_options())
    assert fs.ls("", detail=False) == [s3.bucket]
    fs.pipe(f"{s3.bucket}/x/hello.txt", b"hello")
    assert fs.cat(f"{s3.bucket}/x/hello.txt") == b"hello"


@pytest.mark.integration
def test_start_again_returns_the_running_server_with_the_new_bucket(
    s3: s3local.S3Server,
) -> None:
    assert s3local.start(s3.home) == s3  # the same server, its bucket kept
    again = s3local.start(s3.home, bucket="second-bucket")
    assert (again.pid, again.port, again.bucket) == (s3.pid, s3.port, "second-bucket")
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3.storage_options())
    assert {s3.bucket, "second-bucket"} <= set(fs.ls("", detail=False))


@pytest.mark.integration
def test_listens_on_loopback_only(s3: s3local.S3Server) -> None:
    assert _connects("127.0.0.1", s3.port)
    assert _listening(s3.port) == ["0100007F"]  # 127.0.0.1, and no IPv6 or wildcard socket
    outside = _non_loopback_ipv4()
    if outside is not None:
        assert not _connects(outside, s3.port)


@pytest.mark.integration
def test_busy_port_is_refused(tmp_path: Path, s3: s3local.S3Server) -> None:
    with pytest.raises(s3local.S3LocalError, match="busy"):
        s3local.start(tmp_path, port=s3.port)
    assert s3local.status(tmp_path).running is False


@pytest.mark.integration
def test_stop_leaves_nothing_running(tmp_path: Path) -> None:
    server = s3local.start(tmp_path)
    paths = s3local.ServicePaths(tmp_path)
    try:
        assert s3local.status(tmp_path).healthy
    finally:
        assert s3local.stop(tmp_path) is True
    with pytest.raises(OSError):
        os.killpg(server.pid, 0)  # its whole process group is gone
    assert not Path(f"/proc/{server.pid}").exists()
    assert not _connects("127.0.0.1", server.port) and _listening(server.port) == []
    assert not paths.pid_file.exists() and not paths.state_file.exists()
    assert s3local.status(tmp_path).running is False
    assert s3local.stop(tmp_path) is False
