"""Assets: labels back to the research PACS. Thin wrapper over :mod:`medcurate.pacs.seg`.

``label_segs`` turns every consensus mask into a DICOM Segmentation on the de-identified source
frames, verifies it (pseudonymous identity only, the de-identification verifier against the
originals) and, when the research PACS runs, stores it there with STOW-RS, so the labels open in
a standard viewer. Never the clinical PACS: that one holds identified data.
"""

import dagster as dg

from assets.resources import MedcurateHome, PacsResource
from assets.stage import checked, materialized
from medcurate.pacs.client import PacsError
from medcurate.pacs.retrieve import pull_changes
from medcurate.pacs.seg import run_label_segs
from medcurate.services.orthanc import CLINICAL, start_all, status, stop_all

# pull_changes: what pacs_sensor runs; the managed servers: what make demo starts and stops
__all__ = [
    "CLINICAL", "PacsError", "label_segs", "pull_changes", "start_all", "status", "stop_all",
]  # fmt: skip


@dg.asset(
    deps=[dg.AssetKey("consensus_labels")],
    group_name="labels",
    check_specs=[dg.AssetCheckSpec("segs_verified", asset="label_segs")],
)
def label_segs(
    context: dg.AssetExecutionContext, home: MedcurateHome, research_pacs: PacsResource
) -> dg.MaterializeResult:
    """Consensus masks as DICOM SEG (``labels/seg/``), stored in the research PACS when it runs;
    its (non-blocking) check fails when a SEG could not be built, verified or stored: that SEG
    stays out of the PACS, the release does not wait for it."""
    try:
        client = research_pacs.client(home)
    except PacsError as exc:
        raise dg.Failure(f"label_segs: research PACS: {exc}") from None
    result = run_label_segs(home.zones(), client.web if client is not None else None)
    stored = "stored in the research PACS" if client is not None else "research PACS not running"
    context.log.info(f"label_segs: {stored}")
    out = materialized(context, result, research_pacs=stored)
    return dg.MaterializeResult(
        metadata=out.metadata,
        check_results=[checked(result.problems, check_name="segs_verified")],
    )
