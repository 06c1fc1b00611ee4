"""The ``series_volumes`` asset materializes one batch through Dagster and its check passes."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pydicom
import pytest

from assets.normalize import series_volumes, series_volumes_accounting
from assets.resources import MedcurateHome
from medcurate.config import Zones
from medcurate.io import sha256_file
from medcurate.normalize.phantom import PhantomSeries, write_series


@pytest.mark.slow
@pytest.mark.integration
def test_series_volumes_materializes_a_batch(zones_tmp: Zones) -> None:
    z = zones_tmp
    paths = write_series(z.deid / "PAT1" / "STU1" / "SER1", PhantomSeries(slices=4))
    rows = []
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        rows.append(
            {"path": p.relative_to(z.deid).as_posix(), "series_uid": ds.SeriesInstanceUID,
             "site": "S-01", "sex": "M", "age_years": 50.0, "sha256": sha256_file(p)}
        )  # fmt: skip
    z.deid_manifests.mkdir()
    pd.DataFrame(rows).to_parquet(z.deid_manifest("b1"))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batch", ["b1"])
    result = dg.materialize(
        [series_volumes, series_volumes_accounting],
        partition_key="b1",
        instance=instance,
        resources={"home": MedcurateHome(home=str(z.home))},
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("series_volumes")
    assert mat.metadata["volumes_written"].value == 1
    assert mat.metadata["instances_used"].value == 4
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    vol = pd.read_parquet(z.volumes_table)
    assert list(vol["batch"]) == ["b1"] and list(vol["site"]) == ["S-01"]
