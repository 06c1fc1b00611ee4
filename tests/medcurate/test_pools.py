"""The worker pool: results like a plain loop, in order or as they finish, errors raised here."""

from __future__ import annotations

import os

import pytest

from medcurate.pools import chunk_size, pool_map

_STATE: dict[str, int] = {}


def _init(value: int) -> None:
    _STATE["offset"] = value


def _work(x: int) -> tuple[int, int]:
    return x * x + _STATE.get("offset", 0), os.getpid()


def _fail(x: int) -> int:
    if x == 3:
        raise ValueError("task 3 failed")
    return x


def test_results_in_task_order_from_worker_processes_with_their_initializer() -> None:
    out = pool_map(_work, list(range(40)), 2, _init, (1000,))
    assert [v for v, _ in out] == [x * x + 1000 for x in range(40)]
    assert os.getpid() not in {pid for _, pid in out}  # ran in the workers, not here


def test_unordered_gives_the_same_results() -> None:
    out = pool_map(_work, list(range(40)), 2, ordered=False)
    assert sorted(v for v, _ in out) == [x * x for x in range(40)]


def test_a_failing_task_raises_here() -> None:
    with pytest.raises(ValueError, match="task 3"):
        pool_map(_fail, list(range(8)), 2)


def test_chunk_size_is_one_to_sixteen() -> None:
    assert chunk_size(1, 2) == 1
    assert chunk_size(80, 2) == 10
    assert chunk_size(10_000, 2) == 16
