"""Worker pools for the CPU-bound per-file stages (validation at ingest, de-identification).

Forked on Linux: the workers inherit the imported pydicom and the stage's state at no start-up
cost (a spawned worker re-imports everything, seconds per worker). On the way out the workers
leave on their own (``close``); ``terminate`` only when something went wrong, so no worker is
killed in the middle of writing a file.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def chunk_size(tasks: int, workers: int) -> int:
    """Tasks handed to a worker at once: about four chunks per worker, 1 to 16 tasks each."""
    return max(1, min(16, tasks // (workers * 4)))


def pool_map(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    workers: int,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
    ordered: bool = True,
) -> list[R]:
    """``[fn(t) for t in tasks]`` on ``workers`` processes: in task order, or in the order they
    finish when ``ordered`` is false. An exception in a task is raised here."""
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ctx.Pool(workers, initializer=initializer, initargs=initargs)
    try:
        run = pool.imap if ordered else pool.imap_unordered
        results = list(run(fn, tasks, chunksize=chunk_size(len(tasks), workers)))
        pool.close()  # workers leave on their own: no SIGTERM on the way out
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return results
