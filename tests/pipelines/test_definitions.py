"""The code location loads, and the inbox sensor turns a drop into one batch run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest

from assets.resources import MedcurateHome
from medcurate.config import Zones


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from pipelines.definitions import defs

    return defs


def test_definitions_load(defs: dg.Definitions) -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert "raw_instances" in keys
    raw = graph.get(dg.AssetKey("raw_instances"))
    assert isinstance(raw.partitions_def, dg.DynamicPartitionsDefinition)
    assert raw.partitions_def.name == "batch"
    checks = {c.name for c in graph.asset_check_keys}
    assert "raw_instances_accounting" in checks


@pytest.mark.integration
def test_inbox_sensor_requests_one_batch_run(
    defs: dg.Definitions, zones_tmp: Zones, tmp_path: Path
) -> None:
    from pipelines.sensors import inbox_sensor

    sensor = defs.resolve_sensor_def("inbox_sensor")
    assert sensor.minimum_interval_seconds == 15
    instance = dg.DagsterInstance.ephemeral()
    resources = {"home": MedcurateHome(home=str(zones_tmp.home))}

    def tick() -> dg.SensorResult:
        ctx = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
        return inbox_sensor(ctx)  # type: ignore[return-value]

    assert tick().run_requests in (None, [])  # empty inbox: skip
    (zones_tmp.inbox / "study").mkdir()
    f = zones_tmp.inbox / "study" / "x.dcm"
    f.write_bytes(b"not yet settled")
    assert not tick().run_requests  # too fresh: waits for the next tick
    past = time.time() - 60
    os.utime(f, (past, past))
    result = tick()
    [req] = result.run_requests or []
    batch = req.partition_key
    assert batch and (zones_tmp.raw / batch / "study" / "x.dcm").is_file()
    assert req.job_name == "ingest_batch"  # a named job: the run list says what ran
    selection = defs.resolve_job_def("ingest_batch").asset_layer.selected_asset_keys
    assert dg.AssetKey("raw_instances") in selection
    graph = defs.resolve_asset_graph()
    for key in selection:  # only batch-partitioned assets can run for a batch key
        pdef = graph.get(key).partitions_def
        assert isinstance(pdef, dg.DynamicPartitionsDefinition) and pdef.name == "batch"
    [add] = result.dynamic_partitions_requests or []
    assert list(add.partition_keys or []) == [batch]
    assert not any(zones_tmp.inbox.iterdir())


@pytest.mark.integration
def test_round_sensor_waits_when_label_studio_is_down(
    defs: dg.Definitions, zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from assets.resources import LabelStudioResource
    from medcurate.services.labelstudio import free_port
    from pipelines.sensors import round_sensor

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-a-real-token")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("round", ["round-1"])
    zones_tmp.round_dir("round-1").mkdir(parents=True)
    info = {"project_id": 1, "annotators": 2, "task_keys": ["s1-k000"]}
    zones_tmp.round_info("round-1").write_text(json.dumps(info))
    resources = {
        "home": MedcurateHome(home=str(zones_tmp.home)),
        "labelstudio": LabelStudioResource(url=f"http://127.0.0.1:{free_port()}"),
    }
    ctx = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    result = round_sensor(ctx)
    assert not result.run_requests  # type: ignore[union-attr]
    assert "not reachable" in str(result.skip_reason)  # type: ignore[union-attr]
    # the reason says what to do, not an exception's class name
    assert "medcurate labelstudio start" in str(result.skip_reason)  # type: ignore[union-attr]
    assert "Unreachable" not in str(result.skip_reason)  # type: ignore[union-attr]
