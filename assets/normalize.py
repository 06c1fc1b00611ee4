"""``series_volumes``: one batch's de-identified series as normalized NIfTI volumes.

Thin on purpose: the logic is :func:`medcurate.normalize.normalize_batch`; this module reads the
batch's de-identification manifest, hands it over, and reports PHI-free counts as metadata.
"""

import dagster as dg
import pandas as pd

from assets.partitions import batch_partitions
from assets.resources import MedcurateHome
from medcurate.normalize import normalize_batch
from medcurate.normalize.config import CODE_VERSION
from medcurate.normalize.run import check_batch


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
    z = home.zones()
    manifest = pd.read_parquet(z.deid / "manifests" / f"{context.partition_key}.parquet")
    result = normalize_batch(
        manifest, z.deid, z.volumes, batch=context.partition_key, workers=config.workers
    )
    context.log.info(result.summary_line())
    return dg.MaterializeResult(metadata=result.metadata())


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
    problems = check_batch(home.zones().volumes, context.partition_key)
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": problems or ["none"]},
    )
