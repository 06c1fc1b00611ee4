"""Sensors: the inbox watcher that turns files dropped together into one batch partition, and the
round watcher that notices a finished annotation round."""

import dagster as dg

from assets.ingest import raw_instances
from assets.partitions import batch_partitions, round_partitions
from assets.resources import LabelStudioResource, MedcurateHome
from medcurate.ingest import claim_inbox
from pipelines.jobs import consensus_job, round_export_job

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
    # the batch assets only: a job cannot mix the batch and round partitions
    target=dg.AssetSelection.assets(raw_instances).downstream()
    - dg.AssetSelection.keys("annotation_tasks").downstream(),
    default_status=dg.DefaultSensorStatus.RUNNING,
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


# --------------------------------------------------------------------------- annotation rounds


@dg.sensor(
    name="round_sensor",
    minimum_interval_seconds=60,
    jobs=[round_export_job, consensus_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Notices a finished annotation round (every task has its k annotations in Label Studio) "
        "and requests annotations[round]; once that is materialized, consensus_labels and what "
        "follows it."
    ),
)
def round_sensor(
    context: dg.SensorEvaluationContext, home: MedcurateHome, labelstudio: LabelStudioResource
) -> dg.SensorResult:
    from annotation.rounds import Api, read_round_info, round_progress
    from assets.annotation import annotations, consensus_labels

    z = home.zones()
    try:
        api = Api(*labelstudio.connection())
    except Exception as exc:  # a server that is down is a reason to wait, not an error
        return dg.SensorResult(skip_reason=f"Label Studio not reachable ({type(exc).__name__})")
    requests: list[dg.RunRequest] = []
    waiting = []
    for rk in sorted(context.instance.get_dynamic_partitions(str(round_partitions.name))):
        info = read_round_info(z.annotation, rk)
        if info is None:
            continue
        try:
            done, total = round_progress(api, info)
        except Exception as exc:  # Label Studio down or restarting: look again next tick
            return dg.SensorResult(skip_reason=f"Label Studio not reachable ({type(exc).__name__})")
        if total and done == total:
            # the run key changes when the round's project changes (e.g. tasks were added)
            requests.append(
                dg.RunRequest(
                    run_key=f"{rk}-project-{info['project_id']}-tasks-{total}",
                    partition_key=rk,
                    job_name=round_export_job.name,
                )
            )
        else:
            waiting.append(f"{rk}: {done}/{total}")
    latest = context.instance.get_latest_materialization_event(annotations.key)
    consensus = context.instance.get_latest_materialization_event(consensus_labels.key)
    if latest is not None and (consensus is None or consensus.timestamp < latest.timestamp):
        requests.append(
            dg.RunRequest(
                run_key=f"consensus-after-{latest.run_id}",
                job_name=consensus_job.name,
            )
        )
    if not requests:
        return dg.SensorResult(skip_reason="no finished round: " + ("; ".join(waiting) or "none"))
    return dg.SensorResult(run_requests=requests)
