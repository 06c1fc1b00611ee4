"""Jobs the sensors launch, a person launches from the UI and `make demo` runs.

A job covers one partitioning (a run cannot mix them): one batch's ingest, one round's cut, one
round's export, or the dataset-wide assets. Every run therefore shows a name in the UI's run list.
"""

import dagster as dg

from assets.deploy import active_profile
from assets.partitions import batch_partitions, round_partitions
from pipelines.cluster import retry_policy_for_profile

#: the deployment profile the code location was loaded under (DAGSTER_HOME's dagster.yaml)
PROFILE = active_profile()
#: steps retried under the cluster profile (a worker died); none locally
RETRY_POLICY = retry_policy_for_profile(PROFILE)

#: one batch from the inbox to normalized volumes (what the inbox sensor requests)
ingest_batch_job = dg.define_asset_job(
    "ingest_batch",
    selection=dg.AssetSelection.keys("raw_instances", "deid_instances", "series_volumes"),
    partitions_def=batch_partitions,
    op_retry_policy=RETRY_POLICY,
    description="Validate, de-identify and normalize one batch of DICOM files into volumes.",
)

#: one round's pre-annotation model and its Label Studio project with tasks
annotation_round_job = dg.define_asset_job(
    "annotation_round",
    selection=dg.AssetSelection.keys("annotation_model", "annotation_tasks"),
    partitions_def=round_partitions,
    op_retry_policy=RETRY_POLICY,
    description="Cut an annotation round: pre-annotation model, rendered slices, Label Studio "
    "project and tasks (config: ops.annotation_tasks.config.n_samples).",
)

#: one round's export from Label Studio (what a finished round makes worth running first)
round_export_job = dg.define_asset_job(
    "round_export",
    selection=dg.AssetSelection.keys("annotations"),
    partitions_def=round_partitions,
    op_retry_policy=RETRY_POLICY,
    description="Export a finished round from Label Studio into per-annotator label maps.",
)

#: consensus of every round only (the next round's model trains on it)
consensus_only_job = dg.define_asset_job(
    "consensus",
    selection=dg.AssetSelection.keys("consensus_labels"),
    op_retry_policy=RETRY_POLICY,
    description="Consensus labels of all rounds, without a release (before the next round).",
)

#: consensus over every round and what follows it: curated samples, splits, the release
consensus_job = dg.define_asset_job(
    "consensus_and_release",
    selection=dg.AssetSelection.keys("consensus_labels").downstream(),
    op_retry_policy=RETRY_POLICY,
    description="Consensus labels of all rounds, then curated samples, splits and a release.",
)

ALL_JOBS = [
    ingest_batch_job,
    annotation_round_job,
    round_export_job,
    consensus_only_job,
    consensus_job,
]
