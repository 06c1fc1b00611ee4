"""``series_volumes``: one batch's de-identified series as normalized NIfTI volumes.

A graph of three steps, so that under the Celery executor one large batch keeps every worker busy:
``normalize_shards`` cuts the batch (:mod:`assets.shards`), one ``normalize_shard`` step per
shard converts its series (:func:`medcurate.normalize.shards.normalize_shard`) and
``normalize_merge`` writes the tables once (:func:`medcurate.normalize.shards.merge_normalize`).
The outputs are the same bytes for any number of shards. Between the steps travel
``(index, count)`` pairs and counts only. Thin on purpose: the stage and its check
(:func:`medcurate.normalize.check_normalize`) live in medcurate/.
"""

from collections.abc import Iterator

import dagster as dg

from assets.partitions import batch_partitions
from assets.resources import MedcurateHome
from assets.shards import ShardConfig, shard_count, shard_outputs
from assets.stage import checked, to_metadata
from medcurate.normalize import ShardSummary, check_normalize, merge_normalize, normalize_shard
from medcurate.normalize.config import CODE_VERSION


class NormalizeRunConfig(dg.Config):
    """Run-time knobs of each shard (transform settings live in medcurate/data/normalize.yaml)."""

    workers: int = 1


@dg.op(ins={"deid_instances": dg.In(dg.Nothing)}, out=dg.DynamicOut(tuple))
def normalize_shards(config: ShardConfig) -> Iterator[dg.DynamicOutput[tuple[int, int]]]:
    """One output per shard of the batch (``config.shards``, else ``MEDCURATE_SHARDS``, else 1)."""
    yield from shard_outputs(shard_count(config.shards))


@dg.op(name="normalize_shard")
def normalize_shard_op(
    context: dg.OpExecutionContext,
    home: MedcurateHome,
    config: NormalizeRunConfig,
    shard: tuple[int, int],
) -> ShardSummary:
    """Convert one shard's series: NIfTI files and a part record under restricted/work/."""
    index, count = shard
    summary = normalize_shard(
        home.zones(), context.partition_key, index, count, workers=config.workers
    )
    context.log.info(summary.summary_line())
    return summary


@dg.op(out=dg.Out(dg.Nothing))
def normalize_merge(
    context: dg.OpExecutionContext, home: MedcurateHome, shards: list[ShardSummary]
) -> None:
    """Write the batch's tables from every shard's part, once; the stage's metadata."""
    counts = {s.count for s in shards}
    if len(counts) != 1:
        raise ValueError(f"shards disagree on their number: {sorted(counts)}")
    result = merge_normalize(home.zones(), context.partition_key, counts.pop())
    context.log.info(result.summary_line())
    context.add_output_metadata(to_metadata(result.metadata()))


@dg.graph_asset(
    partitions_def=batch_partitions,
    ins={"deid_instances": dg.AssetIn("deid_instances", dagster_type=dg.Nothing)},
    group_name="normalize",
    kinds={"nifti", "parquet"},
    code_version=CODE_VERSION,
    description=(
        "One NIfTI volume per assembled series of the batch (RAS, resampled, intensity-normalized"
        " per modality), upserted into volumes/volumes.parquet; series that cannot be assembled "
        "are in volumes/quarantine.parquet with a reason. Unchanged series are not recomputed. "
        "The batch runs in shards (ShardConfig / MEDCURATE_SHARDS), merged once."
    ),
)
def series_volumes(deid_instances: None) -> None:
    summaries = normalize_shards(deid_instances).map(normalize_shard_op)
    return normalize_merge(summaries.collect())


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
