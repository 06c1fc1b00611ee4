"""The demo's clock: each phase timed once, in order, with its Dagster run; the pipeline line."""

from __future__ import annotations

import time

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
