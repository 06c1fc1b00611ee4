"""Jobs the sensors launch and a person can launch from the UI.

A job covers one partitioning: batch assets, one round's export, or the dataset-wide assets.
"""

import dagster as dg

from assets.partitions import round_partitions

#: one round's export from Label Studio (what a finished round makes worth running first)
round_export_job = dg.define_asset_job(
    "round_export",
    selection=dg.AssetSelection.keys("annotations"),
    partitions_def=round_partitions,
    description="Export a finished round from Label Studio into per-annotator label maps.",
)

#: consensus over every round and what follows it: curated samples, splits, the release
consensus_job = dg.define_asset_job(
    "consensus_and_release",
    selection=dg.AssetSelection.keys("consensus_labels").downstream(),
    description="Consensus labels of all rounds, then curated samples, splits and a release.",
)
