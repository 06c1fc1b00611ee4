"""PostgreSQL as a managed local service: the storage of Dagster's ``cluster`` profile.

Why it looks like this:

- Debian's PostgreSQL, its own data directory under ``$MEDCURATE_HOME/postgres/`` (0700; the
  database holds Dagster's run and event logs), started by our code on a loopback port: TCP on
  127.0.0.1 only (``listen_addresses``), no Unix socket (socket paths are capped at 107 bytes
  and pytest's are longer), ``pg_hba.conf`` rewritten to one line: scram-sha-256 from 127.0.0.1.
- The port defaults to 5433: 5432 belongs to the system cluster Debian's package starts.
- ``initdb`` and ``postgres`` refuse to run as root. As root we start them in a user namespace
  (``unshare --user --map-user=65534``): inside it they are ``nobody`` and hold no capability,
  outside their files stay owned by the caller, so the data directory keeps its 0700 owner-only
  place under MEDCURATE_HOME. A dedicated system user (``runuser -u postgres``) would need every
  folder above the data directory opened to it, which owner-only homes (and pytest's 0700 tmp)
  forbid. Not as root, they run as the caller.
- The credentials come from MEDCURATE_POSTGRES_USER / MEDCURATE_POSTGRES_PASSWORD or are
  generated once into a 0600 file; the password is given to ``initdb`` through a 0600 file that is
  removed at once, never on a command line, never in a repr. It is fixed by the first start:
  a different one later is refused by the server, and start says so.
- A stop is PostgreSQL's fast shutdown (SIGINT to the postmaster: sessions end, a checkpoint is
  written), then the shared TERM-then-KILL of the group if it hangs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from medcurate.config import ConfigError, Zones, medcurate_home
from medcurate.perms import private_dir, private_tree, write_private_bytes
from medcurate.services import process
from medcurate.services.labelstudio import free_port
from medcurate.services.wait import WaitTimeout, wait_until

__all__ = [
    "DB_NAME",
    "HOST",
    "PASSWORD_VAR",
    "USER_VAR",
    "PostgresError",
    "PostgresServer",
    "PostgresStatus",
    "ServicePaths",
    "client_env",
    "credentials",
    "free_port",
    "start",
    "status",
    "stop",
]

HOST = "127.0.0.1"
DEFAULT_PORT = 5433
DB_NAME = "dagster"
USER_VAR = "MEDCURATE_POSTGRES_USER"
PASSWORD_VAR = "MEDCURATE_POSTGRES_PASSWORD"
BIN_VAR = "MEDCURATE_POSTGRES_BIN"  # a folder holding initdb and postgres
_NOBODY = "65534"
_HBA = "# Written by medcurate: password (scram-sha-256) over TCP from this machine only.\n" + (
    "host all all 127.0.0.1/32 scram-sha-256\n"
)


class PostgresError(RuntimeError):
    """PostgreSQL could not be set up, started or reached."""


@dataclass(frozen=True)
class ServicePaths(process.ServerPaths):
    """Files of the PostgreSQL server of a MEDCURATE_HOME."""

    STEM: ClassVar[str] = "postgres"

    home: Path

    @property
    def base(self) -> Path:
        return self.home / "postgres"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def credentials_file(self) -> Path:
        return self.base / "credentials.json"


def bin_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder of ``initdb`` and ``postgres``: MEDCURATE_POSTGRES_BIN, else Debian's newest
    ``/usr/lib/postgresql/N/bin`` (not on PATH there), else the one on PATH."""
    env = os.environ if env is None else env
    if env.get(BIN_VAR):
        return Path(env[BIN_VAR])
    debian = sorted(
        (p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1]
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    raise PostgresError(
        "PostgreSQL not found: `apt-get install postgresql` (or set " + BIN_VAR + ")"
    )


def _unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` as PostgreSQL accepts it: as is, or as root inside a user namespace (see above)."""
    if os.geteuid() != 0:
        return cmd
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    return [unshare, "--user", f"--map-user={_NOBODY}", f"--map-group={_NOBODY}", "--", *cmd]


# --------------------------------------------------------------------------- credentials


def credentials(home: Path | None = None, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(username, password): from the environment when set, else generated once and kept 0600
    in the service folder. Values from the environment are never written to disk."""
    env = os.environ if env is None else env
    paths = ServicePaths((home or medcurate_home()).resolve())
    stored: dict[str, str] = {}
    if paths.credentials_file.exists():
        stored = json.loads(paths.credentials_file.read_text())
    values, changed = process.settle_secrets(
        env,
        stored,
        {"username": USER_VAR, "password": PASSWORD_VAR},
        {"username": lambda: "medcurate", "password": lambda: secrets.token_urlsafe(24)},
    )
    if not values["username"].replace("_", "").isalnum():
        raise ConfigError(f"{USER_VAR} must be letters, digits and '_' (a PostgreSQL role)")
    if changed:
        private_dir(paths.base)
        data = json.dumps(stored, indent=2, sort_keys=True) + "\n"
        write_private_bytes(paths.credentials_file, data.encode())
    return values["username"], values["password"]


def client_env(home: Path | None = None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a Dagster process of the ``cluster`` profile needs (its dagster.yaml reads
    the password from MEDCURATE_POSTGRES_PASSWORD): merge into the environment of what you
    launch. Holds the password: never log it."""
    user, password = credentials(home, env)
    return {USER_VAR: user, PASSWORD_VAR: password}


# --------------------------------------------------------------------------- process control


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL: where it answers and how to log in (no password in repr)."""

    host: str
    port: int
    pid: int
    home: Path
    username: str
    password: str = field(repr=False)
    db_name: str = DB_NAME

    @property
    def url(self) -> str:
        """A URL without the password (safe to print)."""
        return f"postgresql://{self.username}@{self.host}:{self.port}/{self.db_name}"

    def connect(self, db_name: str | None = None, password: str | None = None):  # type: ignore[no-untyped-def]
        """A psycopg2 connection (``password`` overrides ours: the tests' wrong password)."""
        import psycopg2

        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.username,
            password=self.password if password is None else password,
            dbname=db_name or self.db_name,
            connect_timeout=5,
        )

    def stop(self, timeout: float = 10.0) -> bool:
        return stop(self.home, timeout=timeout)


@dataclass(frozen=True)
class PostgresStatus:
    running: bool
    healthy: bool
    url: str | None
    pid: int | None

    def line(self) -> str:
        return process.status_line("postgres", self.running, self.healthy, self.url, self.pid)


def _is_our_process(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is a postmaster of ``data_dir`` (not a zombie): a stale pid file must
    never make us signal an unrelated process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    args = cmdline.split(b"\0")
    try:
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except IndexError:
        return False
    return args[0].endswith(b"postgres") and str(data_dir).encode() in args


def _read_pid(paths: ServicePaths) -> int | None:
    return process.read_pid(paths.server_files, lambda pid: _is_our_process(pid, paths.data))


def _read_state(paths: ServicePaths) -> dict[str, object]:
    try:
        return dict(json.loads(paths.state_file.read_text()))
    except (OSError, ValueError):
        return {}


def _probe(port: int, user: str, password: str, db_name: str = "postgres") -> str:
    """ "ok", "auth" (it answers but refuses these credentials) or "down"."""
    import psycopg2

    try:
        psycopg2.connect(
            host=HOST, port=port, user=user, password=password, dbname=db_name, connect_timeout=2
        ).close()
    except psycopg2.OperationalError as exc:
        text = str(exc)
        if "password authentication failed" in text or "no pg_hba.conf entry" in text:
            return "auth"
        return "down"
    return "ok"


def _port_is_free(port: int) -> bool:
    """True when nothing listens on HOST:port and PostgreSQL could bind it. Bound as PostgreSQL
    binds (SO_REUSEADDR), so the TIME_WAIT sockets its sessions leave after a stop do not make
    a restart on the same port look busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex((HOST, port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _initdb(paths: ServicePaths, user: str, password: str, env: Mapping[str, str]) -> None:
    """A new cluster in ``paths.data`` whose superuser is ``user`` with ``password``."""
    pwfile = paths.base / ".initdb-password"
    write_private_bytes(pwfile, password.encode())
    cmd = [
        str(bin_dir(env) / "initdb"),
        "-D",
        str(paths.data),
        "-U",
        user,
        f"--pwfile={pwfile}",
        "--auth=scram-sha-256",
        "-E",
        "UTF8",
        "--locale=C.UTF-8",
        "--no-instructions",
    ]
    try:
        done = subprocess.run(
            _unprivileged(cmd),
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
            capture_output=True,
            text=True,
            check=False,
            umask=process.SERVER_UMASK,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        shutil.rmtree(paths.data, ignore_errors=True)
        raise PostgresError(f"initdb failed (rc={done.returncode}): {done.stderr[-1500:]}")
    write_private_bytes(paths.data / "pg_hba.conf", _HBA.encode())


def _ensure_database(port: int, user: str, password: str, db_name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(
        host=HOST, port=port, user=user, password=password, dbname="postgres", connect_timeout=5
    )
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db_name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{db_name}"')  # our constant, not user input
    finally:
        conn.close()


def _server(paths: ServicePaths, port: int, pid: int, creds: tuple[str, str]) -> PostgresServer:
    return PostgresServer(HOST, port, pid, paths.home, creds[0], creds[1])


def start(
    home: Path | None = None,
    port: int | None = None,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> PostgresServer:
    """Start the PostgreSQL server of MEDCURATE_HOME (or return the one already running there),
    with the ``dagster`` database in it. The data directory persists across restarts; a busy
    port is refused, never silently moved."""
    env = os.environ if env is None else env
    home = (home or medcurate_home()).resolve()
    paths = ServicePaths(home)
    creds = credentials(home, env)
    running = _read_pid(paths)
    if running is not None:
        known = int(str(_read_state(paths).get("port", 0)))
        if known and _probe(known, *creds, db_name=DB_NAME) == "ok":
            return _server(paths, known, running, creds)
        raise PostgresError(
            f"a PostgreSQL process (pid {running}) is registered here but does not accept these "
            "credentials: `medcurate postgres stop` first"
        )
    port = DEFAULT_PORT if port is None else port
    if not _port_is_free(port):
        raise PostgresError(f"port {port} on {HOST} is busy: choose another")
    binaries = bin_dir(env)
    private_dir(paths.base)
    Zones(home).check_private([paths.base])
    if not (paths.data / "PG_VERSION").exists():
        _initdb(paths, *creds, env)
    private_tree(paths.base)
    cmd = [
        str(binaries / "postgres"),
        "-D",
        str(paths.data),
        "-c",
        f"listen_addresses={HOST}",
        "-c",
        f"port={port}",
        "-c",
        "unix_socket_directories=",
        "-c",
        f"hba_file={paths.data / 'pg_hba.conf'}",
    ]
    server_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC"}
    state: dict[str, object] = {"host": HOST, "port": port, "url": f"postgresql://{HOST}:{port}"}
    proc = process.spawn(paths.server_files, _unprivileged(cmd), server_env, paths.base, state)
    refused: list[str] = []

    def answers() -> bool:
        probe = _probe(port, *creds)
        if probe == "auth":
            refused.append(probe)
            raise WaitTimeout("credentials refused")
        return probe == "ok"

    try:
        process.wait_started(
            proc,
            paths.server_files,
            answers,
            label="PostgreSQL",
            url=str(state["url"]),
            timeout=timeout,
            interval=0.05,
            error=PostgresError,
            stop=lambda: stop(home),
        )
    except PostgresError:
        if refused:
            raise PostgresError(
                f"PostgreSQL runs but refuses the user/password of {USER_VAR}/{PASSWORD_VAR} "
                "(or the credentials file): the data directory was made with other ones"
            ) from None
        raise
    _ensure_database(port, *creds, DB_NAME)
    return _server(paths, port, proc.pid, creds)


def stop(home: Path | None = None, timeout: float = 10.0, kill: bool = False) -> bool:
    """Stop the PostgreSQL server of MEDCURATE_HOME: fast shutdown (SIGINT), then TERM and KILL
    of its group if it does not go within ``timeout``. True if one was running."""
    paths = ServicePaths((home or medcurate_home()).resolve())

    def ours(pid: int) -> bool:
        return _is_our_process(pid, paths.data)

    pid = _read_pid(paths)
    if pid is not None and not kill:
        try:
            os.kill(pid, signal.SIGINT)
            wait_until(lambda: process.gone(pid, ours), timeout, interval=0.05, what="stop")
        except (OSError, WaitTimeout):
            pass  # the group's TERM-then-KILL below
    stopped = process.stop_server(
        paths.server_files, ours, timeout=timeout, interval=0.05, label="PostgreSQL", kill=kill
    )
    return stopped or pid is not None


def status(home: Path | None = None, env: Mapping[str, str] | None = None) -> PostgresStatus:
    """Whether the PostgreSQL of MEDCURATE_HOME runs and lets us log in to its database."""
    home = (home or medcurate_home()).resolve()
    paths = ServicePaths(home)
    pid = _read_pid(paths)
    if pid is None:
        return PostgresStatus(False, False, None, None)
    port = int(str(_read_state(paths).get("port", 0)))
    if not port:
        return PostgresStatus(True, False, None, pid)
    creds = credentials(home, env)
    healthy = _probe(port, *creds, db_name=DB_NAME) == "ok"
    return PostgresStatus(True, healthy, f"postgresql://{creds[0]}@{HOST}:{port}/{DB_NAME}", pid)
