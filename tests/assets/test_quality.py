"""The quality gates as blocking asset checks, materialized in-process: an ERROR failure stops
the downstream asset, a WARN failure is reported and blocks nothing; the metadata carries every
expectation with its observed value and the Data Docs link."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.quality import (
    GATES,
    QUALITY_CHECKS,
    QualityCheckConfig,
    check_result,
    quality_check,
)
from assets.resources import MedcurateHome
from medcurate.config import Zones
from quality.runner import CheckContext, GxSpec, Outcome, SuiteConfig, SuiteResult, run_suite


class SplitsSuite:
    """A tiny splits suite: split names in a set (GX, ERROR), positives per split (WARN)."""

    table = "splits"

    def expectations(self, df: pd.DataFrame, cfg: SuiteConfig) -> list[GxSpec]:
        import great_expectations.expectations as gxe

        allowed = ["train", "validation", "test"]
        return [
            GxSpec(
                "split_in_set", gxe.ExpectColumnValuesToBeInSet(column="split", value_set=allowed)
            )
        ]

    def extra_checks(self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> list[Outcome]:
        pos = int((df["label"] == "abnormal").sum())
        return [Outcome("positives", "WARN", pos >= 2, pos, f"positives: {pos} abnormal")]


def _graph(
    splits: pd.DataFrame, docs: Path
) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    @dg.asset(name="dataset_splits")
    def splits_asset() -> None:
        return None

    @dg.asset(name="dataset_release", deps=[splits_asset])
    def release_asset() -> None:
        return None

    def run(zones: Zones, table: str, key: str, config: QualityCheckConfig) -> SuiteResult:
        return run_suite(SplitsSuite(), splits, SuiteConfig(), docs_dir=docs)

    return [splits_asset, release_asset, quality_check("splits", splits_asset, run=run)]


def _materialize(zones: Zones, splits: pd.DataFrame) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        _graph(splits, zones.quality_docs),
        resources={"home": MedcurateHome(home=str(zones.home))},
        raise_on_error=False,
    )


def _splits(split: str = "train", positives: int = 2) -> pd.DataFrame:
    labels = ["abnormal"] * positives + ["normal"] * (4 - positives)
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(4)], "split": split, "label": labels})


@pytest.mark.integration
def test_an_error_failure_stops_the_downstream_asset(zones_tmp: Zones) -> None:
    result = _materialize(zones_tmp, _splits(split="holdout"))
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    done = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert done == {"dataset_splits"}  # dataset_release did not materialize
    md = check.metadata
    assert "split_in_set" in md["expectations_table"].value
    assert Path(md["data_docs"].value).is_file()
    assert md["data_docs_url"].value.startswith("file://")


@pytest.mark.integration
def test_a_warn_failure_is_reported_and_blocks_nothing(zones_tmp: Zones) -> None:
    result = _materialize(zones_tmp, _splits(positives=1))
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    done = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert done == {"dataset_splits", "dataset_release"}


@pytest.mark.integration
def test_a_passing_gate_lets_the_release_through(zones_tmp: Zones) -> None:
    result = _materialize(zones_tmp, _splits())
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and result.success


def test_check_result_maps_severities() -> None:
    ok = Outcome("a", "ERROR", True, 0, "a: passed")
    warn = Outcome("b", "WARN", False, 1, "b: failed")
    err = Outcome("c", "ERROR", False, 1, "c: failed")
    assert check_result(SuiteResult("t", [ok])).passed
    r = check_result(SuiteResult("t", [ok, warn]))
    assert not r.passed and r.severity == dg.AssetCheckSeverity.WARN
    r = check_result(SuiteResult("t", [ok, warn, err]))
    assert not r.passed and r.severity == dg.AssetCheckSeverity.ERROR


def test_every_table_has_a_blocking_check_on_its_asset_with_its_partitions() -> None:
    assert len(QUALITY_CHECKS) == len(GATES) == 7
    for check, (table, asset, partitions) in zip(QUALITY_CHECKS, GATES, strict=True):
        (spec,) = check.check_specs
        assert spec.name == f"{table}_quality" and spec.asset_key == dg.AssetKey(asset)
        assert spec.blocking
        assert spec.partitions_def == partitions


@pytest.mark.integration
def test_a_partitioned_gate_checks_its_own_batch(zones_tmp: Zones) -> None:
    from assets.partitions import batch_partitions

    seen: list[str] = []

    @dg.asset(name="raw_instances", partitions_def=batch_partitions)
    def raw() -> None:
        return None

    @dg.asset(name="deid_instances", partitions_def=batch_partitions, deps=[raw])
    def deid() -> None:
        return None

    def run(zones: Zones, table: str, key: str, config: QualityCheckConfig) -> SuiteResult:
        seen.append(key)
        ok = key != "b-bad"
        return SuiteResult(table, [Outcome("accounting", "ERROR", ok, 0, "accounting: x")], key=key)

    check = quality_check("catalog", raw, batch_partitions, run=run)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batch", ["b-good", "b-bad"])
    home = {"home": MedcurateHome(home=str(zones_tmp.home))}
    good = dg.materialize([raw, deid, check], partition_key="b-good", instance=instance,
                          resources=home)  # fmt: skip
    assert good.success and seen == ["b-good"]
    bad = dg.materialize([raw, deid, check], partition_key="b-bad", instance=instance,
                         resources=home, raise_on_error=False)  # fmt: skip
    done = {m.asset_key.to_user_string() for m in bad.get_asset_materialization_events()}
    assert seen == ["b-good", "b-bad"] and done == {"raw_instances"}
