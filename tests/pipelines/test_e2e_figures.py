"""bench/e2e.py's arithmetic: step times from Dagster's step stats, Dagster's overhead share,
the incremental share, the second batch's size, the process tree's resident memory, and the
per-step peak memory (samples attributed to the steps that enclose them)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.e2e import (
    MemSample,
    PeakRss,
    RunFigures,
    Window,
    environment,
    incremental_share,
    memory_table,
    overhead_share,
    phase_windows,
    reclaimable,
    reset_hwm,
    second_batch_size,
    self_rss,
    step_times,
    tree_rss,
    verdict,
    window_memory,
)


def test_step_times_skip_unfinished_steps() -> None:
    stats = [
        SimpleNamespace(step_key="raw_instances", start_time=10.0, end_time=17.5),
        SimpleNamespace(
            step_key="deid_instances", start_time=17.5, end_time=None
        ),  # failed/running
        SimpleNamespace(step_key="series_volumes", start_time=None, end_time=None),  # skipped
    ]
    assert step_times(stats) == (("raw_instances", 7.5),)


def test_overhead_is_run_time_outside_steps_over_total_wall() -> None:
    runs = [
        RunFigures("batch", "ingest_batch", 40.0, (("a", 20.0), ("b", 15.0))),  # 5 s overhead
        RunFigures("dataset", "consensus_and_release", 30.0, (("c", 27.0),)),  # 3 s overhead
    ]
    assert runs[0].step_sum == 35.0
    assert overhead_share(runs, 100.0) == pytest.approx(0.08)  # outside-Dagster time counts too
    assert overhead_share([], 10.0) == 0.0
    with pytest.raises(ValueError):
        overhead_share(runs, 0.0)


def test_incremental_share_and_batch_size() -> None:
    assert incremental_share(45.0, 180.0) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        incremental_share(1.0, 0.0)
    assert [second_batch_size(n) for n in (1, 12, 60, 240, 241)] == [1, 2, 6, 24, 25]
    assert verdict(0.125, 0.2) == "12.5% (goal < 20%: met)"
    assert verdict(0.3, 0.25) == "30.0% (goal < 25%: NOT met)"


def _stat(proc: Path, pid: int, ppid: int, pages: int) -> None:
    # /proc/PID/stat: pid (comm) state ppid ... ; rss is the 24th field (index 21 after "comm)")
    rest = ["S", str(ppid)] + ["0"] * 19 + [str(pages)] + ["0"] * 5
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "stat").write_text(f"{pid} (py thon) " + " ".join(rest) + "\n")


def test_tree_rss_sums_a_process_and_its_descendants_only(tmp_path: Path) -> None:
    _stat(tmp_path, 10, 1, 100)  # the bench
    _stat(tmp_path, 11, 10, 20)  # Label Studio
    _stat(tmp_path, 12, 11, 3)  # its child
    _stat(tmp_path, 20, 1, 999)  # someone else
    page = os.sysconf("SC_PAGE_SIZE")
    assert tree_rss(10, tmp_path) == 123 * page
    assert tree_rss(11, tmp_path) == 23 * page
    assert tree_rss(99, tmp_path) == 0


def test_tree_rss_of_this_process_is_real() -> None:
    assert tree_rss(os.getpid()) > 0


def test_environment_sets_unsets_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDCURATE_E2E_A", "kept")
    monkeypatch.delenv("MEDCURATE_E2E_B", raising=False)
    with environment({"MEDCURATE_E2E_A": None, "MEDCURATE_E2E_B": "set"}):
        assert "MEDCURATE_E2E_A" not in os.environ and os.environ["MEDCURATE_E2E_B"] == "set"
    assert os.environ["MEDCURATE_E2E_A"] == "kept" and "MEDCURATE_E2E_B" not in os.environ


MIB = 1024**2


def test_self_rss_reads_vmrss_and_vmhwm(tmp_path: Path) -> None:
    (tmp_path / "status").write_text("Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n")
    assert self_rss(tmp_path) == (1024 * 1024, 2048 * 1024)
    assert self_rss(tmp_path / "gone") == (0, 0)
    rss, hwm = self_rss()  # the real one
    assert 0 < rss <= hwm


def test_reset_hwm_writes_5_to_clear_refs(tmp_path: Path) -> None:
    assert reset_hwm(tmp_path) and (tmp_path / "clear_refs").read_text() == "5"
    assert not reset_hwm(tmp_path / "gone")


def test_peak_rss_sees_a_spike_between_samples() -> None:
    """The kernel's high-water mark catches a 200 MiB allocation freed before the next sample."""
    sampler = PeakRss(interval=60.0)  # samples only when asked
    if not sampler.resets:
        pytest.skip("the kernel refuses /proc/self/clear_refs here")
    base = sampler.sample()
    spike = bytearray(200 * MIB)
    spike[::4096] = b"x" * len(spike[::4096])  # touch every page
    del spike
    after = sampler.sample()
    assert after.peak - base.rss > 150 * MIB
    assert after.rss - base.rss < 100 * MIB  # freed: RSS alone would have missed it
    later = sampler.sample()
    assert later.peak < after.peak - 100 * MIB  # reset: the next interval starts afresh
    assert sampler.self_peak() == after.peak


def _sample(start: float, end: float, peak: int, rss: int, children: int = 0) -> MemSample:
    return MemSample(start, end, peak * MIB, rss * MIB, children * MIB)


def test_window_memory_attributes_samples_to_enclosing_steps() -> None:
    samples = [
        _sample(0, 1, 100, 100),
        _sample(1, 2, 500, 120, 30),  # inside step a
        _sample(2, 3, 130, 130),  # across the a/b boundary (2.5): counts for both
        _sample(3, 4, 900, 140, 10),  # inside step b
        _sample(4, 5, 140, 140),
    ]
    a, b, none = window_memory(
        [Window("a", 1.0, 2.5), Window("b", 2.5, 4.0), Window("c", 10.0, 11.0)], samples
    )
    assert (a.before, a.peak, a.children, a.growth) == (100 * MIB, 500 * MIB, 30 * MIB, 400 * MIB)
    assert (b.before, b.peak, b.children) == (120 * MIB, 900 * MIB, 10 * MIB)
    assert (none.peak, none.before) == (0, 140 * MIB)  # no sample inside: before from the last
    lines = memory_table([a, b])
    assert "(MiB)" in lines[0] and lines[1].split()[:5] == ["a", "100", "500", "400", "30"]


def test_phase_windows_from_step_stats_and_outside_phases() -> None:
    phases = [
        SimpleNamespace(name="synth", seconds=2.0, run_id=None, started_at=100.0),
        SimpleNamespace(name="batch: ingest_batch", seconds=9.0, run_id="r1", started_at=102.0),
    ]
    stats = {
        "r1": [
            SimpleNamespace(step_key="raw_instances", start_time=103.0, end_time=105.0),
            SimpleNamespace(step_key="deid_instances", start_time=105.0, end_time=None),
        ]
    }
    assert phase_windows(phases, stats) == [
        Window("synth", 100.0, 102.0),
        Window("batch: ingest_batch / raw_instances", 103.0, 105.0),
    ]


def test_reclaimable_reports_rss_before_and_after_collecting() -> None:
    garbage = [bytearray(1 << 20) for _ in range(50)]  # 50 MiB, freed below
    del garbage
    before, after_gc, after_trim = reclaimable()
    assert before > 0 and after_gc > 0 and after_trim > 0
    assert after_trim <= after_gc + 16 * MIB
