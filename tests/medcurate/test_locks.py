import fcntl
import os
import stat
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from medcurate.locks import exclusive


def _bump(folder: str, times: int) -> None:
    counter = Path(folder) / "n"
    for _ in range(times):
        with exclusive(Path(folder) / ".lock"):
            n = int(counter.read_text()) if counter.exists() else 0
            counter.write_text(str(n + 1))


def test_read_modify_write_under_the_lock_loses_nothing(tmp_path: Path) -> None:
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        list(pool.map(_bump, [str(tmp_path)] * 4, [200] * 4))
    assert (tmp_path / "n").read_text() == "800"


def test_lock_file_folder_is_created(tmp_path: Path) -> None:
    with exclusive(tmp_path / "a" / "b" / ".lock"):
        assert (tmp_path / "a" / "b" / ".lock").exists()


def test_lock_file_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with exclusive(tmp_path / "restricted" / ".lock"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "restricted" / ".lock").stat().st_mode) == 0o600


def test_a_plain_flock_held_elsewhere_is_waited_for(tmp_path: Path) -> None:
    """Same lock as any ``flock`` on the file (older versions, other tools, tests that hold it)."""
    lock = tmp_path / ".lock"
    entered = threading.Event()

    def enter() -> None:
        with exclusive(lock):
            entered.set()

    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        waiter = threading.Thread(target=enter)
        waiter.start()
        assert not entered.wait(0.5)
        fcntl.flock(held, fcntl.LOCK_UN)
    assert entered.wait(10)
    waiter.join(10)
