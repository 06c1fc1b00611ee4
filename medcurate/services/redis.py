"""Redis as a managed local service: Celery's broker and result backend (``cluster`` profile).

Why it looks like this:

- Debian's ``redis-server`` (7.x), its own folder ``$MEDCURATE_HOME/redis/`` (0700) holding the
  config, the append-only files, the log, the pid and state files, all owner-only whatever the
  caller's umask (the server runs under umask 077, see :mod:`medcurate.services.process`).
- Everything is in a config file we write (0600) at each start: TCP on 127.0.0.1 only
  (``bind`` + ``protected-mode``), no Unix socket, a password (``requirepass``). The password
  never goes on a command line (``ps`` shows those to every local user): the command line is
  ``redis-server <config>``.
- The password comes from MEDCURATE_REDIS_PASSWORD or is generated once into a 0600 file. The
  config is rewritten at every start, so a new password takes effect at the next start.
- ``appendonly yes`` + ``appendfsync everysec`` and no RDB snapshots: the broker's queued tasks
  survive a restart (at most a second lost on a crash; none on a stop, which fsyncs).
- The port defaults to 6380 (6379 is the system redis Debian's package may start); when the
  default is busy we move to a free port (a second home, pytest's workers); a port asked for
  explicitly is refused when busy, never silently moved.
- Redis rewrites its process title; ``proc-title-template`` keeps the config path in it, which
  is how a pid is recognised as ours (a stale pid file is never signalled).
- Children (Celery workers, Dagster) get the broker and backend URLs with the password through
  :func:`client_env`; :meth:`RedisServer.url` has no password and is safe to print.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from medcurate.config import Zones, medcurate_home
from medcurate.perms import private_dir, private_tree, write_private_bytes
from medcurate.services import process
from medcurate.services.labelstudio import free_port, port_is_free

__all__ = [
    "BACKEND_VAR",
    "BROKER_VAR",
    "DEFAULT_PORT",
    "HOST",
    "PASSWORD_VAR",
    "RedisError",
    "RedisServer",
    "RedisStatus",
    "ServicePaths",
    "client_env",
    "free_port",
    "password",
    "port_is_free",
    "start",
    "status",
    "stop",
]

HOST = "127.0.0.1"
DEFAULT_PORT = 6380
PASSWORD_VAR = "MEDCURATE_REDIS_PASSWORD"
BIN_VAR = "MEDCURATE_REDIS_BIN"  # the redis-server binary
BROKER_VAR = "MEDCURATE_CELERY_BROKER"
BACKEND_VAR = "MEDCURATE_CELERY_BACKEND"
BROKER_DB, BACKEND_DB = 0, 1
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


class RedisError(RuntimeError):
    """Redis could not be set up, started or reached."""


@dataclass(frozen=True)
class ServicePaths(process.ServerPaths):
    """Files of the Redis server of a MEDCURATE_HOME (one folder: it is also Redis's ``dir``)."""

    STEM: ClassVar[str] = "redis"

    home: Path

    @property
    def base(self) -> Path:
        return self.home / "redis"

    @property
    def config_file(self) -> Path:
        return self.base / "redis.conf"

    @property
    def credentials_file(self) -> Path:
        return self.base / "credentials.json"


def redis_binary(env: Mapping[str, str] | None = None) -> Path:
    """MEDCURATE_REDIS_BIN, else ``redis-server`` on PATH, else Debian's /usr/bin one."""
    env = os.environ if env is None else env
    if env.get(BIN_VAR):
        return Path(env[BIN_VAR])
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise RedisError(
            f"redis-server not found: `apt-get install redis-server` (or set {BIN_VAR})"
        )
    return Path(found)


# --------------------------------------------------------------------------- password


def password(home: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Redis's password: MEDCURATE_REDIS_PASSWORD when set, else generated once and kept 0600 in
    the service folder. A password from the environment is never written to disk (except into
    the 0600 config Redis reads it from)."""
    env = os.environ if env is None else env
    paths = ServicePaths((home or medcurate_home()).resolve())
    stored: dict[str, str] = {}
    if paths.credentials_file.exists():
        stored = json.loads(paths.credentials_file.read_text())
    values, changed = process.settle_secrets(
        env, stored, {"password": PASSWORD_VAR}, {"password": lambda: secrets.token_urlsafe(32)}
    )
    if changed:
        private_dir(paths.base)
        data = json.dumps(stored, indent=2, sort_keys=True) + "\n"
        write_private_bytes(paths.credentials_file, data.encode())
    return values["password"]


def _quoted(value: str) -> str:
    """``value`` as a double-quoted redis.conf string: every byte but a few safe ones as \\xHH,
    so spaces, quotes, ``#`` or newlines in a password cannot change the config's meaning."""
    return '"' + "".join(chr(b) if b in _SAFE else f"\\x{b:02x}" for b in value.encode()) + '"'


def config_text(paths: ServicePaths, port: int, secret: str) -> str:
    """The whole redis.conf (holds the password: written 0600, never logged)."""
    lines = [
        "# Written by medcurate at each start: edits are lost.",
        f"bind {HOST}",
        "protected-mode yes",
        f"port {port}",
        "# no unixsocket: TCP on loopback only",
        f"requirepass {_quoted(secret)}",
        f"dir {_quoted(str(paths.base))}",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        f"logfile {_quoted(str(paths.log_file))}",
        "daemonize no",
        "supervised no",
        "always-show-logo no",
        'proc-title-template "{title} {listen-addr} {config-file}"',
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- process control


@dataclass(frozen=True)
class RedisServer:
    """A running Redis: where it answers (the password stays out of repr and of :meth:`url`)."""

    host: str
    port: int
    pid: int
    home: Path
    password: str = field(repr=False)

    def url(self, db: int = BROKER_DB) -> str:
        """``redis://host:port/db`` without the password (safe to print)."""
        return f"redis://{self.host}:{self.port}/{db}"

    def stop(self, timeout: float = 10.0) -> bool:
        return stop(self.home, timeout=timeout)


@dataclass(frozen=True)
class RedisStatus:
    running: bool
    healthy: bool
    url: str | None
    pid: int | None

    def line(self) -> str:
        return process.status_line("redis", self.running, self.healthy, self.url, self.pid)


def _is_our_process(pid: int, config_file: Path) -> bool:
    """True when ``pid`` is a redis-server of ``config_file`` (its process title keeps the
    config's path) and not a zombie: a stale pid file must never make us signal another process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    try:
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except IndexError:
        return False
    return b"redis-server" in cmdline and str(config_file).encode() in cmdline


def _read_pid(paths: ServicePaths) -> int | None:
    return process.read_pid(paths.server_files, lambda pid: _is_our_process(pid, paths.config_file))


def _known_port(paths: ServicePaths) -> int:
    try:
        return int(json.loads(paths.state_file.read_text()).get("port", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def _bulk(*words: bytes) -> bytes:
    """One command in Redis's wire protocol (RESP): binary-safe, the password is not parsed."""
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def _probe(port: int, secret: str) -> str:
    """ "ok" (AUTH and PING answered), "auth" (it answers but refuses the password) or "down".
    Plain RESP over a socket: the core needs no Redis client library."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as s:
            s.sendall(_bulk(b"AUTH", secret.encode()) + _bulk(b"PING"))
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return "down"
    if reply.startswith(b"+OK\r\n+PONG\r\n"):
        return "ok"
    if reply.startswith((b"-WRONGPASS", b"-ERR invalid password", b"-ERR AUTH")):
        return "auth"
    return "down"  # still loading its append-only file (-LOADING), or not Redis


def start(
    home: Path | None = None,
    port: int | None = None,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> RedisServer:
    """Start the Redis of MEDCURATE_HOME (or return the one already running there). Its
    append-only data persists across restarts. No ``port``: 6380, or a free one when 6380 is
    busy; a ``port`` given and busy is refused."""
    env = os.environ if env is None else env
    home = (home or medcurate_home()).resolve()
    paths = ServicePaths(home)
    secret = password(home, env)
    running = _read_pid(paths)
    if running is not None:
        known = _known_port(paths)
        if known and _probe(known, secret) == "ok":
            return RedisServer(HOST, known, running, home, secret)
        raise RedisError(
            f"a Redis process (pid {running}) is registered here but does not accept this "
            "password: `medcurate redis stop` first"
        )
    if port is None:
        port = DEFAULT_PORT if port_is_free(HOST, DEFAULT_PORT) else free_port(HOST)
    elif not port_is_free(HOST, port):
        raise RedisError(f"port {port} on {HOST} is busy: choose another")
    binary = redis_binary(env)
    private_dir(paths.base)
    Zones(home).check_private([paths.base])
    write_private_bytes(paths.config_file, config_text(paths, port, secret).encode())
    private_tree(paths.base)
    url = f"redis://{HOST}:{port}"
    state: dict[str, object] = {"host": HOST, "port": port, "url": url}
    server_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC"}
    cmd = [str(binary), str(paths.config_file)]
    proc = process.spawn(paths.server_files, cmd, server_env, paths.base, state)
    process.wait_started(
        proc,
        paths.server_files,
        lambda: _probe(port, secret) == "ok",
        label="Redis",
        url=url,
        timeout=timeout,
        interval=0.05,
        error=RedisError,
        stop=lambda: stop(home),
    )
    return RedisServer(HOST, port, proc.pid, home, secret)


def stop(home: Path | None = None, timeout: float = 10.0, kill: bool = False) -> bool:
    """Stop the Redis of MEDCURATE_HOME: TERM (Redis fsyncs its append-only file and exits),
    then KILL if it does not go within ``timeout``. True if one was running."""
    paths = ServicePaths((home or medcurate_home()).resolve())
    return process.stop_server(
        paths.server_files,
        lambda pid: _is_our_process(pid, paths.config_file),
        timeout=timeout,
        interval=0.05,
        label="Redis",
        kill=kill,
    )


def status(home: Path | None = None, env: Mapping[str, str] | None = None) -> RedisStatus:
    """Whether the Redis of MEDCURATE_HOME runs and answers our password."""
    home = (home or medcurate_home()).resolve()
    paths = ServicePaths(home)
    pid = _read_pid(paths)
    if pid is None:
        return RedisStatus(False, False, None, None)
    port = _known_port(paths)
    if not port:
        return RedisStatus(True, False, None, pid)
    healthy = _probe(port, password(home, env)) == "ok"
    return RedisStatus(True, healthy, f"redis://{HOST}:{port}", pid)


def client_env(home: Path | None = None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Celery broker (db 0) and result backend (db 1) URLs of the running Redis, password
    included (url-quoted): merge into the environment of what you launch, never log it."""
    home = (home or medcurate_home()).resolve()
    paths = ServicePaths(home)
    port = _known_port(paths)
    if _read_pid(paths) is None or not port:
        raise RedisError("Redis is not running here: `medcurate redis start` first")
    quoted = urllib.parse.quote(password(home, env), safe="")
    base = f"redis://:{quoted}@{HOST}:{port}"
    return {BROKER_VAR: f"{base}/{BROKER_DB}", BACKEND_VAR: f"{base}/{BACKEND_DB}"}
