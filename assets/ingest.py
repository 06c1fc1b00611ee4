"""``raw_instances``: one batch of received files, validated and catalogued (restricted zone).

Thin on purpose: the stage is :func:`medcurate.ingest.run_ingest`, its check
:func:`medcurate.ingest.check_ingest`. Nothing raised here carries a path: one bad entry is
quarantined, never fatal, and errors name files as ``batch <id>, file #<n>``.

The inbox sensor and the demo (``pipelines/``) import the inbox functions from here:
:func:`claim_inbox`, :func:`pending_batches` and :func:`drop_into_inbox`.
"""

import dagster as dg

from assets.partitions import batch_partitions
from assets.resources import MedcurateHome
from assets.stage import checked, materialized
from medcurate.ingest import (
    check_ingest,
    claim_inbox,
    drop_into_inbox,
    pending_batches,
    run_ingest,
)

__all__ = [
    "claim_inbox",
    "drop_into_inbox",
    "pending_batches",
    "raw_instances",
    "raw_instances_accounting",
]


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
    return materialized(context, run_ingest(home.zones(), context.partition_key))


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
    return checked(check_ingest(home.zones(), context.partition_key))
