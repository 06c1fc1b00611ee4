"""raw_instances materialized in-process by Dagster, against generated studies and broken files."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from pydicom.data import get_testdata_file

from assets.ingest import raw_instances, raw_instances_accounting
from assets.resources import MedcurateHome
from medcurate.config import Zones
from medcurate.ingest import claim_inbox, drop_into_inbox, read_catalog

pytestmark = pytest.mark.integration


def _materialize(z: Zones, batch: str) -> dg.ExecuteInProcessResult:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batch", [batch])
    return dg.materialize(
        [raw_instances, raw_instances_accounting],
        partition_key=batch,
        instance=instance,
        resources={"home": MedcurateHome(home=str(z.home))},
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [mat] = result.asset_materializations_for_node("raw_instances")
    return {k: v.value for k, v in mat.metadata.items()}


def test_generated_batch(synth_studies: tuple[Path, Path], zones_tmp: Zones) -> None:
    studies, _truth = synth_studies
    n_files = sum(1 for p in studies.rglob("*") if p.is_file())
    assert drop_into_inbox(studies, zones_tmp) == n_files
    batch = claim_inbox(zones_tmp)
    assert batch is not None

    result = _materialize(zones_tmp, batch)
    assert result.success
    md = _metadata(result)
    assert md["received"] == n_files
    assert md["received"] == md["catalogued"] + md["quarantined"] + md["duplicates"]
    assert md["catalogued"] == n_files and md["quarantined"] == 0 and md["duplicates"] == 0
    assert md["accounting_balanced"] is True
    assert set(md["modalities"]) >= {"CT"}  # type: ignore[arg-type]
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    df = read_catalog(zones_tmp, batch)
    assert len(df) == n_files and (df.status == "ok").all()
    # metadata is PHI-free: no relative path (patient names live in the generator's folder names)
    text = repr(md)
    for rel in df.relpath:
        for part in Path(rel).parts[:-1]:
            assert part not in text


def test_broken_files_are_counted_not_fatal(tmp_path: Path, zones_tmp: Zones) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(get_testdata_file("CT_small.dcm"), src / "ct.dcm")
    shutil.copyfile(get_testdata_file("CT_small.dcm"), src / "ct-again.dcm")
    (src / "empty.dcm").write_bytes(b"")
    (src / "notes.txt").write_text("not an image")
    shutil.copyfile(get_testdata_file("DICOMDIR"), src / "DICOMDIR")
    drop_into_inbox(src, zones_tmp)
    batch = claim_inbox(zones_tmp)
    assert batch is not None
    result = _materialize(zones_tmp, batch)
    assert result.success
    md = _metadata(result)
    assert (md["received"], md["catalogued"], md["quarantined"], md["duplicates"]) == (5, 1, 3, 1)
    assert md["reasons"] == {"DICOMDIR": 1, "EMPTY_FILE": 1, "NOT_DICOM": 1}
    [check] = result.get_asset_check_evaluations()
    assert check.passed
