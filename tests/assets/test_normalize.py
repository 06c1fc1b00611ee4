"""The ``series_volumes`` asset materializes one batch through Dagster, in one shard or in many
(dynamic steps), with the same bytes either way, and its check passes."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pydicom
import pytest

from assets.normalize import series_volumes, series_volumes_accounting
from assets.resources import MedcurateHome
from assets.shards import SHARDS_VAR
from medcurate.config import Zones
from medcurate.io import sha256_file
from medcurate.normalize import NormalizeResult, ShardSummary
from medcurate.normalize.phantom import PhantomSeries, write_series
from medcurate.normalize.shards import work_dir


def _batch(z: Zones) -> None:
    """Three phantom series (one with a missing slice) under deid/ with the batch's manifest."""
    rows = []
    specs = [PhantomSeries(name="a", slices=4), PhantomSeries(name="b", slices=5, modality="MR"),
             PhantomSeries(name="c", drop_slices=(5,))]  # fmt: skip
    for k, spec in enumerate(specs):
        for p in write_series(z.deid / "PAT1" / "STU1" / f"SER{k}", spec):
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            rows.append(
                {"path": p.relative_to(z.deid).as_posix(), "series_uid": ds.SeriesInstanceUID,
                 "site": "S-01", "sex": "M", "age_years": 50.0, "sha256": sha256_file(p)}
            )  # fmt: skip
    z.deid_manifests.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_parquet(z.deid_manifest("b1"))


def _materialize(z: Zones, shards: int | None, storage: Path) -> dg.ExecuteInProcessResult:
    """Materialize the batch: ``shards`` from the run config, or (None) from the environment."""
    instance = dg.DagsterInstance.ephemeral(tempdir=str(storage))
    instance.add_dynamic_partitions("batch", ["b1"])
    ops: dict[str, Any] = {"normalize_shard": {"config": {"workers": 1}}}
    if shards is not None:
        ops["normalize_shards"] = {"config": {"shards": shards}}
    return dg.materialize(
        [series_volumes, series_volumes_accounting],
        partition_key="b1",
        instance=instance,
        resources={"home": MedcurateHome(home=str(z.home))},
        run_config={"ops": {"series_volumes": {"ops": ops}}},
    )


def _values(storage: Path) -> list[Any]:
    """What the steps handed each other through the filesystem IO manager."""
    files = [p for p in sorted(storage.rglob("*")) if p.is_file() and "normalize_shard" in str(p)]
    return [pickle.loads(p.read_bytes()) for p in files]


@pytest.mark.slow
@pytest.mark.integration
def test_series_volumes_in_shards_gives_the_bytes_of_one_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SHARDS_VAR, "3")  # as under the cluster profile; the run config wins
    outputs = {}
    for shards, configured in ((1, 1), (3, None)):
        z = Zones(tmp_path / f"home{shards}").ensure()
        _batch(z)
        result = _materialize(z, configured, tmp_path / f"storage{shards}")
        assert result.success
        steps = {e.step_key for e in result.all_events if e.step_key}
        mapped = {s for s in steps if s.startswith("series_volumes.normalize_shard[")}
        assert len(mapped) == shards  # one dynamic step per shard
        (mat,) = result.asset_materializations_for_node("series_volumes")
        md = {k: v.value for k, v in mat.metadata.items()}
        assert set(md) == set(NormalizeResult().metadata())  # the stage's metadata, as before
        assert (md["volumes_written"], md["quarantined"], md["instances_used"]) == (2, 1, 9)
        (check,) = result.get_asset_check_evaluations()
        assert check.passed
        vol = pd.read_parquet(z.volumes_table)
        assert list(vol["batch"]) == ["b1", "b1"] and set(vol["site"]) == {"S-01"}
        assert not work_dir(z, "b1").exists()
        # between the steps: (index, count) pairs and counts, nothing that names a series
        values = _values(tmp_path / f"storage{shards}")
        assert len(values) == 2 * shards
        assert all(type(v) in (tuple, ShardSummary) for v in values)
        assert not any(str(u) in repr(values) for u in vol["series_uid"])
        outputs[shards] = (
            {p.name: sha256_file(p) for p in sorted(z.volumes.iterdir()) if p.is_file()},
            md,
        )
    assert outputs[1] == outputs[3]
