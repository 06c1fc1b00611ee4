"""The process plumbing of a managed local server (Label Studio, Orthanc): spawn, track, stop.

Why it looks like this:

- The server runs in its own session (process group), so a stop reaches every process it forked,
  not only the one we started.
- Everything it writes is owner-only (umask 077) and its log is opened 0600 in append mode, so a
  restart keeps the earlier log and no one else can read either, whatever the caller's umask.
- Its pid and state files (0600) let another process (``medcurate ... stop``, ``make ui``) find
  it. A pid file outlives its process and pids are reused: a pid is only acted on after the
  service's own ``is_ours`` check says that pid is still that server, so a stale pid file never
  makes us signal an unrelated process.
- A server that dies while we wait for it to answer fails the start at once, with the tail of its
  log, instead of after the whole timeout.
- Its secrets (passwords, tokens) are settled the same way for every server: the environment
  wins, else the value stored earlier, else one generated now; only generated values are stored,
  so a secret given in the environment never reaches the disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from medcurate.perms import write_private_bytes
from medcurate.services.wait import WaitTimeout, wait_until

SERVER_UMASK = 0o077  # every file a server writes (database, storage, logs) owner-only

IsOurs = Callable[[int], bool]


@dataclass(frozen=True)
class ServerFiles:
    """Where one server's pid, state and log live (a service's ServicePaths names them)."""

    pid_file: Path
    state_file: Path
    log_file: Path


class ServerPaths:
    """A service's pid, state and log files, ``<base>/<STEM>.pid``, ``<base>/server.json`` and
    ``<base>/<STEM>.log``: each service's ServicePaths inherits them and says ``base``."""

    STEM: ClassVar[str] = "server"

    @property
    def base(self) -> Path:
        raise NotImplementedError

    @property
    def pid_file(self) -> Path:
        return self.base / f"{self.STEM}.pid"

    @property
    def state_file(self) -> Path:
        return self.base / "server.json"

    @property
    def log_file(self) -> Path:
        return self.base / f"{self.STEM}.log"

    @property
    def server_files(self) -> ServerFiles:
        return ServerFiles(self.pid_file, self.state_file, self.log_file)


def spawn(
    files: ServerFiles,
    cmd: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    state: Mapping[str, object],
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session with umask 077, output appended to the 0600 log, then
    write the pid file and the state file (``state`` plus the pid, as JSON).

    The files are written after the launch because only then is the pid known; a start that
    fails later removes them again (:func:`wait_started`)."""
    log_fd = os.open(files.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(log_fd, "ab") as log:
        proc = subprocess.Popen(
            list(cmd),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop_server() signals the whole tree
            cwd=cwd,
            umask=SERVER_UMASK,
        )
    write_private_bytes(files.pid_file, f"{proc.pid}\n".encode())
    recorded = json.dumps({**state, "pid": proc.pid}) + "\n"
    write_private_bytes(files.state_file, recorded.encode())
    return proc


def log_tail(files: ServerFiles, n: int = 1500) -> str:
    """The last ``n`` characters of the server's log ("" when there is none): enough to say why
    it failed without pasting the whole log into an error message."""
    try:
        return files.log_file.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def forget(files: ServerFiles) -> None:
    """Remove the pid and state files: no server is registered any more (the log stays)."""
    files.pid_file.unlink(missing_ok=True)
    files.state_file.unlink(missing_ok=True)


def read_pid(files: ServerFiles, is_ours: IsOurs) -> int | None:
    """The registered pid when ``is_ours`` says it still is our server, else None (no pid file,
    garbage in it, a dead process, or a reused pid of an unrelated process)."""
    try:
        pid = int(files.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if is_ours(pid) else None


def wait_started(
    proc: subprocess.Popen[bytes],
    files: ServerFiles,
    answers: Callable[[], bool],
    *,
    label: str,
    url: str,
    timeout: float,
    interval: float,
    error: Callable[[str], Exception],
    stop: Callable[[], object],
) -> None:
    """Poll ``answers`` until it is true. When the process exits first, forget it and raise
    ``error`` with its return code and log tail; when ``timeout`` passes, call ``stop`` and raise
    ``error``. ``label`` names the server in both messages ("Orthanc (clinical)")."""

    def ready() -> bool:
        if proc.poll() is not None:
            forget(files)
            raise error(
                f"{label} exited with rc={proc.returncode}; log {files.log_file}:\n"
                + log_tail(files)
            )
        return answers()

    try:
        wait_until(ready, timeout, interval=interval, what=f"{label} start on {url}")
    except WaitTimeout:
        stop()
        raise error(f"{label} did not answer on {url} within {timeout:.0f} s") from None


def gone(pid: int, is_ours: IsOurs) -> bool:
    """True once the server ``pid`` is no more: its group is empty, it is our child and has been
    reaped here (else it would linger as a zombie), or it is not our child and ``is_ours`` no
    longer recognises it (a zombie of another parent does not count: its command line is empty,
    and /proc shows it as state Z). A child of ours that still runs is never gone, whatever
    /proc says of it."""
    try:
        os.killpg(pid, 0)
    except OSError:
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not is_ours(pid)
    return done == pid  # 0: our child, still running


def stop_server(
    files: ServerFiles,
    is_ours: IsOurs,
    *,
    timeout: float,
    interval: float,
    label: str,
    kill: bool = False,
) -> bool:
    """Stop the registered server: TERM its process group, wait up to ``timeout`` for it to go,
    then KILL (``kill``: KILL at once). The pid and state files are removed in every case. True
    if one was running.

    The whole group is signalled because servers fork workers; a pid that ``is_ours`` does not
    recognise is never signalled."""
    pid = read_pid(files, is_ours)
    if pid is None:
        forget(files)
        return False
    for sig in (signal.SIGKILL,) if kill else (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except OSError:
            break
        try:
            wait_until(lambda: gone(pid, is_ours), timeout, interval=interval, what=f"{label} stop")
            break
        except WaitTimeout:
            continue  # TERM ignored: KILL
    forget(files)
    return True


def status_line(label: str, running: bool, healthy: bool, url: str | None, pid: int | None) -> str:
    """One line on a server for ``status`` commands and ``make ui``: stopped, or where it runs and
    whether it answers (a process can run without answering: still starting, or wedged)."""
    if not running:
        return f"{label}: stopped"
    state = "healthy" if healthy else "not answering"
    return f"{label}: running (pid {pid}) at {url}, {state}"


def settle_secrets(
    env: Mapping[str, str],
    stored: dict[str, str],
    variables: Mapping[str, str],
    generators: Mapping[str, Callable[[], str]],
) -> tuple[dict[str, str], bool]:
    """The value of each key of ``variables`` (key -> environment variable): the environment's
    when set and not empty, else ``stored``'s, else a new one from ``generators``, which is also
    put into ``stored``. Returns the values and whether ``stored`` changed (then the caller writes
    it back, 0600)."""
    values: dict[str, str] = {}
    changed = False
    for key, var in variables.items():
        if env.get(var):
            values[key] = env[var]
        elif stored.get(key):
            values[key] = stored[key]
        else:
            values[key] = stored[key] = generators[key]()
            changed = True
    return values, changed
