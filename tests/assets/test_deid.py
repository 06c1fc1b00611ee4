"""deid_instances materialized in-process by Dagster after raw_instances, with its check."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from assets.deid import deid_instances, deid_instances_verified
from assets.ingest import raw_instances
from assets.resources import DeidSecrets, MedcurateHome
from medcurate.config import Zones
from medcurate.deid import read_deid_manifest
from medcurate.ingest import claim_inbox, drop_into_inbox, read_catalog
from medcurate.synth import planted_phi

pytestmark = pytest.mark.integration


def _materialize(z: Zones, batch: str) -> dg.ExecuteInProcessResult:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batch", [batch])
    return dg.materialize(
        [raw_instances, deid_instances, deid_instances_verified],
        partition_key=batch,
        instance=instance,
        resources={"home": MedcurateHome(home=str(z.home)), "secrets": DeidSecrets()},
        raise_on_error=False,
    )


@pytest.mark.slow
def test_batch_deidentified(
    synth_studies: tuple[Path, Path], zones_tmp: Zones, salt: bytes
) -> None:

    studies, truth = synth_studies
    drop_into_inbox(studies, zones_tmp)
    batch = claim_inbox(zones_tmp)
    assert batch is not None
    result = _materialize(zones_tmp, batch)
    assert result.success
    [mat] = result.asset_materializations_for_node("deid_instances")
    md = {k: v.value for k, v in mat.metadata.items()}
    ok = int((read_catalog(zones_tmp, batch)["status"] == "ok").sum())
    assert md["received"] == ok == md["written"] + md["quarantined"]
    assert md["verifier_files_with_hits"] == 0
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    df = read_deid_manifest(zones_tmp.deid, batch)
    assert len(df) == md["written"]
    text = repr(md) + salt.decode()
    phi = [t for t in planted_phi(truth) if len(t) >= 4]
    assert not any(t in repr(md) for t in phi)
    assert salt.decode() not in repr(md) and text
    assert zones_tmp.crosswalk(batch).exists()


def test_missing_salt_fails_before_writing(
    synth_studies: tuple[Path, Path], zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDCURATE_DEID_SALT", raising=False)
    studies, _ = synth_studies
    drop_into_inbox(studies, zones_tmp)
    batch = claim_inbox(zones_tmp)
    assert batch is not None
    result = _materialize(zones_tmp, batch)
    assert not result.success
    assert not any(zones_tmp.deid.rglob("*.dcm"))
