"""The managed PostgreSQL: start/status/stop, one server per home, loopback only, password auth,
owner-only files whatever the umask. Real servers, started by medcurate's own code."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from medcurate.config import Zones
from medcurate.services import postgres

pytestmark = pytest.mark.integration
ENV = {postgres.USER_VAR: "dagster_ops", postgres.PASSWORD_VAR: "pw-from-env"}


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


@pytest.fixture
def server(zones_tmp: Zones) -> Iterator[postgres.PostgresServer]:
    srv = postgres.start(zones_tmp.home, port=postgres.free_port(), env=ENV)
    yield srv
    postgres.stop(zones_tmp.home)


def test_start_status_stop_and_a_second_start_returns_the_same_server(zones_tmp: Zones) -> None:
    home = zones_tmp.home
    assert not postgres.status(home, env=ENV).running
    port = postgres.free_port()
    srv = postgres.start(home, port=port, env=ENV)
    try:
        assert (srv.host, srv.port, srv.username, srv.db_name) == (
            "127.0.0.1",
            port,
            "dagster_ops",
            "dagster",
        )
        assert "pw-from-env" not in repr(srv) and "pw-from-env" not in srv.url
        st = postgres.status(home, env=ENV)
        assert st.running and st.healthy and st.pid == srv.pid
        again = postgres.start(home, env=ENV)  # no port given: the running one is found
        assert (again.pid, again.port) == (srv.pid, srv.port)
        with srv.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT current_database(), current_user")
            assert cur.fetchone() == ("dagster", "dagster_ops")
        # a password from the environment never reaches the disk
        assert not postgres.ServicePaths(home).credentials_file.exists()
    finally:
        assert postgres.stop(home)
    assert not postgres.status(home, env=ENV).running
    assert not postgres.stop(home)  # nothing left to stop
    with pytest.raises(psycopg2.OperationalError):
        srv.connect()
    # the data persists: a restart finds the database (no second initdb)
    srv2 = postgres.start(home, port=port, env=ENV)
    try:
        assert srv2.pid != srv.pid
        assert postgres.status(home, env=ENV).healthy
    finally:
        postgres.stop(home)


def test_password_auth_refuses_a_wrong_password(server: postgres.PostgresServer) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        server.connect(password="wrong")
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_start_with_other_credentials_than_the_data_directory_is_refused(zones_tmp: Zones) -> None:
    home = zones_tmp.home
    port = postgres.free_port()
    postgres.start(home, port=port, env=ENV)
    postgres.stop(home)
    other = {**ENV, postgres.PASSWORD_VAR: "another-password"}
    with pytest.raises(postgres.PostgresError, match="refuses the user/password"):
        postgres.start(home, port=port, env=other)
    assert not postgres.status(home, env=other).running  # the failed start left nothing running


def test_listens_on_loopback_only(server: postgres.PostgresServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with pytest.raises(OSError), socket.create_connection((addr, server.port), timeout=2):
        pass


def test_generated_credentials_and_every_file_are_owner_only_under_umask_000(
    zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    home = zones_tmp.home
    old = os.umask(0)
    try:
        srv = postgres.start(home, port=postgres.free_port(), env={})
    finally:
        os.umask(old)
    try:
        paths = postgres.ServicePaths(home)
        assert _mode(paths.base) == 0o700 and _mode(paths.credentials_file) == 0o600
        assert srv.username == "medcurate" and len(srv.password) >= 24
        assert postgres.credentials(home, env={}) == (srv.username, srv.password)  # kept
        assert srv.password not in paths.log_file.read_text()
        assert not (paths.base / ".initdb-password").exists()
        with srv.connect() as conn, conn.cursor() as cur:  # the server writes files now too
            cur.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        opened = [
            p
            for p in [paths.base, *paths.base.rglob("*")]
            if not p.is_symlink() and _mode(p) & 0o077
        ]
        assert opened == []
    finally:
        postgres.stop(home)


def test_cli_start_status_stop(zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from medcurate.services.postgres_cli import postgres_app

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    runner = CliRunner()
    try:
        done = runner.invoke(postgres_app, ["start", "--port", str(postgres.free_port())])
        assert done.exit_code == 0, done.output
        assert "postgresql://dagster_ops@127.0.0.1:" in done.output
        assert ENV[postgres.PASSWORD_VAR] not in done.output
        st = runner.invoke(postgres_app, ["status"])
        assert st.exit_code == 0 and "healthy" in st.output
    finally:
        assert "stopped" in runner.invoke(postgres_app, ["stop"]).output
    assert "stopped" in runner.invoke(postgres_app, ["status"]).output


def test_a_stale_pid_file_never_signals_an_unrelated_process(zones_tmp: Zones) -> None:
    paths = postgres.ServicePaths(zones_tmp.home)
    paths.base.mkdir(mode=0o700)
    paths.pid_file.write_text(f"{os.getpid()}\n")  # this pytest process, not a postmaster
    assert not postgres.status(zones_tmp.home, env=ENV).running
    assert not postgres.stop(zones_tmp.home)  # we are still here to assert it
    assert not paths.pid_file.exists()
