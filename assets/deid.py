"""``deid_instances``: one batch de-identified to PS3.15 Annex E, checked by the verifier.

Thin on purpose: the logic is :func:`medcurate.deid.deidentify_files`; this module picks the
batch's catalogued files, says where outputs, quarantine and crosswalk go, and reports PHI-free
counts. The blocking check fails the batch when the independent verifier found anything.
"""

import dagster as dg

from assets.partitions import batch_partitions
from assets.resources import DeidSecrets, MedcurateHome
from medcurate.config import Zones


def _manifest_path(z: Zones, batch: str):  # type: ignore[no-untyped-def]
    return z.deid / "manifests" / f"{batch}.parquet"


@dg.asset(
    partitions_def=batch_partitions,
    deps=[dg.AssetKey("raw_instances")],
    group_name="deid",
    kinds={"dicom", "parquet"},
    description=(
        "The batch's catalogued instances de-identified (PS3.15 Basic Profile; Retain Patient "
        "Characteristics, Retain Longitudinal Modified Dates, Clean Descriptors, Retain Safe "
        "Private) under deid/<patient>/<study>/<series>/<sop>.dcm, with deid/manifests/<batch>"
        ".parquet. Burned-in risks and verifier hits are quarantined under restricted/."
    ),
)
def deid_instances(
    context: dg.AssetExecutionContext, home: MedcurateHome, secrets: DeidSecrets
) -> dg.MaterializeResult:
    from pathlib import Path

    from medcurate.deid import deidentify_files
    from medcurate.ingest import read_catalog

    batch = context.partition_key
    z = home.zones()
    salt = secrets.salt()  # raises before any file is touched when the salt is missing
    catalog = read_catalog(z, batch)
    files = [Path(p) for p in catalog.loc[catalog["status"] == "ok", "path"]]
    result = deidentify_files(
        files,
        z.deid,
        z.restricted,
        salt,
        manifest_path=_manifest_path(z, batch),
        root=z.raw / batch if (z.raw / batch).is_dir() else None,
        quarantine_dir=z.quarantine / "deid" / batch,
        crosswalk_path=z.restricted / "crosswalk" / f"{batch}.csv",
    )
    context.log.info(result.summary_line())
    return dg.MaterializeResult(metadata=result.metadata())


@dg.asset_check(
    asset=deid_instances,
    blocking=True,
    partitions_def=batch_partitions,
    description="The independent verifier found no removed value in any output's bytes or path, "
    "and every catalogued file is either written or quarantined with a reason.",
)
def deid_instances_verified(
    context: dg.AssetCheckExecutionContext, home: MedcurateHome
) -> dg.AssetCheckResult:
    import csv

    from medcurate.deid import read_deid_manifest
    from medcurate.ingest import read_catalog

    batch = context.partition_key
    z = home.zones()
    reasons_csv = z.quarantine / "deid" / batch / "reasons.csv"
    reasons: list[str] = []
    if reasons_csv.exists():
        with open(reasons_csv, newline="", encoding="utf-8") as fh:
            reasons = [r["reason"] for r in csv.DictReader(fh)]
    hits = reasons.count("verifier_hit")
    written = len(read_deid_manifest(z.deid, batch))
    catalog = read_catalog(z, batch)
    expected = int((catalog["status"] == "ok").sum())
    balanced = written + len(reasons) == expected
    return dg.AssetCheckResult(
        passed=hits == 0 and balanced,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "verifier_hit_files": hits,
            "written": written,
            "quarantined": len(reasons),
            "catalogued_ok": expected,
            "balanced": balanced,
        },
    )
