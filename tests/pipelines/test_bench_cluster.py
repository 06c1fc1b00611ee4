"""bench/cluster.py's arithmetic: phase windows and overhead from step intervals, the output
digest that says whether every worker count wrote the same files, the curve line and the
projection to 20 M files."""

from __future__ import annotations

import pytest

from bench.cluster import (
    DEID_GRAPH,
    NORMALIZE_GRAPH,
    as_steps,
    covered,
    curve_line,
    overhead_share,
    phase_window,
    project,
    speedup,
    step_seconds,
    tree_digest,
)

STEPS = [
    ("raw_instances", 0.0, 2.0),
    ("deid_instances.deid_shards", 3.0, 3.5),
    ("deid_instances.deid_shard[shard_0]", 4.0, 10.0),
    ("deid_instances.deid_shard[shard_1]", 4.5, 11.0),
    ("deid_instances.deid_merge", 12.0, 13.0),
    ("deid_instances_verified", 13.5, 14.0),
    ("series_volumes.normalize_shards", 15.0, 15.5),
    ("series_volumes.normalize_shard[shard_0]", 16.0, 20.0),
    ("series_volumes.normalize_merge", 21.0, 22.0),
]


def test_phase_window_spans_fan_out_to_merge_and_nothing_else() -> None:
    assert phase_window(STEPS, DEID_GRAPH) == (3.0, 13.0)  # not the check step after it
    assert phase_window(STEPS, NORMALIZE_GRAPH) == (15.0, 22.0)
    assert phase_window(STEPS, "nothing.") is None


def test_covered_counts_overlapping_steps_once() -> None:
    assert covered([(0, 2), (1, 3), (5, 6)]) == pytest.approx(4.0)
    assert covered([(0, 10), (2, 3)]) == pytest.approx(10.0)  # nested
    assert covered([]) == 0.0


def test_overhead_is_the_share_of_the_run_without_a_running_step() -> None:
    # busy: [0,2] [3,3.5] [4,11] [12,13] [13.5,14] [15,15.5] [16,20] [21,22] = 16.5 of 25 s
    assert overhead_share(STEPS, 25.0) == pytest.approx(1 - 16.5 / 25)
    assert overhead_share(STEPS, 0.0) == 0.0
    assert overhead_share([], 10.0) == 1.0


def test_step_seconds_adds_worker_time_of_parallel_shards() -> None:
    assert step_seconds(STEPS, DEID_GRAPH) == pytest.approx(0.5 + 6.0 + 6.5 + 1.0)
    assert step_seconds(STEPS, NORMALIZE_GRAPH) == pytest.approx(0.5 + 4.0 + 1.0)


def test_tree_digest_depends_on_content_and_path_not_on_order() -> None:
    a = tree_digest({"p/1.dcm": "aa", "p/2.dcm": "bb"})
    assert a == tree_digest({"p/2.dcm": "bb", "p/1.dcm": "aa"})
    assert a != tree_digest({"p/1.dcm": "aa", "p/2.dcm": "bc"})
    assert a != tree_digest({"p/1.dcm": "aa", "q/2.dcm": "bb"})
    assert a != tree_digest({"p/1.dcm": "aa"})


def test_curve_line_names_speedups_and_the_shape_past_the_cores() -> None:
    line = curve_line({1: 100.0, 2: 52.0, 4: 50.0}, cpus=2)
    assert "1: 1.00x, 2: 1.92x, 4: 2.00x" in line
    assert "4 workers vs 2: 1.04x (flat" in line
    assert "(slower" in curve_line({1: 100.0, 2: 52.0, 4: 60.0}, cpus=2)
    assert "(still rising" in curve_line({1: 100.0, 2: 52.0, 4: 30.0}, cpus=2)
    assert "workers vs" not in curve_line({1: 100.0, 2: 52.0}, cpus=2)
    assert curve_line({1: 9.0}, cpus=2, what="deid phase").startswith("deid phase")
    assert speedup(10.0, 0.0) == 0.0


def test_projection_is_linear_in_workers_and_stretched_by_overhead() -> None:
    one = project(20_000_000, 0.01, 0.02, 0.0, 1)
    assert one.deid_h == pytest.approx(20_000_000 * 0.01 / 3600)
    assert one.total_h == pytest.approx(20_000_000 * 0.03 / 3600)
    eight = project(20_000_000, 0.01, 0.02, 0.25, 8)
    assert eight.deid_h == pytest.approx(one.deid_h / 8)
    assert eight.total_h == pytest.approx(one.total_h / 8 / 0.75)


def test_steps_from_the_childs_json_become_typed_tuples() -> None:
    assert as_steps([["a.b", 1, 2.5]]) == [("a.b", 1.0, 2.5)]
