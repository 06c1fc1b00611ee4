"""baseline_evaluation, materialized in-process against a release in a throwaway home: metadata,
its WARN check on subgroup gaps, and the report in the version's dataset card."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.evaluate import GAP_CHECK, baseline_evaluation
from assets.resources import MedcurateHome
from medcurate import datasets
from medcurate.config import Zones
from medcurate.store.objects import ObjectStore
from tests.evaluate_helpers import release_blobs


@pytest.mark.integration
@pytest.mark.slow
def test_materialize_reports_metrics_check_and_card(zones_tmp: Zones) -> None:
    store = ObjectStore(str(zones_tmp.releases))
    release_blobs(zones_tmp.home / "volumes-src", store, n=48)
    result = dg.materialize(
        [baseline_evaluation],
        resources={"home": MedcurateHome(home=str(zones_tmp.home))},
        run_config={"ops": {"baseline_evaluation": {"config": {"dataset": "blobs"}}}},
    )
    assert result.success
    mat = result.asset_materializations_for_node("baseline_evaluation")[0]
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["version_id"].startswith("v1-") and md["test_samples"] >= 4
    assert md["auc"] is None or 0.0 <= md["auc"] <= 1.0
    assert "(" in md["auc_95ci"] and md["classifier_seconds_per_epoch"] > 0
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == GAP_CHECK and check.severity == dg.AssetCheckSeverity.WARN
    assert check.passed == (md["subgroup_gaps_flagged"] == 0)
    card = datasets.load("blobs").card()
    assert "## Evaluation" in card and md["auc_95ci"] in card
    assert (zones_tmp.evaluation("blobs", "v1") / "timings.json").is_file()
