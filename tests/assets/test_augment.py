"""The augmentation assets materialized in-process on a throwaway home: the GAN, the checked
synthetic samples with their blocking gate, then (after a release) the paired utility report
in the version's dataset card."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.augment import (
    augmentation_report,
    gan_model,
    synthetic_samples,
    synthetic_train_only_and_not_memorized,
)
from assets.resources import MedcurateHome
from medcurate import datasets
from medcurate.config import Zones
from medcurate.store.run import ReleaseSettings, release_store, run_release
from tests.medcurate.augment.test_run import _home


@pytest.mark.integration
@pytest.mark.slow
def test_augmentation_assets_and_report_in_card(zones_tmp: Zones) -> None:
    z = zones_tmp
    _home(z, n=32)
    resources = {"home": MedcurateHome(home=str(z.home))}
    few = {"config": {"gan_epochs": 2}}  # the preset's quality is not what this test is about
    result = dg.materialize(
        [gan_model, synthetic_samples, synthetic_train_only_and_not_memorized],
        resources=resources,
        run_config={"ops": {"gan_model": few, "synthetic_samples": few}},
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    mat = result.asset_materializations_for_node("synthetic_samples")[0]
    written = mat.metadata["written"].value
    assert isinstance(written, int) and written > 0

    run_release(z, ReleaseSettings("blobs"), release_store(z), "run-1")
    report = dg.materialize(
        [augmentation_report],
        resources=resources,
        run_config={"ops": {"augmentation_report": {"config": {"dataset": "blobs", "seeds": [0]}}}},
    )
    assert report.success
    md = report.asset_materializations_for_node("augmentation_report")[0].metadata
    assert md["synthetic_in_train"].value == written
    assert md["verdict"].value in ("helped", "hurt", "no measurable benefit")
    card = datasets.load("blobs").card()
    assert "## Augmentation" in card and str(md["statement"].value) in card
    assert "Synthetic samples: quality and privacy" in card
