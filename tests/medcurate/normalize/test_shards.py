"""One batch in shards: any number of shards gives the bytes of one unsharded run, a shard can run
again, and the merge refuses missing or stale parts."""

from __future__ import annotations

import ast
import os
import pickle
import shutil
import stat
import subprocess
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from medcurate.config import VOLUMES_QUARANTINE, VOLUMES_TABLE, Zones
from medcurate.io import sha256_file
from medcurate.normalize import (
    MissingPartError,
    NormalizeResult,
    merge_normalize,
    normalize_shard,
    run_normalize,
)
from medcurate.normalize.assembly import LOAD_ERROR, MISSING_SLICES, UNREADABLE
from medcurate.normalize.phantom import PhantomSeries, write_projection, write_series
from medcurate.normalize.shards import (
    ShardMismatchError,
    part_path,
    plan_shards,
    series_keys,
    work_dir,
)

BATCH = "b1"
SERIES = 6  # series with a header: 3 volumes, 1 projection, 1 refused, 1 that fails to load


def _batch(home: Path) -> Zones:
    """A de-identified batch as de-identification leaves it: volumes, a projection, a series with
    a missing slice, one whose pixels cannot be decoded and a file that is not DICOM."""
    z = Zones(home).ensure()
    root = z.deid / "PAT1" / "STU1"
    paths = write_series(root / "SER0", PhantomSeries(name="a", slices=4))
    paths += write_series(root / "SER1", PhantomSeries(name="b", slices=5, modality="MR"))
    paths += write_series(root / "SER2", PhantomSeries(name="c", drop_slices=(5,)))
    paths += write_series(root / "SER3", PhantomSeries(name="d", slices=3, rows=16, cols=12))
    bad = write_series(root / "SER4", PhantomSeries(name="e", slices=3))
    ds = pydicom.dcmread(bad[1])
    ds.PixelData = ds.PixelData[:100]  # truncated: LOAD_ERROR
    ds.save_as(bad[1])
    paths += bad
    paths.append(write_projection(root / "SER5", rows=12, cols=10))
    junk = root / "notes.dcm"
    junk.write_bytes(b"not a dicom file")
    rows = []
    for p in paths:
        uid = pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID
        rows.append({"path": p.relative_to(z.deid).as_posix(), "series_uid": uid, "site": "S-01",
                     "sex": "M", "age_years": 50.0, "sha256": sha256_file(p)})  # fmt: skip
    junk_row = {"path": junk.relative_to(z.deid).as_posix(), "series_uid": None, "site": "S-01",
                "sex": None, "age_years": None, "sha256": sha256_file(junk)}  # fmt: skip
    rows.insert(3, junk_row)
    z.deid_manifests.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(z.deid_manifest(BATCH))
    return z


def _copy(z: Zones, home: Path) -> Zones:
    """The same de-identified batch in another home (nothing normalized yet)."""
    shutil.copytree(z.deid, home / "deid")
    return Zones(home).ensure()


def _outputs(z: Zones) -> dict[str, str]:
    """sha256 of every file under volumes/ (the NIfTI files and both tables)."""
    return {p.name: sha256_file(p) for p in sorted(z.volumes.iterdir()) if p.is_file()}


def _sharded(z: Zones, count: int, order: list[int]) -> tuple[NormalizeResult, list[int]]:
    """Every shard in ``order``, then the merge; and the files each shard took."""
    taken = {i: normalize_shard(z, BATCH, i, count).instances for i in order}
    return merge_normalize(z, BATCH, count), [taken[i] for i in range(count)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Zones, NormalizeResult]:
    """The batch normalized in one unsharded run (what every sharded run must equal)."""
    z = _batch(tmp_path_factory.mktemp("ref") / "home")
    return z, run_normalize(z, BATCH)


def test_the_batch_has_every_kind_of_outcome(reference: tuple[Zones, NormalizeResult]) -> None:
    r = reference[1]
    assert r.series_found == SERIES and r.written == 4  # a, b, d and the projection
    assert r.quarantined == {MISSING_SLICES: 1, LOAD_ERROR: 1, UNREADABLE: 1}
    assert r.problems == []


@pytest.mark.parametrize("count", [1, 2, 3, SERIES + 3])
def test_any_shard_count_gives_the_bytes_of_one_run(
    reference: tuple[Zones, NormalizeResult], tmp_path: Path, count: int
) -> None:
    ref, ref_result = reference
    z = _copy(ref, tmp_path / "home")
    # shards finish in any order: the merge lays them out by number, not by arrival
    result, taken = _sharded(z, count, order=list(reversed(range(count))))
    assert result == ref_result
    assert sum(taken) == ref_result.instances_total
    assert sum(1 for n in taken if n) == min(count, SERIES + 1)  # the work really was spread
    assert _outputs(z) == _outputs(ref)
    assert not work_dir(z, BATCH).exists()  # the parts are gone after the merge
    q = pd.read_parquet(z.volumes / VOLUMES_QUARANTINE)
    assert not q["sample_id"].duplicated().any()  # a refused series is recorded once
    assert sorted(q["reason"]) == sorted([MISSING_SLICES, LOAD_ERROR, UNREADABLE])


def test_a_second_sharded_run_skips_what_one_run_would_skip(
    reference: tuple[Zones, NormalizeResult], tmp_path: Path
) -> None:
    """Unchanged series are kept through the part records too (their rows as read back)."""
    one = _copy(reference[0], tmp_path / "one")
    run_normalize(one, BATCH)
    again = run_normalize(one, BATCH)
    assert (again.written, again.skipped_unchanged) == (0, 4)
    z = _copy(reference[0], tmp_path / "sharded")
    _sharded(z, 3, order=[0, 1, 2])
    result, _ = _sharded(z, 2, order=[1, 0])
    assert result == again
    assert _outputs(z) == _outputs(one)


