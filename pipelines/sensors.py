"""Sensors: the inbox watcher that turns files dropped together into one batch partition, the PACS
watcher that pulls studies that became stable in the clinical PACS into one, and the round watcher
that notices a finished annotation round."""

import dagster as dg

from assets.annotation import (
    RoundProgress,
    annotations,
    consensus_labels,
    open_rounds,
    progress_summary,
)
from assets.ingest import claim_inbox, pending_batches
from assets.pacs import PacsError, pull_changes
from assets.partitions import batch_partitions, round_partitions
from assets.resources import LabelStudioResource, MedcurateHome, PacsResource
from pipelines.jobs import consensus_job, ingest_batch_job, round_export_job

INBOX_MIN_AGE_S = 10.0  # a file untouched this long is taken as fully written
MAX_RESUMES = 3  # runs of a batch that may fail before the sensor leaves it to a person
_FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dg.sensor(
    name="inbox_sensor",
    minimum_interval_seconds=15,
    jobs=[ingest_batch_job],  # the batch assets only: a job cannot mix partitionings
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Claims settled files in $MEDCURATE_HOME/inbox as one batch and requests its run; "
    "also requests runs for claimed batches never fully ingested (a run killed after its claim).",
)
def inbox_sensor(context: dg.SensorEvaluationContext, home: MedcurateHome) -> dg.SensorResult:
    z = home.zones()
    batch = claim_inbox(z, min_age_s=INBOX_MIN_AGE_S)
    if batch is not None:
        context.log.info(f"claimed batch {batch}")
    requests = []
    for pending in pending_batches(z):  # the new batch, and any a killed run left behind
        run_key = _run_key(context.instance, pending)
        if run_key is not None:
            requests.append(
                dg.RunRequest(
                    run_key=run_key, partition_key=pending, job_name=ingest_batch_job.name
                )
            )
    if not requests:
        return dg.SensorResult(skip_reason="inbox empty (or files still settling)")
    name = str(batch_partitions.name)
    keys = [str(r.partition_key) for r in requests]
    new = [k for k in keys if not context.instance.has_dynamic_partition(name, k)]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[batch_partitions.build_add_request(new)] if new else [],
    )


def _run_key(instance: dg.DagsterInstance, batch: str) -> str | None:
    """The run key for a pending batch, or None while a run of it is in flight (or after
    ``MAX_RESUMES`` failed runs). A run killed mid-ingest fails; the next key resumes it, and
    keys already used are skipped by Dagster, so one batch never gets two runs for one key."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": batch}))
    if any(r.status not in _FINISHED for r in runs):
        return None
    failed = sum(r.status != dg.DagsterRunStatus.SUCCESS for r in runs)
    if failed > MAX_RESUMES:
        return None
    return batch if failed == 0 else f"{batch}-resume-{failed}"


@dg.sensor(
    name="pacs_sensor",
    minimum_interval_seconds=30,
    jobs=[ingest_batch_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Pulls the studies that became stable in the clinical PACS since its cursor "
    "(Orthanc's change feed, StableStudy) over WADO-RS into one batch and requests its run; a "
    "study that fails stays before the cursor and is tried again at the next tick.",
)
def pacs_sensor(
    context: dg.SensorEvaluationContext, home: MedcurateHome, pacs: PacsResource
) -> dg.SensorResult:
    z = home.zones()
    try:
        client = pacs.client(home)
        if client is None:
            return dg.SensorResult(skip_reason="the clinical PACS is not running")
        result = pull_changes(z, client)
    except PacsError as exc:  # names no study by its UID; the cursor did not move
        return dg.SensorResult(skip_reason=f"PACS: {exc} (asked again at the next tick)")
    for problem in result.problems:
        context.log.warning(problem)
    if result.batch is None:
        failed = f"; failed: {', '.join(result.failed)}" if result.failed else ""
        return dg.SensorResult(skip_reason=f"no new stable study{failed}")
    context.log.info(result.summary_line())
    run_key = _run_key(context.instance, result.batch)
    requests = [] if run_key is None else [
        dg.RunRequest(run_key=run_key, partition_key=result.batch, job_name=ingest_batch_job.name)
    ]  # fmt: skip
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[batch_partitions.build_add_request([result.batch])],
    )


# --------------------------------------------------------------------------- annotation rounds


@dg.sensor(
    name="round_sensor",
    minimum_interval_seconds=60,
    jobs=[round_export_job, consensus_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Notices a finished annotation round (every task has its k annotations in Label Studio) "
        "and requests its export (round_export), unless that state of the round was exported "
        "already; once an export is newer than the consensus, consensus_and_release. Its skip "
        "reason shows each round's progress."
    ),
)
def round_sensor(
    context: dg.SensorEvaluationContext, home: MedcurateHome, labelstudio: LabelStudioResource
) -> dg.SensorResult:
    rounds = context.instance.get_dynamic_partitions(str(round_partitions.name))
    progress = open_rounds(home, labelstudio, rounds)
    if isinstance(progress, str):
        return dg.SensorResult(skip_reason=f"{progress} (asked again at the next tick)")
    exported = {p.round for p in progress if p.finished and _exported(context.instance, p)}
    requests = [
        dg.RunRequest(run_key=p.run_key, partition_key=p.round, job_name=round_export_job.name)
        for p in progress
        if p.finished and p.round not in exported
    ]
    latest = context.instance.get_latest_materialization_event(annotations.key)
    consensus = context.instance.get_latest_materialization_event(consensus_labels.key)
    if latest is not None and (consensus is None or consensus.timestamp < latest.timestamp):
        run_key = f"consensus-after-{latest.run_id}"
        requests.append(dg.RunRequest(run_key=run_key, job_name=consensus_job.name))
    if requests:
        return dg.SensorResult(run_requests=requests)
    return dg.SensorResult(skip_reason=progress_summary(rounds, progress, exported))


def _exported(instance: dg.DagsterInstance, p: RoundProgress) -> bool:
    """True when the round's newest export saw this state of the round: the same project and
    task count (metadata ``round_key``; exports made before it was recorded: the same ``tasks``)
    with every task complete. Asking again would export the same annotations again."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=annotations.key, asset_partitions=[p.round]), limit=1
    ).records
    if not records:
        return False
    mat = records[0].asset_materialization
    if mat is None:
        return False
    md = {k: v.value for k, v in mat.metadata.items()}
    same = md["round_key"] == p.run_key if "round_key" in md else md.get("tasks") == p.total
    return bool(same) and md.get("tasks_complete") == md.get("tasks")
