"""The release assets, invoked directly with a build_asset_context and a throwaway home, and
materialized in-process with their blocking split check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from assets.release import (
    SplitsConfig,
    curated_samples,
    dataset_release,
    dataset_splits,
    no_patient_in_two_splits,
)
from assets.resources import MedcurateHome
from medcurate.config import Zones
from medcurate.store import run as release_run
from medcurate.store.objects import ObjectStore
from medcurate.store.publish import list_versions, load_manifest


def _write_inputs(z: Zones, release_cohort, patients: int, start: int = 0):  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(z.home, patients, start=start)  # writes home/volumes, home/labels
    vp, lp = z.volumes_table, z.labels_table
    if vp.exists():
        vol = pd.concat([pd.read_parquet(vp), vol], ignore_index=True)
        lab = pd.concat([pd.read_parquet(lp), lab], ignore_index=True)
    vol.to_parquet(vp, index=False)
    lab.to_parquet(lp, index=False)


def _run_chain(z: Zones) -> dict[str, dg.MaterializeResult]:
    home = MedcurateHome(home=str(z.home))
    out = {}
    with dg.build_asset_context() as ctx:
        out["samples"] = curated_samples(ctx, home=home)
    with dg.build_asset_context(asset_config={"folds": 2, "seed": 3}) as ctx:
        out["splits"] = dataset_splits(ctx, home=home)
    with dg.build_asset_context(asset_config={}) as ctx:
        out["release"] = dataset_release(ctx, home=home)
    return out


@pytest.mark.integration
@pytest.mark.slow
def test_chain_publishes_and_keeps_patients_in_place(zones_tmp: Zones, release_cohort) -> None:  # type: ignore[no-untyped-def]
    _write_inputs(zones_tmp, release_cohort, 10)
    r1 = _run_chain(zones_tmp)
    md = r1["release"].metadata or {}
    assert md["version"] == "v1" and md["created"] is True
    assert "| split |" in str(md["splits"].value)  # type: ignore[union-attr]
    smd = r1["splits"].metadata or {}
    assert "| label | abnormal |" in str(smd["balance"].value)  # type: ignore[union-attr]
    assert zones_tmp.samples_table.exists()
    for value in (r1["samples"].metadata or {}).values():  # PHI-free: no UIDs in metadata
        assert "2.25." not in str(value)

    again = _run_chain(zones_tmp)
    assert (again["release"].metadata or {})["created"] is False  # nothing changed: no v2

    _write_inputs(zones_tmp, release_cohort, 4, start=10)
    r2 = _run_chain(zones_tmp)
    assert (r2["release"].metadata or {})["version"] == "v2"
    store = ObjectStore(zones_tmp.releases)
    v1, v2 = list_versions(store, "medcurate-demo")
    m1 = load_manifest(store, v1).set_index("sample_id")
    m2 = load_manifest(store, v2).set_index("sample_id").loc[m1.index]
    assert (m1["split"] == m2["split"]).all() and (m1["fold"] == m2["fold"]).all()


def test_curated_samples_without_labels(zones_tmp: Zones, release_cohort) -> None:  # type: ignore[no-untyped-def]
    vol, _ = release_cohort(zones_tmp.home, 3)
    vol.to_parquet(zones_tmp.volumes_table, index=False)
    home = MedcurateHome(home=str(zones_tmp.home))
    with dg.build_asset_context() as ctx:
        res = curated_samples(ctx, home=home)
    assert (res.metadata or {})["labels_available"] is False
    s = pd.read_parquet(zones_tmp.samples_table)
    assert set(s["label"]) == {"unlabelled"}


def test_curated_samples_fails_without_volumes(zones_tmp: Zones) -> None:
    home = MedcurateHome(home=str(zones_tmp.home))
    with dg.build_asset_context() as ctx, pytest.raises(dg.Failure):
        curated_samples(ctx, home=home)


@pytest.mark.integration
def test_materialize_release_assets_in_process(zones_tmp: Zones, release_cohort) -> None:  # type: ignore[no-untyped-def]
    _write_inputs(zones_tmp, release_cohort, 8)
    result = dg.materialize(
        [curated_samples, dataset_splits, no_patient_in_two_splits, dataset_release],
        resources={"home": MedcurateHome(home=str(zones_tmp.home))},
        run_config={
            "ops": {
                "dataset_release": {"config": {"dataset": "demo-x"}},
                "dataset_splits": {"config": {"dataset": "demo-x", "folds": 2}},
            }
        },
    )
    assert result.success
    mats = result.asset_materializations_for_node("dataset_release")
    md = mats[0].metadata
    assert md["version"].value == "v1"
    # the release page: summary and plot short enough for Dagster to show inline, full card too
    for key in ("card_summary", "balance_plot", "card"):
        assert isinstance(md[key], dg.MarkdownMetadataValue), key
    assert len(str(md["card_summary"].value)) < 1000 and "demo-x@v1" in str(
        md["card_summary"].value
    )
    assert len(str(md["balance_plot"].value)) < 1000
    assert str(md["balance_plot"].value).startswith("[![balance](http")
    assert str(md["card"].value).startswith("# demo-x v1-")
    card = (zones_tmp.releases / "demo-x" / "v1" / "card.md").read_text()
    assert result.run_id in card  # lineage names the Dagster run
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "no_patient_in_two_splits" and check.passed


def _leaky(assign: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
    """assign_splits, then one sample of the first two-sample patient moved to another split."""

    def leak(*args: Any, **kwargs: Any) -> pd.DataFrame:
        out = assign(*args, **kwargs)
        per_patient = out["patient"].value_counts()
        patient = sorted(per_patient[per_patient > 1].index)[0]
        row = out.index[out["patient"] == patient][0]
        out.loc[row, "split"] = "test" if out.loc[row, "split"] != "test" else "train"
        return out

    return leak


@pytest.mark.integration
def test_a_patient_leak_fails_the_blocking_check_and_stops_the_release(
    zones_tmp: Zones, release_cohort, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    _write_inputs(zones_tmp, release_cohort, 8)
    monkeypatch.setattr(release_run, "assign_splits", _leaky(release_run.assign_splits))
    result = dg.materialize(
        [curated_samples, dataset_splits, no_patient_in_two_splits, dataset_release],
        resources={"home": MedcurateHome(home=str(zones_tmp.home))},
        run_config={"ops": {"dataset_splits": {"config": {"folds": 2}}}},
        raise_on_error=False,
    )
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "no_patient_in_two_splits" and not check.passed
    problems = str(check.metadata["problems"].value)
    assert "1 patient(s) have samples in more than one split" in problems
    assert "p0" not in problems  # counts only: no pseudonym in the check's metadata
    assert result.asset_materializations_for_node("dataset_splits")  # the splits were written
    assert not result.asset_materializations_for_node("dataset_release")  # but not released
    assert not result.success
    assert not (zones_tmp.releases / "medcurate-demo").exists()


def test_splits_and_release_with_unknown_store_protocol_fail_in_one_line(
    zones_tmp: Zones, release_cohort
) -> None:  # type: ignore[no-untyped-def]
    _write_inputs(zones_tmp, release_cohort, 4)
    home = MedcurateHome(home=str(zones_tmp.home))
    with dg.build_asset_context() as ctx:
        curated_samples(ctx, home=home)
    bad = {"store": "nosuchproto://bucket/releases"}
    with dg.build_asset_context(asset_config=bad) as ctx, pytest.raises(dg.Failure) as err:
        dataset_splits(ctx, home=home)
    assert "protocol 'nosuchproto'" in str(err.value) and "\n" not in str(err.value)
    with dg.build_asset_context(asset_config={"folds": 2}) as ctx:
        dataset_splits(ctx, home=home)
    with dg.build_asset_context(asset_config=bad) as ctx, pytest.raises(dg.Failure) as err:
        dataset_release(ctx, home=home)
    assert "protocol 'nosuchproto'" in str(err.value)


def test_split_config_takes_the_positive_floor_from_the_splits_suite() -> None:
    """The assignment aims at what the blocking evaluation_splits_have_positives check asks."""
    from quality.runner import config_for

    q = config_for("splits")
    cfg = SplitsConfig(seed=3).split_config()
    assert cfg.seed == 3
    assert list(cfg.evaluation_splits) == list(q.get("evaluation_splits"))
    assert list(cfg.positive_classes) == list(q.get("positive_classes"))
    assert cfg.min_positives == int(q.get("min_positives"))
