"""An exclusive lock across processes, for tables that several runs update at once.

Dagster runs two batches side by side (``max_concurrent_runs``); whoever reads a shared table,
decides, and writes it back must hold the table's lock for the whole read-decide-write.

The lock is :class:`filelock.FileLock` (``flock`` on POSIX), so a process killed while holding it
releases it with its descriptors. Lock files are created owner-only (0600, whatever the umask):
some live in ``restricted/``, and none needs to be shared with another account.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

LOCK_FILE_MODE = 0o600
#: seconds between two tries while another process holds the lock (filelock polls)
POLL_INTERVAL_S = 0.01


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created 0600, with its folder, if missing) for the
    block; waits as long as another process holds it."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file, mode=LOCK_FILE_MODE)
    with lock.acquire(poll_interval=POLL_INTERVAL_S):
        yield
