"""deid_instances materialized in-process by Dagster after raw_instances, with its check; its
shards (a graph of dynamic outputs) give the same bytes for any number."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets.deid import deid_instances, deid_instances_verified
from assets.ingest import raw_instances
from assets.resources import DeidSecrets, MedcurateHome
from medcurate.config import Zones
from medcurate.deid import read_deid_manifest
from medcurate.ingest import claim_inbox, drop_into_inbox, read_catalog
from medcurate.synth import planted_phi
from tests.deid_helpers import ct_instance, save

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


def _small_batch(z: Zones, root: Path) -> str:
    """Seven small CT instances of one patient, and an ultrasound showing a face (refused)."""
    for i in range(8):
        ds = ct_instance(sop_uid=f"1.2.826.0.1.3680043.9.7777.1.1.1.{i + 1}")
        if i == 5:
            ds.Modality, ds.RecognizableVisualFeatures = "US", "YES"
        save(ds, root / f"ZQXSURNAME/f{i}.dcm")
    drop_into_inbox(root, z)
    batch = claim_inbox(z)
    assert batch is not None
    return batch


def _sharded_run(
    z: Zones, batch: str, io: Path, shards: int | None
) -> tuple[dg.ExecuteInProcessResult, dict[str, bytes]]:
    """Ingest + deid + check with ``shards`` (None: no run config, MEDCURATE_SHARDS decides); the
    stage's files afterwards, then wiped for the next run."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batch", [batch])
    ops: dict[str, Any] = {"deid_shard": {"config": {"workers": 1}}}
    if shards is not None:
        ops["deid_shards"] = {"config": {"shards": shards}}
    result = dg.materialize(
        [raw_instances, deid_instances, deid_instances_verified],
        partition_key=batch,
        instance=instance,
        resources={
            "home": MedcurateHome(home=str(z.home)),
            "secrets": DeidSecrets(),
            "io_manager": dg.FilesystemIOManager(base_dir=str(io)),
        },
        run_config={"ops": {"deid_instances": {"ops": ops}}},
    )
    roots = (z.deid, z.deid_quarantine_batch(batch), z.crosswalks)
    files = {
        p.relative_to(z.home).as_posix(): p.read_bytes()
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
    shutil.rmtree(z.deid)
    shutil.rmtree(z.deid_quarantine_batch(batch))
    z.crosswalk(batch).unlink()
    return result, files


def test_one_or_three_shards_write_the_same_bytes(
    tmp_path: Path, zones_tmp: Zones, salt: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _small_batch(zones_tmp, tmp_path / "src")
    one, one_files = _sharded_run(zones_tmp, batch, tmp_path / "io1", 1)
    three, three_files = _sharded_run(zones_tmp, batch, tmp_path / "io3", 3)
    assert one_files and three_files == one_files
    shard_steps = {e.step_key for e in three.get_step_success_events()} - {
        e.step_key for e in one.get_step_success_events()
    }
    assert shard_steps == {f"deid_instances.deid_shard[shard_{i}]" for i in (1, 2)}
    metadata = [
        {
            k: v.value
            for k, v in r.asset_materializations_for_node("deid_instances")[0].metadata.items()
        }
        for r in (one, three)
    ]
    for md in metadata:
        md.pop("path", None)  # where the IO manager keeps the output value
    assert metadata[0] == metadata[1]
    assert (metadata[0]["received"], metadata[0]["written"]) == (8, 7)
    assert metadata[0]["quarantined_BURNED_IN"] == 1
    assert all(c.passed for r in (one, three) for c in r.get_asset_check_evaluations())
    # what travels between steps (the IO manager's files) names no patient, file or original UID
    blobs = b"".join(p.read_bytes() for p in (tmp_path / "io3").rglob("*") if p.is_file())
    assert blobs and b"ZQX" not in blobs and b"7777" not in blobs and salt not in blobs
    monkeypatch.setenv("MEDCURATE_SHARDS", "2")  # the cluster profile's setting, no run config
    two, two_files = _sharded_run(zones_tmp, batch, tmp_path / "io2", None)
    assert two_files == one_files
    assert sum("deid_shard[" in (e.step_key or "") for e in two.get_step_success_events()) == 2
