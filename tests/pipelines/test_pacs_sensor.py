"""The PACS sensor against a real clinical Orthanc of the test's home: nothing before the cursor,
a study stored afterwards pulled once into one batch with a run request, then nothing again."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from assets.resources import MedcurateHome, PacsResource
from medcurate.config import Zones
from medcurate.pacs.client import PacsClient
from medcurate.services import orthanc
from medcurate.synth import generate_studies


def _reason(result: dg.SensorResult) -> str:
    reason = result.skip_reason
    return reason.skip_message or "" if isinstance(reason, dg.SkipReason) else str(reason)


@pytest.mark.slow
@pytest.mark.integration
def test_pacs_sensor_pulls_each_new_stable_study_once(zones_tmp: Zones, tmp_path: Path) -> None:
    from pipelines.definitions import defs
    from pipelines.sensors import pacs_sensor

    instance = dg.DagsterInstance.ephemeral()
    resources = {
        "home": MedcurateHome(home=str(zones_tmp.home)),
        "pacs": PacsResource(server="clinical"),
    }

    def tick() -> dg.SensorResult:
        ctx = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
        result = pacs_sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        return result

    assert _reason(tick()) == "the clinical PACS is not running"
    server = orthanc.start(
        zones_tmp.home, orthanc.CLINICAL, port=orthanc.free_port(),
        dicom_port=orthanc.free_port(), env={}, stable_age=1,
    )  # fmt: skip
    try:
        assert _reason(tick()) == "no new stable study"  # the cursor starts now
        generate_studies(tmp_path / "studies", patients=1, seed=3, truth=tmp_path / "truth")
        stored = PacsClient.from_server(server).store_tree(tmp_path / "studies")
        deadline = time.monotonic() + 60
        batches: list[str] = []

        def pulled() -> int:
            return sum(len(list(zones_tmp.raw_batch(b).rglob("*.dcm"))) for b in batches)

        while pulled() < stored and time.monotonic() < deadline:
            result = tick()  # a study is pulled StableAge (1 s) after its last instance
            for req in result.run_requests or []:
                batch = str(req.partition_key)
                assert req.job_name == "ingest_batch" and req.run_key == batch
                [add] = result.dynamic_partitions_requests or []
                assert list(add.partition_keys or []) == [batch]
                assert zones_tmp.catalog_pending(batch).exists()
                batches.append(batch)
            time.sleep(0.5)
        assert batches and pulled() == stored  # every instance once, in the batches requested
        time.sleep(1.5)
        again = tick()  # nothing new: no second batch, no second request
        assert not again.run_requests and _reason(again) == "no new stable study"
        assert sorted(p.name for p in zones_tmp.raw.iterdir() if p.is_dir()) == sorted(batches)
    finally:
        orthanc.stop(zones_tmp.home, orthanc.CLINICAL, kill=True)
