"""bench/e2e.py's arithmetic: step times from Dagster's step stats, Dagster's overhead share,
the incremental share, the second batch's size, and the process tree's resident memory."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.e2e import (
    RunFigures,
    environment,
    incremental_share,
    overhead_share,
    second_batch_size,
    step_times,
    tree_rss,
    verdict,
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
