"""One batch de-identified across many processes or machines: plan, shards, merge.

Why a module of its own: on the Celery (or Kubernetes) executor one batch must spread over every
worker, so the stage of :mod:`medcurate.deid.run` is cut in three Dagster steps.
:func:`plan_deid` lays the batch out (its catalogued files in input order, contiguous slices);
:func:`deid_shard` de-identifies one slice with the one-process machinery, its outputs staged
beside their final names and its outcomes in a part record under
``restricted/work/deid/<batch>/`` (the records hold original UIDs, so they stay in
``restricted/``, owner-only; only counts travel between steps); :func:`merge_deid` claims,
quarantines and writes the tables exactly as :func:`~medcurate.deid.run.run_deid` does, in input
order.
Pseudonyms, new UIDs and date shifts derive from the salt alone, per file, so a shard needs
nothing from another; everything that does cross files (name collisions, the crosswalk, the
tables) is settled in the merge, and the bytes are the same for any number of shards.

This module builds on :mod:`medcurate.deid.run` (its workers, targets and ``_settle``); ``run``
imports it only inside :func:`~medcurate.deid.run.run_deid`, so there is no import cycle.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medcurate.config import Zones
from medcurate.deid.burnedin import PixelResult
from medcurate.deid.policy import Policy
from medcurate.deid.run import (
    DeidResult,
    _Outcome,
    _prepare,
    _relatives,
    _require_salt,
    _run,
    _settle,
    _Targets,
    _tmp_name,
    auto_workers,
)
from medcurate.ingest import OK, read_catalog
from medcurate.io import atomic_write_bytes, sha256_bytes
from medcurate.perms import private_dir


class DeidShardError(RuntimeError):
    """The shards of a batch cannot be merged: a part is missing or they disagree."""


@dataclass(frozen=True)
class DeidPlan:
    """One batch laid out: its catalogued files in input order and where everything goes. Each
    shard and the merge build it again from the catalog, so only ``(index, count)`` travels."""

    batch: str
    files: list[Path]
    rels: list[str]
    targets: _Targets
    work: Path
    """``restricted/work/deid/<batch>/``: the shards' part records (they hold original UIDs)."""

    @property
    def received(self) -> int:
        return len(self.files)

    @property
    def suffix(self) -> str:
        """A shard's outputs wait as ``<sop>.dcm.part-<batch>-<input index>`` beside their final
        name (unique per batch and input, whatever the shard count, and no ``.tmp``: another
        run's litter sweep leaves them to the merge)."""
        return f".part-{self.batch}-"

    def shard(self, index: int, count: int) -> range:
        """Input indices of shard ``index`` of ``count``: contiguous and in input order, sizes
        differing by one at most (empty when there are more shards than files)."""
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"deid: no shard {index} of {count}")
        n = self.received
        return range(n * index // count, n * (index + 1) // count)

    def part(self, index: int, count: int) -> Path:
        return self.work / f"part-{index}-of-{count}.json"


def plan_deid(z: Zones, batch: str) -> DeidPlan:
    """The plan of ``batch`` from its catalog (files with status ``ok``, in catalog order)."""
    catalog = read_catalog(z, batch)
    files = [Path(p) for p in catalog.loc[catalog["status"] == OK, "path"]]
    raw = z.raw_batch(batch)
    targets = _Targets(
        z.deid,
        z.restricted,
        z.deid_manifest(batch),
        z.deid_quarantine_batch(batch),
        z.crosswalk(batch),
    )
    rels = _relatives(files, raw if raw.is_dir() else None)
    return DeidPlan(batch, files, rels, targets, z.restricted / "work" / "deid" / batch)


@dataclass(frozen=True)
class ShardSummary:
    """What one shard did, in counts: the value Dagster passes from a shard to the merge."""

    index: int
    count: int
    files: int
    staged: int
    refused: int

    def summary_line(self) -> str:
        return (
            f"deid shard {self.index + 1} of {self.count}: {self.files} files, "
            f"{self.staged} staged, {self.refused} refused"
        )


def deid_shard(
    z: Zones, batch: str, salt: bytes, index: int, count: int, workers: int = 1
) -> ShardSummary:
    """Shard ``index`` of ``count``: its slice of the batch de-identified by a process pool,
    outputs staged beside their final names, outcomes in a part record under ``restricted/``.
    A re-run (its worker was killed) writes the same files again. ``workers=0``:
    :func:`auto_workers` for the slice."""
    _require_salt(salt)
    plan = plan_deid(z, batch)
    span = plan.shard(index, count)
    policy = Policy.from_env()
    _prepare(plan.targets)
    tasks = [(i, str(plan.files[i]), plan.rels[i]) for i in span]
    workers = workers if workers > 0 else auto_workers(len(tasks))
    outcomes = sorted(
        _run(tasks, salt, policy, z.deid, workers, plan.suffix), key=lambda o: o.index
    )
    body = {
        "batch": batch,
        "index": index,
        "count": count,
        "span": [span.start, span.stop],
        "received": plan.received,
        "profile": policy.options.profile_text(),
        "salt": _salt_tag(salt),
        "outcomes": [_outcome_record(o) for o in outcomes],
    }
    private_dir(plan.work, root=z.restricted)
    data = json.dumps(body, sort_keys=True).encode()
    atomic_write_bytes(plan.part(index, count), data, private=True)
    refused = sum(o.reason is not None for o in outcomes)
    return ShardSummary(index, count, len(tasks), len(tasks) - refused, refused)


def merge_deid(z: Zones, batch: str, count: int) -> DeidResult:
    """Join the ``count`` shards of ``batch``: final names claimed, quarantine, reasons,
    crosswalk, manifest and pixel record written in input order, exactly as one process would;
    then the part records are removed. A missing or foreign part is a :class:`DeidShardError`."""
    plan = plan_deid(z, batch)
    parts = [_read_part(plan, i, count) for i in range(count)]
    profiles = {p["profile"] for p in parts}
    if len(profiles) != 1 or len({p["salt"] for p in parts}) != 1:
        raise DeidShardError(
            f"deid: batch {batch}: the {count} shards ran with different salts or profiles "
            "(MEDCURATE_DEID_SALT / MEDCURATE_DEID_* differ between workers); run them again"
        )
    _prepare(plan.targets, litter=False)
    outcomes = [_outcome_from(d) for p in parts for d in p["outcomes"]]
    for o in outcomes:
        if o.reason is None:
            o.tmp = str(_tmp_name(z.deid, o.relpath, plan.suffix, o.index))
    result = DeidResult(profile=profiles.pop(), received=plan.received)
    _settle(result, outcomes, plan.files, plan.rels, plan.targets)
    shutil.rmtree(plan.work)
    return result


def _read_part(plan: DeidPlan, index: int, count: int) -> dict[str, Any]:
    span = plan.shard(index, count)
    try:
        part: dict[str, Any] = json.loads(plan.part(index, count).read_bytes())
    except FileNotFoundError:
        raise DeidShardError(
            f"deid: batch {plan.batch}: shard {index} of {count} left no part record (it did "
            "not finish); run that shard again, then the merge"
        ) from None
    if (part["batch"], part["span"], part["received"]) != (
        plan.batch,
        [span.start, span.stop],
        plan.received,
    ):
        raise DeidShardError(
            f"deid: batch {plan.batch}: the part record of shard {index} of {count} does not "
            "match the batch's catalog (it changed since); run the shards again"
        )
    return part


def _salt_tag(salt: bytes) -> str:
    """A one-way tag of the salt: the merge checks that every shard used the same one."""
    return sha256_bytes(b"medcurate-deid-shard-salt\0" + salt)[:16]


def _outcome_record(o: _Outcome) -> dict[str, Any]:
    """An outcome as JSON (no temporary path: the merge derives it from the plan)."""
    return {
        "index": o.index,
        "reason": o.reason,
        "message": o.message,
        "relpath": o.relpath,
        "row": o.row,
        "crosswalk": [list(c) for c in o.crosswalk],
        "verified": o.verified,
        "hits": o.hits,
        "tokens": o.tokens,
        "pixels": asdict(o.pixels) if o.pixels is not None else None,
    }


def _outcome_from(d: dict[str, Any]) -> _Outcome:
    px = d["pixels"]
    pixels = PixelResult(**{**px, "boxes": [tuple(b) for b in px["boxes"]]}) if px else None
    return _Outcome(
        index=d["index"],
        reason=d["reason"],
        message=d["message"],
        relpath=d["relpath"],
        row=d["row"],
        crosswalk=[(c[0], c[1], c[2]) for c in d["crosswalk"]],
        verified=d["verified"],
        hits=d["hits"],
        tokens=d["tokens"],
        pixels=pixels,
    )
