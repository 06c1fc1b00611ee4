"""Sensors: the inbox watcher that turns files dropped together into one batch partition."""

import dagster as dg

from assets.ingest import raw_instances
from assets.partitions import batch_partitions
from assets.resources import MedcurateHome
from medcurate.ingest import claim_inbox

INBOX_MIN_AGE_S = 10.0  # a file untouched this long is taken as fully written


def batch_asset_keys(repository_def: dg.RepositoryDefinition | None) -> list[dg.AssetKey]:
    """``raw_instances`` and every batch-partitioned asset downstream of it.

    Round-partitioned and unpartitioned assets further down are left to their own triggers: a run
    for a batch partition key cannot materialize them.
    """
    if repository_def is None:
        return [raw_instances.key]
    graph = repository_def.asset_graph
    downstream = dg.AssetSelection.assets(raw_instances).downstream().resolve(graph)
    keys = []
    for key in downstream:
        pdef = graph.get(key).partitions_def
        if isinstance(pdef, dg.DynamicPartitionsDefinition) and pdef.name == batch_partitions.name:
            keys.append(key)
    return sorted(keys, key=lambda k: k.to_user_string())


@dg.sensor(
    name="inbox_sensor",
    minimum_interval_seconds=15,
    target=dg.AssetSelection.assets(raw_instances).downstream(),
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Claims settled files in $MEDCURATE_HOME/inbox as one batch and requests its run.",
)
def inbox_sensor(context: dg.SensorEvaluationContext, home: MedcurateHome) -> dg.SensorResult:
    batch = claim_inbox(home.zones(), min_age_s=INBOX_MIN_AGE_S)
    if batch is None:
        return dg.SensorResult(skip_reason="inbox empty (or files still settling)")
    context.log.info(f"claimed batch {batch}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=batch,
                partition_key=batch,
                asset_selection=batch_asset_keys(context.repository_def),
            )
        ],
        dynamic_partitions_requests=[batch_partitions.build_add_request([batch])],
    )
