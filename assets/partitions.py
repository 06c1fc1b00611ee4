"""Partitions: one dynamic partition per incoming batch, one per annotation round."""

from __future__ import annotations

import dagster as dg

batch_partitions = dg.DynamicPartitionsDefinition(name="batch")
round_partitions = dg.DynamicPartitionsDefinition(name="round")
