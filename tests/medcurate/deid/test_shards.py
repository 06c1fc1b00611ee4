"""One batch de-identified in shards (plan, shards in any order, merge) gives the bytes of one run.

The batch holds what crosses shards: two patients, a study whose instances fall in different
shards, two inputs with one SOP instance (the first in input order must win whichever shard
finishes first) and a refused ultrasound.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest

from medcurate.config import Zones
from medcurate.deid import (
    DeidResult,
    DeidShardError,
    deid_shard,
    merge_deid,
    plan_deid,
    run_deid,
)
from medcurate.ingest import claim_inbox, drop_into_inbox, run_ingest
from medcurate.perms import OWNER_DIR, OWNER_FILE
from tests.deid_helpers import ct_instance, save

SALT = b"shards-test-salt-0001"
BASE = "1.2.826.0.1.3680043.9.7777.1.1.1."
FILES = 9  # catalogued: 8 CT (one a second copy of an instance) + 1 refused ultrasound


def _batch(z: Zones, root: Path) -> str:
    """Nine files, in catalog (input) order f0..f8: f1 and f7 are one SOP instance with
    different bytes, f4 is an ultrasound showing a face (refused), f6 another patient."""
    for i in range(FILES):
        ds = ct_instance(sop_uid=f"{BASE}{i + 1}")
        if i == 7:  # the same instance as f1, other bytes: a DUPLICATE_INSTANCE in any shard
            ds = ct_instance(sop_uid=f"{BASE}2")
            ds.SeriesDescription = "AXIAL 5MM RESENT"
        if i == 4:
            ds.Modality = "US"
            ds.RecognizableVisualFeatures = "YES"
        if i == 6:
            ds = ct_instance(
                patient_id="ZQXPID0002",
                name="ZQXOTHER^ZQXPERSON",
                study_uid="1.2.826.0.1.3680043.9.7777.3.1",
                series_uid="1.2.826.0.1.3680043.9.7777.3.1.1",
                sop_uid="1.2.826.0.1.3680043.9.7777.3.1.1.1",
            )
        save(ds, root / f"ZQXSURNAME/f{i}.dcm")
    drop_into_inbox(root, z)
    batch = claim_inbox(z)
    assert batch is not None
    assert run_ingest(z, batch).catalogued == FILES
    return batch


def _snapshot(z: Zones, batch: str) -> dict[str, bytes]:
    """Every file the stage leaves: outputs, manifests, quarantine, crosswalk."""
    roots = (z.deid, z.deid_quarantine_batch(batch), z.crosswalks)
    return {
        p.relative_to(z.home).as_posix(): p.read_bytes()
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _wipe(z: Zones, batch: str) -> None:
    """Back to before the stage (the crosswalk merges with what is there: it must go too)."""
    shutil.rmtree(z.deid)
    shutil.rmtree(z.deid_quarantine_batch(batch), ignore_errors=True)
    z.crosswalk(batch).unlink(missing_ok=True)


def _sharded(z: Zones, batch: str, count: int, order: list[int] | None = None) -> DeidResult:
    for index in order if order is not None else reversed(range(count)):  # any finish order
        deid_shard(z, batch, SALT, index, count)
    return merge_deid(z, batch, count)


@pytest.fixture
def batch(tmp_path: Path, zones_tmp: Zones) -> str:
    return _batch(zones_tmp, tmp_path / "src")


def test_plan_cuts_contiguous_slices_in_input_order(zones_tmp: Zones, batch: str) -> None:
    plan = plan_deid(zones_tmp, batch)
    assert plan.received == FILES and [p.name for p in plan.files][:2] == ["f0.dcm", "f1.dcm"]
    for count in (1, 2, 3, 4, FILES, FILES + 3):
        spans = [plan.shard(i, count) for i in range(count)]
        assert [i for s in spans for i in s] == list(range(FILES))
        assert max(map(len, spans)) - min(map(len, spans)) <= 1
    assert sum(not plan.shard(i, FILES + 3) for i in range(FILES + 3)) == 3  # empty shards
    with pytest.raises(ValueError):
        plan.shard(3, 3)


@pytest.mark.parametrize("count", [1, 2, 3, FILES + 3])
def test_any_number_of_shards_gives_the_bytes_of_one_run(
    zones_tmp: Zones, batch: str, count: int
) -> None:
    one = run_deid(zones_tmp, batch, SALT)
    assert (one.written, dict(one.quarantined)) == (7, {"BURNED_IN": 1, "DUPLICATE_INSTANCE": 1})
    expected = _snapshot(zones_tmp, batch)
    _wipe(zones_tmp, batch)
    many = _sharded(zones_tmp, batch, count)
    assert _snapshot(zones_tmp, batch) == expected
    assert many == one
    assert not (zones_tmp.restricted / "work" / "deid" / batch).exists()  # parts removed


def test_the_first_input_wins_a_shared_instance_whichever_shard_ends_first(
    zones_tmp: Zones, batch: str
) -> None:
    """f1 (shard 0 of 3) and f7 (shard 2) are one instance: the written bytes are f1's even when
    shard 2 runs first, and f7 is refused, in one place only."""
    result = _sharded(zones_tmp, batch, 3, order=[2, 1, 0])
    reasons = pd.read_csv(zones_tmp.deid_reasons(batch))
    assert sorted(zip(reasons["source"], reasons["reason"], strict=True)) == [
        ("ZQXSURNAME/f4.dcm", "BURNED_IN"),
        ("ZQXSURNAME/f7.dcm", "DUPLICATE_INSTANCE"),
    ]
    manifest = pd.read_parquet(zones_tmp.deid_manifest(batch))
    assert len(manifest) == result.written == 7
    assert set(manifest["series_description"]) == {"AXIAL 5MM"}  # not f7's "RESENT"


def test_a_quarantined_file_stays_in_exactly_one_place(zones_tmp: Zones, batch: str) -> None:
    _sharded(zones_tmp, batch, 3)
    quarantined = sorted(
        p.relative_to(zones_tmp.deid_quarantine_batch(batch)).as_posix()
        for p in zones_tmp.deid_quarantine_batch(batch).rglob("*.dcm")
    )
    assert quarantined == ["files/ZQXSURNAME/f4.dcm", "files/ZQXSURNAME/f7.dcm"]
    # outputs only under final names: no staged copy left, no part record left
    left = [p.name for p in zones_tmp.deid.rglob("*") if p.is_file() and ".part-" in p.name]
    assert left == []
    assert len(list(zones_tmp.deid.rglob("*.dcm"))) == 7
    assert not any((zones_tmp.restricted / "work").rglob("*.json"))


def test_a_shard_run_again_after_its_worker_died_gives_the_same_bytes(
    zones_tmp: Zones, batch: str
) -> None:
    run_deid(zones_tmp, batch, SALT)
    expected = _snapshot(zones_tmp, batch)
    _wipe(zones_tmp, batch)
    plan = plan_deid(zones_tmp, batch)
    for index in range(3):
        deid_shard(zones_tmp, batch, SALT, index, 3)
    part = plan.part(1, 3)
    first = part.read_bytes()
    # what kill -9 in the middle of shard 1's retry leaves: a half-written output, no part
    staged = sorted(p for p in zones_tmp.deid.rglob(f"*.part-{batch}-*") if p.name.endswith("-3"))
    assert len(staged) == 1
    staged[0].write_bytes(staged[0].read_bytes()[:100])
    part.unlink()
    summary = deid_shard(zones_tmp, batch, SALT, 1, 3)
    assert (summary.index, summary.count, summary.files) == (1, 3, 3)
    assert part.read_bytes() == first
    merge_deid(zones_tmp, batch, 3)
    assert _snapshot(zones_tmp, batch) == expected


def test_a_merge_run_again_after_it_was_killed_half_way_gives_the_same_bytes(
    zones_tmp: Zones, batch: str
) -> None:
    run_deid(zones_tmp, batch, SALT)
    expected = _snapshot(zones_tmp, batch)
    _wipe(zones_tmp, batch)
    for index in range(2):
        deid_shard(zones_tmp, batch, SALT, index, 2)
    # the killed merge had claimed some outputs (renamed) and written no table yet
    suffix = f".part-{batch}-"
    for p in sorted(zones_tmp.deid.rglob(f"*{suffix}*"))[:3]:
        os.replace(p, p.with_name(p.name.split(suffix)[0]))
    merge_deid(zones_tmp, batch, 2)
    assert _snapshot(zones_tmp, batch) == expected


def test_a_missing_part_is_an_error_naming_the_batch_and_the_shard(
    zones_tmp: Zones, batch: str
) -> None:
    deid_shard(zones_tmp, batch, SALT, 0, 3)
    deid_shard(zones_tmp, batch, SALT, 2, 3)
    with pytest.raises(DeidShardError, match=rf"batch {batch}: shard 1 of 3 left no part"):
        merge_deid(zones_tmp, batch, 3)
    assert not zones_tmp.deid_manifest(batch).exists()
    deid_shard(zones_tmp, batch, SALT, 1, 3)  # the shard run again: the merge goes through
    assert merge_deid(zones_tmp, batch, 3).written == 7


def test_shards_with_different_salts_are_not_merged(zones_tmp: Zones, batch: str) -> None:
    deid_shard(zones_tmp, batch, SALT, 0, 2)
    deid_shard(zones_tmp, batch, SALT + b"-other", 1, 2)
    with pytest.raises(DeidShardError, match="different salts"):
        merge_deid(zones_tmp, batch, 2)
    assert not zones_tmp.deid_manifest(batch).exists()


def test_part_records_are_owner_only_whatever_the_umask(zones_tmp: Zones, batch: str) -> None:
    old = os.umask(0)
    try:
        deid_shard(zones_tmp, batch, SALT, 0, 2)
    finally:
        os.umask(old)
    plan = plan_deid(zones_tmp, batch)
    part = plan.part(0, 2)
    assert stat.S_IMODE(part.stat().st_mode) == OWNER_FILE
    for folder in (plan.work, plan.work.parent, plan.work.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == OWNER_DIR, folder
    assert [p.name for p in plan.work.iterdir()] == [part.name]  # no temporary left
    # the part holds original UIDs (it is restricted); the summary only counts
    assert BASE.encode() in part.read_bytes()
