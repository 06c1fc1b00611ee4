"""Fan one batch's stage out into shards: Dagster dynamic outputs, one step per shard.

Under the single-machine profile a batch is one shard (the stage's own process pool still uses
every core); under the cluster profile ``MEDCURATE_SHARDS`` (set by ``medcurate profile cluster``
and ``make cluster-demo``) splits it so each Celery worker takes a shard. Outputs do not depend on
the number of shards: a shard writes its files and a part record, and one merge step writes the
batch's tables in input order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import dagster as dg

SHARDS_VAR = "MEDCURATE_SHARDS"


class ShardConfig(dg.Config):
    """How many shards a batch is cut into; 0: ``MEDCURATE_SHARDS`` from the environment (1 when
    unset)."""

    shards: int = 0


def shard_count(requested: int = 0, env: dict[str, str] | None = None) -> int:
    """The shards to cut: ``requested`` when positive, else ``MEDCURATE_SHARDS``, else 1."""
    if requested > 0:
        return requested
    raw = (os.environ if env is None else env).get(SHARDS_VAR, "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{SHARDS_VAR} must be a whole number >= 1, not {raw!r}") from exc
    if value < 1:
        raise ValueError(f"{SHARDS_VAR} must be a whole number >= 1, not {raw!r}")
    return value


def shard_outputs(n: int) -> Iterator[dg.DynamicOutput[tuple[int, int]]]:
    """One dynamic output per shard: the value ``(index, count)``, mapping key ``shard_<index>``."""
    for index in range(n):
        yield dg.DynamicOutput((index, n), mapping_key=f"shard_{index}")
