"""The round sensor asks for an export only when a round's current state was never exported,
and says each round's progress when it asks for nothing; the demo's runs carry job names."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from assets.annotation import RoundProgress
from assets.resources import LabelStudioResource, MedcurateHome
from medcurate.config import Zones


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from pipelines.definitions import defs

    return defs


def _tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    zones: Zones,
    monkeypatch: pytest.MonkeyPatch,
    progress: list[RoundProgress] | str,
) -> dg.SensorResult:
    """One evaluation with Label Studio's answer replaced by ``progress``."""
    from pipelines import sensors

    monkeypatch.setattr(sensors, "open_rounds", lambda home, ls, rounds: progress)
    resources = {
        "home": MedcurateHome(home=str(zones.home)),
        "labelstudio": LabelStudioResource(url="http://127.0.0.1:9"),
    }
    ctx = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    result = sensors.round_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    return result


def _reason(result: dg.SensorResult) -> str:
    reason = result.skip_reason
    return reason.skip_message or "" if isinstance(reason, dg.SkipReason) else str(reason)


def _export(instance: dg.DagsterInstance, round: str, **metadata: Any) -> None:
    """An ``annotations[round]`` materialization with the export's metadata."""
    event = dg.AssetMaterialization(asset_key="annotations", partition=round, metadata=metadata)
    instance.report_runless_asset_event(event)


def _consensus(instance: dg.DagsterInstance) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="consensus_labels"))


def test_round_sensor_skips_exported_rounds_and_shows_progress(
    defs: dg.Definitions, zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("round", ["round-1", "round-2", "round-3"])
    one = RoundProgress("round-1", project_id=4, done=16, total=16)
    two = RoundProgress("round-2", project_id=5, done=80, total=117)
    progress = [one, two]  # round-3 has no round.json yet

    # a finished round never exported: its export is requested under the round's key
    [req] = _tick(defs, instance, zones_tmp, monkeypatch, progress).run_requests or []
    assert (req.job_name, req.partition_key, req.run_key) == (
        "round_export",
        "round-1",
        one.run_key,
    )

    # exported in this state (as `make demo` does): no export again; consensus once
    _export(instance, "round-1", round_key=one.run_key, tasks=16, tasks_complete=16)
    [req] = _tick(defs, instance, zones_tmp, monkeypatch, progress).run_requests or []
    assert req.job_name == "consensus_and_release"

    _consensus(instance)
    result = _tick(defs, instance, zones_tmp, monkeypatch, progress)
    assert not result.run_requests
    assert _reason(result) == (
        "round-3: no tasks yet (run annotation_round); round-2: 80/117 tasks done; "
        "round-1: exported"
    )


def test_round_sensor_exports_again_when_the_round_changed(
    defs: dg.Definitions, zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("round", ["round-1"])
    before = RoundProgress("round-1", project_id=4, done=16, total=16)
    _export(instance, "round-1", round_key=before.run_key, tasks=16, tasks_complete=16)
    _consensus(instance)
    assert not _tick(defs, instance, zones_tmp, monkeypatch, [before]).run_requests

    grown = RoundProgress("round-1", project_id=4, done=20, total=20)  # tasks were added
    [req] = _tick(defs, instance, zones_tmp, monkeypatch, [grown]).run_requests or []
    assert (req.job_name, req.run_key) == ("round_export", grown.run_key)

    # an export made while annotators were still at work does not count as this state's export
    _export(instance, "round-1", round_key=grown.run_key, tasks=20, tasks_complete=12)
    _consensus(instance)
    [req] = _tick(defs, instance, zones_tmp, monkeypatch, [grown]).run_requests or []
    assert req.job_name == "round_export"


def test_round_sensor_reads_exports_recorded_without_a_round_key(
    defs: dg.Definitions, zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exports made before ``round_key`` was recorded: the same task count, all complete."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("round", ["round-1"])
    p = RoundProgress("round-1", project_id=4, done=16, total=16)
    _export(instance, "round-1", tasks=16, tasks_complete=16)
    _consensus(instance)
    result = _tick(defs, instance, zones_tmp, monkeypatch, [p])
    assert not result.run_requests and _reason(result) == "round-1: exported"
    _export(instance, "round-1", tasks=15, tasks_complete=15)  # before a task was added
    _consensus(instance)
    [req] = _tick(defs, instance, zones_tmp, monkeypatch, [p]).run_requests or []
    assert req.job_name == "round_export"


def test_round_sensor_without_rounds_says_what_to_run(
    defs: dg.Definitions, zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _tick(defs, dg.DagsterInstance.ephemeral(), zones_tmp, monkeypatch, [])
    assert not result.run_requests
    assert "annotation_round" in _reason(result)


def test_demo_runs_named_jobs(zones_tmp: Zones) -> None:
    """The demo's runner launches the code location's jobs, so the run list shows their names
    (not ``__ephemeral_asset_job__``); a job that fails is still recorded under its name."""
    from pipelines.demo import Clock, Runner
    from pipelines.jobs import ALL_JOBS

    instance = dg.DagsterInstance.ephemeral()
    clock = Clock()
    assert Runner(instance, clock)("consensus", "consensus") is False  # no round exported yet
    [run] = instance.get_runs()
    assert run.job_name == "consensus"
    [phase] = clock.phases  # the run was timed under its label and job
    assert phase.name == "consensus: consensus" and phase.run_id == run.run_id
    # Label Studio is not configured here: a settings error, failed at once, never retried
    events = [e.dagster_event.event_type for e in instance.all_logs(run.run_id) if e.dagster_event]
    assert dg.DagsterEventType.STEP_FAILURE in events
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in events
    names = {j.name for j in ALL_JOBS}
    assert {"ingest_batch", "annotation_round", "round_export", "consensus_and_release"} <= names


def test_round_sensor_says_how_to_fix_a_refused_token(
    defs: dg.Definitions, zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Label Studio answers but refuses the token: a skip reason with the fix, not a crash."""
    import requests

    import assets.annotation
    from annotation.client import LabelStudioClient
    from pipelines import sensors

    def refuse(*_: object) -> list[RoundProgress]:
        response = requests.Response()
        response.status_code = 401
        raise requests.HTTPError("401 Client Error", response=response)

    # the server answers its health probe, then refuses the listing of a round's tasks
    monkeypatch.setattr(LabelStudioClient, "check", lambda self: self)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "a-token-the-server-refuses")
    monkeypatch.setattr(assets.annotation, "rounds_progress", refuse)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("round", ["round-1"])
    resources = {
        "home": MedcurateHome(home=str(zones_tmp.home)),
        "labelstudio": LabelStudioResource(url="http://127.0.0.1:9"),
    }
    ctx = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    result = sensors.round_sensor(ctx)
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    reason = _reason(result)
    assert "refuses the API token (HTTP 401)" in reason and "LABEL_STUDIO_API_KEY" in reason
    assert "Error" not in reason  # no exception class name
