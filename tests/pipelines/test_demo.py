"""The demo's clock: each phase timed once, in order, with its Dagster run; the pipeline line;
memory handed back after each in-process step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.demo import Clock, Phase, pipeline_line


def test_phases_are_recorded_in_order_with_their_run() -> None:
    clock = Clock()
    assert clock.wall() == 0.0
    with clock.phase("synth"):
        time.sleep(0.01)
    with clock.phase("batch: ingest_batch") as info:
        info["run_id"] = "abc"
    assert [p.name for p in clock.phases] == ["synth", "batch: ingest_batch"]
    assert [p.run_id for p in clock.phases] == [None, "abc"]
    assert clock.phases[0].seconds >= 0.01
    # the wall spans the first start to the last end: at least the phases' sum
    assert clock.wall() >= sum(p.seconds for p in clock.phases)


def test_a_failing_phase_is_still_recorded() -> None:
    clock = Clock()
    with pytest.raises(RuntimeError), clock.phase("round-1 annotate-sim"):
        raise RuntimeError("server went away")
    assert [p.name for p in clock.phases] == ["round-1 annotate-sim"]


def test_phase_output(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    with clock.phase("inbox drop"):
        pass
    assert capsys.readouterr().out.startswith("  [inbox drop: 0.0 s]")
    assert pipeline_line(183.24) == "pipeline part: 183.2 s"
    assert Phase("x", 1.0).run_id is None


def test_in_process_jobs_release_memory_after_each_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The named job keeps its name; a job with the hook calls release_memory once per step."""
    import dagster as dg

    from pipelines import demo

    job = demo.in_process_job("consensus")
    assert job.name == "consensus"
    assert demo.release_memory_hook in job.hook_defs

    calls: list[int] = []
    monkeypatch.setattr(demo, "release_memory", lambda: calls.append(1))

    @dg.op
    def one() -> int:
        return 1

    @dg.op
    def two(x: int) -> int:
        return x + 1

    @dg.job(hooks={demo.release_memory_hook})
    def tiny() -> None:
        two(one())

    assert tiny.execute_in_process().success
    assert len(calls) == 2


def test_release_memory_returns_freed_memory() -> None:
    """Small chunks freed on the heap stay in the process until trimmed."""
    from pipelines.demo import release_memory

    def rss() -> int:
        status = Path("/proc/self/status").read_text().splitlines()
        return next(int(x.split()[1]) for x in status if x.startswith("VmRSS")) * 1024

    release_memory()
    base = rss()
    chunks = [bytearray(64 * 1024) for _ in range(3200)]  # 200 MiB below the mmap threshold
    chunks[-1][0] = 1
    del chunks[:-1]  # the last one pins the heap top: only trimming returns the rest
    release_memory()
    assert rss() - base < 100 * 1024 * 1024


def test_freeze_long_lived_keeps_later_garbage_collectable() -> None:
    """Objects alive at the freeze leave the collector's generations; a garbage cycle made
    afterwards is still collected by release_memory."""
    import gc
    import weakref

    from pipelines.demo import freeze_long_lived, release_memory

    class Node:
        other: Any = None

    kept = Node()
    try:
        freeze_long_lived()
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # frozen: not in a generation
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle only the collector can free
        gone = weakref.ref(a)
        del a, b
        release_memory()
        assert gone() is None
    finally:
        gc.unfreeze()
