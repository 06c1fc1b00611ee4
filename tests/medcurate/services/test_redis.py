"""The managed Redis: start/status/stop, one server per home, password required, loopback only,
owner-only files whatever the umask, queued items kept across a restart, the Celery URLs for
child processes. Real redis-server processes, started by medcurate's own code."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from medcurate.config import Zones
from medcurate.services import redis as rs

pytestmark = pytest.mark.integration
SECRET = 'p@ss:w/rd #1 "q"\n%'  # url and redis.conf syntax in it: quoting must hold
ENV = {rs.PASSWORD_VAR: SECRET}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (routing only: nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            addr = str(s.getsockname()[0])
        except OSError:
            return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def _client(server: rs.RedisServer, password: str | None = SECRET) -> redis_lib.Redis:
    """RESP2, as Celery's kombu speaks it: without a password a command gets NOAUTH (RESP3's
    HELLO would be refused first, with another message)."""
    return redis_lib.Redis(
        host=server.host, port=server.port, password=password, socket_timeout=5, protocol=2
    )


@pytest.fixture
def server(zones_tmp: Zones) -> Iterator[rs.RedisServer]:
    srv = rs.start(zones_tmp.home, port=rs.free_port(), env=ENV)
    yield srv
    rs.stop(zones_tmp.home)


def test_start_status_stop_and_a_second_start_returns_the_same_server(zones_tmp: Zones) -> None:
    home = zones_tmp.home
    assert not rs.status(home, env=ENV).running
    port = rs.free_port()
    srv = rs.start(home, port=port, env=ENV)
    try:
        assert (srv.host, srv.port) == ("127.0.0.1", port)
        assert srv.url(0) == f"redis://127.0.0.1:{port}/0" and srv.url(1).endswith("/1")
        assert SECRET not in repr(srv)
        st = rs.status(home, env=ENV)
        assert st.running and st.healthy and st.pid == srv.pid
        again = rs.start(home, env=ENV)  # no port given: the running one is found
        assert (again.pid, again.port) == (srv.pid, srv.port)
        # a password from the environment never reaches a file but the 0600 config
        assert not rs.ServicePaths(home).credentials_file.exists()
        assert SECRET.encode() not in Path(f"/proc/{srv.pid}/cmdline").read_bytes()
    finally:
        assert rs.stop(home)
    assert not rs.status(home, env=ENV).running
    assert not rs.stop(home)  # nothing left to stop
    with pytest.raises(redis_lib.ConnectionError):
        _client(srv).ping()
    with pytest.raises(rs.RedisError, match="not running"):
        rs.client_env(home, env=ENV)


def test_a_password_is_required_and_the_celery_urls_carry_it(server: rs.RedisServer) -> None:
    with pytest.raises(redis_lib.AuthenticationError, match="Authentication required"):
        _client(server, password=None).ping()  # NOAUTH
    with pytest.raises(redis_lib.AuthenticationError, match="Authentication required"):
        _client(server, password=None).rpush("celery", "sneaked-in")
    with pytest.raises(redis_lib.AuthenticationError):
        _client(server, password="wrong").ping()
    assert _client(server).ping() is True
    urls = rs.client_env(server.home, env=ENV)
    assert (
        set(urls)
        == {rs.BROKER_VAR, rs.BACKEND_VAR}
        == {
            "MEDCURATE_CELERY_BROKER",
            "MEDCURATE_CELERY_BACKEND",
        }
    )
    broker = redis_lib.Redis.from_url(urls[rs.BROKER_VAR])
    backend = redis_lib.Redis.from_url(urls[rs.BACKEND_VAR])
    broker.set("k", "broker")
    backend.set("k", "backend")  # another database: db 1 next to the broker's db 0
    assert (broker.get("k"), backend.get("k")) == (b"broker", b"backend")
    assert broker.connection_pool.connection_kwargs["password"] == SECRET


def test_listens_on_loopback_only(server: rs.RedisServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with pytest.raises(OSError), socket.create_connection((addr, server.port), timeout=2):
        pass


def test_generated_password_and_every_file_are_owner_only_under_umask_000(
    zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(rs.PASSWORD_VAR, raising=False)
    home = zones_tmp.home
    old = os.umask(0)
    try:
        srv = rs.start(home, port=rs.free_port(), env={})
    finally:
        os.umask(old)
    try:
        paths = rs.ServicePaths(home)
        assert _mode(paths.base) == 0o700 and _mode(paths.credentials_file) == 0o600
        assert _mode(paths.config_file) == 0o600 and len(srv.password) >= 32
        assert rs.password(home, env={}) == srv.password  # generated once, kept
        _client(srv, srv.password).rpush("q", "x")  # the server writes its files now too
        assert srv.password not in paths.log_file.read_text()
        assert srv.password.encode() not in Path(f"/proc/{srv.pid}/cmdline").read_bytes()
        files = [paths.base, *paths.base.rglob("*")]
        assert any(p.parent.name == "appendonlydir" for p in files)
        assert [p for p in files if not p.is_symlink() and _mode(p) & 0o077] == []
    finally:
        rs.stop(home)


def test_a_busy_default_port_moves_and_a_busy_given_port_is_refused(zones_tmp: Zones) -> None:
    home = zones_tmp.home
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, as Redis
        try:
            holder.bind(("127.0.0.1", rs.DEFAULT_PORT))
            holder.listen()
        except OSError:
            pass  # another server listens there already: the same case
        assert not rs.port_is_free(rs.HOST, rs.DEFAULT_PORT)
        taken = rs.free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
            other.bind(("127.0.0.1", taken))
            other.listen()
            with pytest.raises(rs.RedisError, match=f"port {taken} .* busy"):
                rs.start(home, port=taken, env=ENV)
        assert not rs.status(home, env=ENV).running
        srv = rs.start(home, env=ENV)
        try:
            assert srv.port != rs.DEFAULT_PORT
            assert _client(srv).ping() is True
            assert rs.client_env(home, env=ENV)[rs.BROKER_VAR].endswith(f":{srv.port}/0")
        finally:
            rs.stop(home)


def test_queued_items_survive_a_stop_and_start(zones_tmp: Zones) -> None:
    home = zones_tmp.home
    port = rs.free_port()
    srv = rs.start(home, port=port, env=ENV)
    try:
        _client(srv).rpush("celery", "task-1", "task-2")
    finally:
        assert rs.stop(home)
    srv2 = rs.start(home, port=port, env=ENV)
    try:
        assert srv2.pid != srv.pid
        assert _client(srv2).lrange("celery", 0, -1) == [b"task-1", b"task-2"]
    finally:
        rs.stop(home)


def test_cli_start_status_stop(zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from medcurate.services.redis_cli import redis_app

    monkeypatch.setenv(rs.PASSWORD_VAR, SECRET)
    runner = CliRunner()
    port = rs.free_port()
    try:
        done = runner.invoke(redis_app, ["start", "--port", str(port)])
        assert done.exit_code == 0, done.output
        assert f"redis://127.0.0.1:{port}/0" in done.output
        assert SECRET not in done.output
        st = runner.invoke(redis_app, ["status"])
        assert st.exit_code == 0 and "healthy" in st.output
    finally:
        assert "redis: stopped" in runner.invoke(redis_app, ["stop"]).output
    assert "stopped" in runner.invoke(redis_app, ["status"]).output
    assert "was not running" in runner.invoke(redis_app, ["stop"]).output


def test_a_stale_pid_file_never_signals_an_unrelated_process(zones_tmp: Zones) -> None:
    paths = rs.ServicePaths(zones_tmp.home)
    paths.base.mkdir(mode=0o700)
    paths.pid_file.write_text(f"{os.getpid()}\n")  # this pytest process, not a redis-server
    assert not rs.status(zones_tmp.home, env=ENV).running
    assert not rs.stop(zones_tmp.home)  # we are still here to assert it
    assert not paths.pid_file.exists()


def test_a_pid_file_naming_another_homes_redis_is_not_ours(
    server: rs.RedisServer, tmp_path: Path
) -> None:
    other = rs.ServicePaths(tmp_path / "other-home")
    other.base.mkdir(parents=True, mode=0o700)
    other.pid_file.write_text(f"{server.pid}\n")  # a real redis-server, of another config
    assert not rs.status(other.home, env=ENV).running
    assert not rs.stop(other.home)
    assert rs.status(server.home, env=ENV).healthy  # untouched
