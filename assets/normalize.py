"""``series_volumes``: one batch's de-identified series as normalized NIfTI volumes.

Thin on purpose: the stage is :func:`medcurate.normalize.run_normalize` (it reads the batch's
de-identification manifest), its check :func:`medcurate.normalize.check_normalize`.
"""

import dagster as dg

from assets.partitions import batch_partitions
from assets.resources import MedcurateHome
from assets.stage import checked, materialized
from medcurate.normalize import check_normalize, run_normalize
from medcurate.normalize.config import CODE_VERSION


class NormalizeRunConfig(dg.Config):
    """Run-time knobs (transform settings live in medcurate/data/normalize.yaml)."""

    workers: int = 1


@dg.asset(
    partitions_def=batch_partitions,
    deps=[dg.AssetKey("deid_instances")],
    group_name="normalize",
    kinds={"nifti", "parquet"},
    code_version=CODE_VERSION,
    description=(
        "One NIfTI volume per assembled series of the batch (RAS, resampled, intensity-normalized"
        " per modality), upserted into volumes/volumes.parquet; series that cannot be assembled "
        "are in volumes/quarantine.parquet with a reason. Unchanged series are not recomputed."
    ),
)
def series_volumes(
    context: dg.AssetExecutionContext, home: MedcurateHome, config: NormalizeRunConfig
) -> dg.MaterializeResult:
    result = run_normalize(home.zones(), context.partition_key, workers=config.workers)
    return materialized(context, result)


@dg.asset_check(
    asset=series_volumes,
    blocking=True,
    partitions_def=batch_partitions,
    description="Every volume row of the batch points at a NIfTI file with the recorded sha256, "
    "and every instance of the batch is used or quarantined.",
)
def series_volumes_accounting(
    context: dg.AssetCheckExecutionContext, home: MedcurateHome
) -> dg.AssetCheckResult:
    return checked(check_normalize(home.zones(), context.partition_key))