def test_the_plan_cuts_between_series_only_and_covers_every_file(
    reference: tuple[Zones, NormalizeResult],
) -> None:
    z, _ = reference
    manifest = pd.read_parquet(z.deid_manifest(BATCH))
    keys = series_keys(manifest, z.deid)
    assert keys[3] == ""  # the file that is not DICOM: no series, quarantined on its own
    for count in (1, 2, 3, 20):
        plan = plan_shards(keys, count)
        assert sorted(p for shard in plan for p in shard) == list(range(len(keys)))
        owners = [{keys[p] for p in shard} for shard in plan]
        assert all(not a & b for i, a in enumerate(owners) for b in owners[i + 1 :])
        flat = [max(o) for o in owners if o]  # contiguous runs of the sorted series
        assert flat == sorted(flat)
        assert plan == plan_shards(keys, count)
    assert sum(1 for shard in plan_shards(keys, 20) if shard) == len(set(keys))


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_shard_run_again_after_its_worker_died_gives_the_same_bytes(
    reference: tuple[Zones, NormalizeResult], tmp_path: Path
) -> None:
    ref, ref_result = reference
    z = _copy(ref, tmp_path / "home")
    normalize_shard(z, BATCH, 1, 2)
    first = pickle.loads(part_path(z, BATCH, 1, 2).read_bytes())
    # shard 0 died half-way: volumes written, a temporary file left, no part record
    normalize_shard(z, BATCH, 0, 2)
    sid = pickle.loads(part_path(z, BATCH, 0, 2).read_bytes())["part"].rows[0]["sample_id"]
    part_path(z, BATCH, 0, 2).unlink()
    dead = _dead_pid()
    (z.volumes / f".{sid}.nii.gz.tmp-{dead}").write_bytes(b"half")
    # another batch's shard writing on another machine: its pid means nothing here
    foreign = z.volumes / f".{'f' * 16}.nii.gz.tmp-{dead}"
    foreign.write_bytes(b"in flight")
    normalize_shard(z, BATCH, 0, 2)  # the retry
    normalize_shard(z, BATCH, 1, 2)  # and a retry of a shard that had finished
    assert pickle.loads(part_path(z, BATCH, 1, 2).read_bytes()) == first
    assert merge_normalize(z, BATCH, 2) == ref_result
    assert foreign.exists()
    foreign.unlink()
    assert _outputs(z) == _outputs(ref)  # and the killed shard's temporary file is gone


def test_a_missing_part_stops_the_merge_and_names_the_shard(
    reference: tuple[Zones, NormalizeResult], tmp_path: Path
) -> None:
    z = _copy(reference[0], tmp_path / "home")
    normalize_shard(z, BATCH, 0, 3)
    normalize_shard(z, BATCH, 2, 3)
    with pytest.raises(MissingPartError, match=r"batch b1: no part record of shard 1 of 3"):
        merge_normalize(z, BATCH, 3)
    assert not (z.volumes / VOLUMES_TABLE).exists()  # nothing written
    normalize_shard(z, BATCH, 1, 3)
    assert merge_normalize(z, BATCH, 3) == reference[1]


def test_a_part_of_another_manifest_is_refused(
    reference: tuple[Zones, NormalizeResult], tmp_path: Path
) -> None:
    z = _copy(reference[0], tmp_path / "home")
    normalize_shard(z, BATCH, 0, 1)
    manifest = pd.read_parquet(z.deid_manifest(BATCH))
    manifest.iloc[:4].to_parquet(z.deid_manifest(BATCH))  # de-identified again, fewer files
    with pytest.raises(MissingPartError, match="shard 0 of 1 was made from another"):
        merge_normalize(z, BATCH, 1)


def test_a_manifest_that_disagrees_with_the_headers_is_refused(
    reference: tuple[Zones, NormalizeResult], tmp_path: Path
) -> None:
    z = _copy(reference[0], tmp_path / "home")
    manifest = pd.read_parquet(z.deid_manifest(BATCH))
    manifest.loc[0, "series_uid"] = "2.25.999"  # one file filed under another series
    manifest.to_parquet(z.deid_manifest(BATCH))
    with pytest.raises(ShardMismatchError, match="batch b1"):
        for index in range(3):
            normalize_shard(z, BATCH, index, 3)


def test_part_records_are_owner_only_whatever_the_umask(
    reference: tuple[Zones, NormalizeResult], tmp_path: Path
) -> None:
    z = _copy(reference[0], tmp_path / "home")
    old = os.umask(0)
    try:
        normalize_shard(z, BATCH, 1, 3)
    finally:
        os.umask(old)
    part = part_path(z, BATCH, 1, 3)
    assert stat.S_IMODE(part.stat().st_mode) == 0o600
    folder = part.parent
    while folder != z.home:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder.relative_to(z.home)
        folder = folder.parent
    assert part.is_relative_to(z.restricted)


def test_the_one_process_stage_does_not_import_the_shards() -> None:
    """``shards`` builds on ``run``, never the other way round (no import cycle), and the shard
    names stay importable from the package."""
    import medcurate.normalize as package
    from medcurate.normalize import run, shards

    tree = ast.parse(Path(run.__file__).read_text())
    imported = {
        f"{node.module}.{a.name}" if isinstance(node, ast.ImportFrom) else a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for a in node.names
    }
    assert not {name for name in imported if "shards" in name}
    assert package.normalize_shard is shards.normalize_shard
    assert package.merge_normalize is shards.merge_normalize
    assert package.ShardMismatchError is shards.ShardMismatchError is run.ShardMismatchError
