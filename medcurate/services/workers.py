"""Celery workers of the cluster profile as managed processes: start N, find, stop.

Why it looks like this:

- Each worker is ``celery -A pipelines.celery_app worker`` with one pool process
  (``--concurrency 1``): N workers are N steps at a time, and the unit a test kills or a
  cluster scales is one process that runs one step.
- Queues per resource kind (:data:`pipelines.cluster.QUEUES`): every worker serves the default
  ``dagster`` queue, only the first also serves ``labelstudio`` and ``pacs``, so Label Studio and
  the PACS see at most one step at a time however many workers compute.
- Workers run in the repository root with MEDCURATE_HOME, DAGSTER_HOME and the broker in their
  environment (the caller's, plus :func:`start`'s ``env``): the same code location and instance
  as the process that launches the runs. Pid, state and log files are 0600 in
  ``$MEDCURATE_HOME/celery/`` (0700), through the shared process plumbing.
- A stop is Celery's warm shutdown (TERM: the running step finishes), then KILL of the group.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from medcurate.config import ConfigError, medcurate_home
from medcurate.perms import private_dir
from medcurate.services import process
from medcurate.services.wait import wait_until

APP = "pipelines.celery_app"
DEFAULT_QUEUE = "dagster"
SERVICE_QUEUES = ("labelstudio", "pacs")
REPO_ROOT = Path(__file__).resolve().parents[2]
_READY = b" ready."  # Celery's "celery@<name> ready." line


class WorkerError(RuntimeError):
    """A worker could not be started."""


@dataclass(frozen=True)
class Worker:
    """One running worker: its number, Celery node name, queues and main pid."""

    index: int
    name: str
    queues: tuple[str, ...]
    pid: int

    def pool_pids(self) -> list[int]:
        """The pool processes of this worker (the processes that run steps)."""
        return children(self.pid)


def worker_files(home: Path, index: int) -> process.ServerFiles:
    base = home / "celery"
    return process.ServerFiles(
        pid_file=base / f"worker-{index}.pid",
        state_file=base / f"worker-{index}.json",
        log_file=base / f"worker-{index}.log",
    )


def queues_for(index: int) -> tuple[str, ...]:
    """Worker 1 serves every queue; the others the default queue only."""
    return (DEFAULT_QUEUE, *SERVICE_QUEUES) if index == 1 else (DEFAULT_QUEUE,)


def command(index: int, queues: Sequence[str]) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", APP, "worker",
        "--concurrency", "1", "--pool", "prefork", "--prefetch-multiplier", "1",
        "-Q", ",".join(queues), "-n", f"medcurate-w{index}@%h", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip


def is_worker(pid: int, index: int | None = None) -> bool:
    """True when ``pid`` is a worker of this module (number ``index`` when given)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if APP.encode() not in argv or b"worker" not in argv:
        return False
    return index is None or f"medcurate-w{index}@%h".encode() in argv


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc: every thread's children list)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(found))


def start(
    n: int,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 90.0,
) -> list[Worker]:
    """Start workers 1..n for MEDCURATE_HOME (one already running is kept) and wait until each
    says it is ready. ``env`` is added to this process's environment for them."""
    if n < 1:
        raise ConfigError("workers: at least one")
    home = (home or medcurate_home()).resolve()
    private_dir(home / "celery")
    merged = {**os.environ, **(env or {})}
    worker_env = {
        **merged,
        "MEDCURATE_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), merged.get("PYTHONPATH", "")) if p
        ),
    }
    worker_env.setdefault("DAGSTER_HOME", str(home / "dagster"))
    workers = []
    for index in range(1, n + 1):
        files = worker_files(home, index)
        queues = queues_for(index)
        pid = process.read_pid(files, lambda p, i=index: is_worker(p, i))  # type: ignore[misc]
        if pid is None:
            offset = files.log_file.stat().st_size if files.log_file.exists() else 0
            proc = process.spawn(
                files, command(index, queues), worker_env, REPO_ROOT, {"queues": list(queues)}
            )
            process.wait_started(
                proc,
                files,
                lambda f=files, o=offset: _logged_ready(f, o),  # type: ignore[misc]
                label=f"celery worker {index}",
                url=APP,
                timeout=timeout,
                interval=0.2,
                error=WorkerError,
                stop=lambda i=index: stop(home, only=i),  # type: ignore[misc]
            )
            pid = proc.pid
        workers.append(Worker(index, f"medcurate-w{index}", queues, pid))
    return workers


def _logged_ready(files: process.ServerFiles, offset: int) -> bool:
    try:
        with open(files.log_file, "rb") as f:
            f.seek(offset)
            return _READY in f.read()
    except OSError:
        return False


def running(home: Path | None = None) -> list[Worker]:
    """The workers of MEDCURATE_HOME that run now."""
    home = (home or medcurate_home()).resolve()
    found = []
    for pid_file in sorted((home / "celery").glob("worker-*.pid")):
        index = int(pid_file.stem.split("-")[1])
        pid = process.read_pid(worker_files(home, index), lambda p, i=index: is_worker(p, i))  # type: ignore[misc]
        if pid is not None:
            found.append(Worker(index, f"medcurate-w{index}", queues_for(index), pid))
    return found


def stop(home: Path | None = None, timeout: float = 30.0, only: int | None = None) -> int:
    """Stop the workers of MEDCURATE_HOME (warm shutdown, then KILL). Returns how many ran."""
    home = (home or medcurate_home()).resolve()
    stopped = 0
    for pid_file in sorted((home / "celery").glob("worker-*.pid")):
        index = int(pid_file.stem.split("-")[1])
        if only is not None and index != only:
            continue
        stopped += process.stop_server(
            worker_files(home, index),
            lambda p, i=index: is_worker(p, i),  # type: ignore[misc]
            timeout=timeout,
            interval=0.1,
            label=f"celery worker {index}",
        )
    return stopped


def wait_idle(worker: Worker, timeout: float = 30.0) -> None:
    """Wait until the worker has its pool process again (after one was killed)."""
    wait_until(lambda: bool(worker.pool_pids()), timeout, interval=0.1, what="worker pool")
