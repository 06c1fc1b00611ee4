"""``deid_instances``: one batch de-identified to PS3.15 Annex E, checked by the verifier.

Thin on purpose: the stage lives in :mod:`medcurate.deid.run` (it picks the batch's catalogued
files and says where outputs, quarantine and crosswalk go) and its shards in
:mod:`medcurate.deid.shards`, its check in
:func:`medcurate.deid.deid_books`. The asset is a graph so one batch can use every worker of the
Celery executor: ``deid_shards`` fans the batch out (``ShardConfig``, ``MEDCURATE_SHARDS``), one
``deid_shard`` step per slice, and ``deid_merge`` writes the batch's tables in input order; the
bytes, and so the release version id, are the same for any number of shards. Only counts and
shard numbers pass between steps (through Dagster's IO manager): what names a patient stays in
``restricted/``. The blocking check fails the batch when the independent verifier found anything
or a catalogued file is unaccounted for.
"""

from collections.abc import Iterator

import dagster as dg

from assets.partitions import batch_partitions
from assets.resources import DeidSecrets, MedcurateHome
from assets.shards import ShardConfig, shard_count, shard_outputs
from assets.stage import checked, to_metadata
from medcurate.deid import ShardSummary, deid_books, merge_deid
from medcurate.deid import deid_shard as run_shard


class DeidRunConfig(dg.Config):
    """Run-time knobs of a shard (the profile's options come from the environment:
    Policy.from_env)."""

    #: worker processes (forked) per shard; 0: one per CPU for a slice big enough to repay them
    #: (outputs are the same for any number)
    workers: int = 0


@dg.op(ins={"raw_instances": dg.In(dg.Nothing)}, out=dg.DynamicOut())
def deid_shards(config: ShardConfig) -> Iterator[dg.DynamicOutput[tuple[int, int]]]:
    """One dynamic output ``(index, count)`` per shard of the batch."""
    yield from shard_outputs(shard_count(config.shards))


@dg.op
def deid_shard(
    context: dg.OpExecutionContext,
    home: MedcurateHome,
    secrets: DeidSecrets,
    config: DeidRunConfig,
    shard: tuple[int, int],
) -> ShardSummary:
    """One slice of the batch; a retry (its worker died) rewrites the same files."""
    salt = secrets.salt()  # raises before any file is touched when the salt is missing
    index, count = shard
    z = home.zones()
    summary = run_shard(z, context.partition_key, salt, index, count, workers=config.workers)
    context.log.info(summary.summary_line())
    return summary


@dg.op
def deid_merge(
    context: dg.OpExecutionContext, home: MedcurateHome, shards: list[ShardSummary]
) -> dg.Output[dict[str, int]]:
    """The batch's tables from every shard's part, with today's materialization metadata."""
    counts = {s.count for s in shards}
    if len(counts) != 1 or len(shards) not in counts:
        raise ValueError(f"deid: {len(shards)} shard steps disagree on their number {counts}")
    count = counts.pop()
    result = merge_deid(home.zones(), context.partition_key, count)
    context.log.info(result.summary_line())
    value = {"shards": count, "received": result.received, "written": result.written}
    return dg.Output(value, metadata=to_metadata(result.metadata()))


@dg.graph_asset(
    partitions_def=batch_partitions,
    ins={"raw_instances": dg.AssetIn(dg.AssetKey("raw_instances"), dagster_type=dg.Nothing)},
    group_name="deid",
    kinds={"dicom", "parquet"},
    description=(
        "The batch's catalogued instances de-identified (PS3.15 Basic Profile; Retain Patient "
        "Characteristics, Retain Longitudinal Modified Dates, Clean Descriptors, Retain Safe "
        "Private) under deid/<patient>/<study>/<series>/<sop>.dcm, with deid/manifests/<batch>"
        ".parquet. Burned-in risks and verifier hits are quarantined under restricted/."
    ),
)
def deid_instances(raw_instances):  # type: ignore[no-untyped-def]
    return deid_merge(deid_shards(raw_instances).map(deid_shard).collect())


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
    books = deid_books(home.zones(), context.partition_key)  # check_deid's problems, with counts
    return checked(books.problems, books.metadata())
