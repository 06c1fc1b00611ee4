"""The label_segs asset, invoked with a build_asset_context: SEGs written always, stored only when
the research PACS of the home runs (a real Orthanc started here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pydicom
import pytest

from assets.pacs import label_segs
from assets.resources import MedcurateHome, PacsResource
from medcurate.config import Zones
from medcurate.pacs.client import PacsClient
from medcurate.services import orthanc
from tests.medcurate.pacs.test_seg import (  # the one-patient chain home of the SEG tests
    _consensus_from_truth,
    _copy,
    _labels,
    _truth_rows,
    chain_home,  # noqa: F401 (a fixture)
)


def _materialize(z: Zones) -> dg.MaterializeResult:
    with dg.build_asset_context() as ctx:
        out = label_segs(
            ctx, home=MedcurateHome(home=str(z.home)), research_pacs=PacsResource(server="research")
        )
    assert isinstance(out, dg.MaterializeResult)
    return out


def _md(out: dg.MaterializeResult) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in (out.metadata or {}).items()}


def test_nothing_labelled_and_no_research_pacs(zones_tmp: Zones) -> None:
    out = _materialize(zones_tmp)
    md = _md(out)
    assert md["labelled"] == 0 and md["research_pacs"] == "research PACS not running"
    (check,) = out.check_results or []
    assert check.passed


@pytest.mark.slow
@pytest.mark.integration
def test_segs_go_to_the_running_research_pacs_only(
    chain_home: tuple[Zones, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    z, truth = _copy(chain_home, tmp_path)
    vols, labels, _ = _truth_rows(z, truth)
    vol = vols.to_dict("records")[0]
    t = labels[labels["series_uid"] == vol["series_uid"]].iloc[0]
    rel = _consensus_from_truth(z, truth, vol, str(t["mask_file"]))
    _labels(z, [{"sample_id": vol["sample_id"], "label": "abnormal", "mask_path": rel}])
    before = _md(_materialize(z))  # research PACS not running: written, not stored
    assert (before["written"], before["stored"]) == (1, 0)
    server = orthanc.start(
        z.home, orthanc.RESEARCH, port=orthanc.free_port(), dicom_port=orthanc.free_port(),
        env={}, stable_age=1,
    )  # fmt: skip
    try:
        out = _materialize(z)
        md = _md(out)
        assert (md["unchanged"], md["stored"]) == (1, 1)
        assert md["research_pacs"] == "stored in the research PACS"
        assert all(c.passed for c in out.check_results or [])
        seg = pydicom.dcmread(z.labels / "seg" / f"{vol['sample_id']}.dcm")
        found = PacsClient.from_server(server).web.search_for_series(
            search_filters={"SeriesInstanceUID": seg.SeriesInstanceUID}
        )
        assert len(found) == 1
        assert not orthanc.status(z.home, orthanc.CLINICAL).running  # never the clinical PACS
    finally:
        orthanc.stop(z.home, orthanc.RESEARCH, kill=True)
