"""``raw_instances``: one batch of received files, validated and catalogued (restricted zone).

Thin on purpose: the logic is :func:`medcurate.ingest.ingest_batch`; this module only wires it to
a batch partition and reports PHI-free counts as metadata. Nothing raised here carries a path: one
bad entry is quarantined, never fatal, and errors name files as ``batch <id>, file #<n>``.
"""

import dagster as dg

from assets.partitions import batch_partitions
from assets.resources import MedcurateHome
from medcurate.ingest import check_accounting, ingest_batch


@dg.asset(
    partitions_def=batch_partitions,
    group_name="ingest",
    kinds={"dicom", "parquet"},
    description=(
        "Files of one inbox batch, validated: decodable images catalogued in "
        "restricted/catalog/<batch>.parquet, failures quarantined with a reason, repeats set aside "
        "as duplicates. Every inbox entry is received (symlinks, dot-files, FIFOs, unreadable "
        "files and folders are quarantined as such): received == catalogued + quarantined + "
        "duplicates."
    ),
)
def raw_instances(context: dg.AssetExecutionContext, home: MedcurateHome) -> dg.MaterializeResult:
    result = ingest_batch(context.partition_key, home.zones())
    context.log.info(result.summary_line())
    return dg.MaterializeResult(metadata=result.metadata())


@dg.asset_check(
    asset=raw_instances,
    blocking=True,
    partitions_def=batch_partitions,
    description="The books add up: every received file is catalogued, quarantined or a duplicate, "
    "and sits where the catalog says.",
)
def raw_instances_accounting(
    context: dg.AssetCheckExecutionContext, home: MedcurateHome
) -> dg.AssetCheckResult:
    problems = check_accounting(home.zones(), context.partition_key)
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": problems or ["none"]},
    )
