"""Partitions: one dynamic partition per incoming batch, one per annotation round."""

from __future__ import annotations

import warnings

import dagster as dg

# Our blocking checks carry their asset's partitions (else a check loads every partition): that
# is a Dagster preview feature, chosen knowingly, so its warning is not repeated at every import.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")

batch_partitions = dg.DynamicPartitionsDefinition(name="batch")
round_partitions = dg.DynamicPartitionsDefinition(name="round")
