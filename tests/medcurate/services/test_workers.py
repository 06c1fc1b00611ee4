"""Celery workers as managed processes: N started against a real Redis, found again, stopped
whole (pool processes included), owner-only files whatever the umask, the broker password kept
off command lines, and a stale pid file never makes us signal an unrelated process."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from medcurate.config import Zones
from medcurate.services import redis, workers


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_worker_1_serves_every_queue_the_others_the_default_one() -> None:
    assert workers.queues_for(1) == ("dagster", "labelstudio", "pacs")
    assert workers.queues_for(2) == ("dagster",)
    assert workers.queues_for(7) == ("dagster",)
    cmd = workers.command(1, workers.queues_for(1))
    assert cmd[cmd.index("-Q") + 1] == "dagster,labelstudio,pacs"
    assert cmd[cmd.index("--concurrency") + 1] == "1"
    assert cmd[cmd.index("-n") + 1] == "medcurate-w1@%h"


@pytest.fixture
def broker(zones_tmp: Zones) -> Iterator[dict[str, str]]:
    """A real Redis for the home; every worker of the home is stopped at the end."""
    home = zones_tmp.home
    try:
        redis.start(home)
        yield redis.client_env(home)
    finally:
        workers.stop(home)
        redis.stop(home)


@pytest.mark.integration
@pytest.mark.slow
def test_start_find_and_stop_two_workers(zones_tmp: Zones, broker: dict[str, str]) -> None:
    home = zones_tmp.home
    secret = redis.password(home)
    old_umask = os.umask(0)
    try:
        started = workers.start(2, home, env=broker)
    finally:
        os.umask(old_umask)
    assert [(w.index, w.queues) for w in started] == [
        (1, ("dagster", "labelstudio", "pacs")),
        (2, ("dagster",)),
    ]
    found = workers.running(home)
    assert found == started
    assert all(workers.is_worker(w.pid, w.index) for w in found)
    assert not workers.is_worker(started[0].pid, 2)
    pools = {w.index: w.pool_pids() for w in started}
    assert all(len(p) == 1 for p in pools.values())  # concurrency 1: one pool process each

    # owner-only files in an owner-only folder, though the umask was 000
    base = home / "celery"
    assert _mode(base) == 0o700
    files = sorted(p.name for p in base.iterdir())
    for i in (1, 2):
        for suffix in ("pid", "json", "log"):
            assert f"worker-{i}.{suffix}" in files
    for p in base.iterdir():
        assert _mode(p) == 0o600, p.name

    # the broker password reaches the workers through the environment only
    for w in started:
        for pid in (w.pid, *pools[w.index]):
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    for i in (1, 2):
        assert not any(secret in arg for arg in workers.command(i, workers.queues_for(i)))
        assert secret not in (base / f"worker-{i}.json").read_text()

    # a second start keeps the running workers
    again = workers.start(2, home, env=broker)
    assert [w.pid for w in again] == [w.pid for w in started]

    # stop: warm shutdown of both, nothing left (main or pool processes)
    assert workers.stop(home) == 2
    for w in started:
        for pid in (w.pid, *pools[w.index]):
            assert not _alive(pid) or not workers.is_worker(pid), pid
    assert workers.running(home) == []
    assert not list(base.glob("worker-*.pid"))
    assert workers.stop(home) == 0


def test_a_stale_pid_file_never_signals_another_process(zones_tmp: Zones) -> None:
    home = zones_tmp.home
    files = workers.worker_files(home, 1)
    files.pid_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # an unrelated process leading its own group: a signal to the recorded pid's group hits it
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        for pid in (other.pid, os.getpid()):
            files.pid_file.write_text(f"{pid}\n")
            assert workers.running(home) == []
            assert workers.stop(home) == 0
            assert other.poll() is None  # still running: never signalled
        assert not files.pid_file.exists()  # the stale file is forgotten
    finally:
        other.kill()
        other.wait()


@pytest.mark.integration
def test_a_pythonpath_given_in_env_reaches_the_worker(
    zones_tmp: Zones, broker: dict[str, str], tmp_path: Path
) -> None:
    extra = str(tmp_path / "code")
    [worker] = workers.start(1, zones_tmp.home, env={**broker, "PYTHONPATH": extra})
    raw = Path(f"/proc/{worker.pid}/environ").read_bytes().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(workers.REPO_ROOT), extra]
