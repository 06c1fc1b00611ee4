"""Scaling on one machine, and a projection to 100,000 studies (issue 18).

One generated cohort is claimed and ingested once; then, for each worker count, the batch is
de-identified into a fresh ``deid/`` zone (same salt) and normalized into a fresh ``volumes/``
zone. Printed: files/s and series/s (median of ``--repeats``), speed-up over the first worker
count, CPU seconds per file (getrusage of this process and its reaped children), and whether the
outputs are the same for every worker count (sha256 of the manifest and volume table contents,
which carry every output's own sha256). Then the measured per-file CPU costs are projected to
20 million files on k workers. Measured figures only; nothing about time is asserted.

De-identification's knob is ``run_deid(workers=N)``: N forked processes (``pool_map``).
Normalization's ``workers`` starts a process pool only when each worker gets 100 M voxels
(``pool_size``); below that the series run side by side in threads of this process, one per CPU
(``thread_count``). So here normalization's "workers" are those threads: ``thread_count`` is
replaced for the run so that N threads convert series even beyond the CPUs (the stage itself
stops at the CPU count), and ``run_normalize`` gets ``workers=1`` (no pool).

    .venv/bin/python bench/scale.py [--patients 12] [--repeats 2] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import resource
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import medcurate.normalize.run as normalize_run
from medcurate.config import VOLUMES_TABLE, Zones
from medcurate.deid.run import run_deid
from medcurate.ingest import claim_inbox, read_catalog, run_ingest
from medcurate.normalize.assembly import VolumePlan
from medcurate.normalize.run import outcomes_for, pool_size, run_normalize
from medcurate.synth import generate_studies

SALT = b"bench-salt-not-a-secret"
FILES_100K_STUDIES = 20_000_000  # issue 18: 100,000 studies, about 20 million files
PROJECTED_K = (1, 2, 8, 32, 128)
_TIME_COLUMN = re.compile(r"(time|timestamp|_at$|created|elapsed|seconds)", re.IGNORECASE)


def _cpu() -> float:
    """CPU seconds of this process (all its threads) and of its children that were reaped."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _table_digest(path: Path) -> str:
    """sha256 of a table's rows (columns that look like times dropped), sorted, as JSON."""
    df = pd.read_parquet(path)
    df = df[[c for c in df.columns if not _TIME_COLUMN.search(str(c))]]
    df = df.sort_values(list(df.columns[:1]), kind="stable").reset_index(drop=True)
    body = df.to_json(orient="split", double_precision=15, default_handler=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _tree_bytes(root: Path, suffix: str) -> int:
    return sum(p.stat().st_size for p in root.rglob(f"*{suffix}") if p.is_file())


@dataclass
class Run:
    wall: float
    cpu: float
    digest: str


def _median_run(runs: list[Run]) -> Run:
    wall = statistics.median(r.wall for r in runs)
    cpu = statistics.median(r.cpu for r in runs)
    digests = {r.digest for r in runs}
    return Run(wall, cpu, runs[0].digest if len(digests) == 1 else "DIFFERS-BETWEEN-REPEATS")


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    c0, t0 = _cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, _cpu() - c0


def _fresh_deid(z: Zones, batch: str) -> None:
    """Remove every output of a previous de-identification of the batch (same salt next)."""
    shutil.rmtree(z.deid, ignore_errors=True)
    shutil.rmtree(z.deid_quarantine_batch(batch), ignore_errors=True)
    z.crosswalk(batch).unlink(missing_ok=True)
    z.ensure()


def deid_once(z: Zones, batch: str, workers: int) -> Run:
    _fresh_deid(z, batch)
    wall, cpu = _timed(lambda: run_deid(z, batch, SALT, workers=workers))
    digest = _table_digest(z.deid_manifest(batch))
    reasons = z.deid_reasons(batch)
    if reasons.exists():
        digest = hashlib.sha256((digest + reasons.read_text()).encode()).hexdigest()
    return Run(wall, cpu, digest)


def normalize_once(z: Zones, batch: str, threads: int) -> Run:
    shutil.rmtree(z.volumes, ignore_errors=True)
    saved = normalize_run.thread_count
    normalize_run.thread_count = lambda n: max(1, min(threads, n))  # type: ignore[assignment]
    try:
        wall, cpu = _timed(lambda: run_normalize(z, batch, workers=1))
    finally:
        normalize_run.thread_count = saved  # type: ignore[assignment]
    return Run(wall, cpu, _table_digest(z.volumes / VOLUMES_TABLE))


def _row(name: str, w: int, r: Run, base: Run, files: int, series: int) -> str:
    return (
        f"  {name:<10} {w:>2} : {files / r.wall:7.1f} files/s {series / r.wall:6.2f} series/s  "
        f"{base.wall / r.wall:5.2f}x  {r.cpu / files * 1000:6.2f} ms CPU/file  "
        f"{r.cpu / r.wall:4.2f} cores busy  {r.wall:6.2f} s  out {r.digest[:12]}"
    )


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:9.1f} h"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=12, help="generated patients (12: 1,649 files)")
    ap.add_argument("--repeats", type=int, default=2, help="median of N for each measurement")
    ap.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    ap.add_argument(
        "--mean-mb", type=float, default=1.0,
        help="mean file size of the real cohort for the I/O floor (issue: tens of TB / 20 M)",
    )  # fmt: skip
    ap.add_argument(
        "--storage-mbps", type=float, default=1000.0,
        help="aggregate storage bandwidth the workers share (MB/s) for the I/O floor",
    )  # fmt: skip
    args = ap.parse_args()
    workers = [int(w) for w in str(args.workers).split(",")]
    warnings.simplefilter("ignore")
    import torch  # noqa: F401  (import cost is not normalization cost)

    import medcurate.normalize.transforms  # noqa: F401

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        z = Zones(tmp / "home").ensure()
        t0 = time.perf_counter()
        generate_studies(z.inbox, patients=args.patients, seed=3, truth=tmp / "truth")
        batch = claim_inbox(z)
        assert batch is not None
        run_ingest(z, batch, workers=1)
        setup = time.perf_counter() - t0
        catalog = read_catalog(z, batch)
        ok = catalog[catalog["status"] == "ok"]
        files = len(ok)
        raw_bytes = int(ok["size_bytes"].sum())
        for p in ok["path"]:  # warm the page cache: every run reads the same cached files
            Path(p).read_bytes()

        deid_once(z, batch, workers[0])  # warm-up (lazy imports, first-use caches): untimed
        deid: dict[int, Run] = {}
        for w in workers:
            deid[w] = _median_run([deid_once(z, batch, w) for _ in range(args.repeats)])
        manifest = pd.read_parquet(z.deid_manifest(batch))
        written, series = len(manifest), int(manifest["series_uid"].nunique())
        deid_bytes = _tree_bytes(z.deid, ".dcm")
        plans = [
            o
            for o in outcomes_for([z.deid / p for p in manifest["path"]])
            if isinstance(o, VolumePlan)
        ]
        voxels = sum(sum((i.rows or 0) * (i.cols or 0) for i in p.instances) for p in plans)

        normalize_once(z, batch, workers[0])  # warm-up, untimed
        norm: dict[int, Run] = {}
        for w in workers:
            norm[w] = _median_run([normalize_once(z, batch, w) for _ in range(args.repeats)])
        nifti_bytes = _tree_bytes(z.volumes, ".nii.gz")

        cpus = len(os.sched_getaffinity(0))
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
            f"({cpus} usable), python {platform.python_version()}, torch threads per series 1"
        )
        print(
            f"cohort: {args.patients} generated patients, {files} files catalogued ok "
            f"(mean {raw_bytes / files / 1024:.0f} KiB), {written} de-identified in {series} "
            f"series, {len(plans)} volumes planned ({voxels / 1e6:.0f} M source voxels); "
            f"generate + claim + ingest {setup:.1f} s"
        )
        print(f"median of {args.repeats} run(s); speed-up over {workers[0]} worker(s)")
        print("de-identification (run_deid, forked worker processes):")
        b = deid[workers[0]]
        for w in workers:
            print(_row("deid", w, deid[w], b, files, series))
        print(
            "normalization (run_normalize, series in N threads of one process; "
            f"the stage's process pool would start {pool_size(plans, max(workers))} "
            f"process(es) for workers={max(workers)}: it needs 100 M voxels per worker):"
        )
        b = norm[workers[0]]
        for w in workers:
            print(_row("normalize", w, norm[w], b, written, series))
        same_d = len({r.digest for r in deid.values()}) == 1
        same_n = len({r.digest for r in norm.values()}) == 1
        print(
            f"outputs identical across worker counts: deid manifest + reasons "
            f"{'yes' if same_d else 'NO'}, volumes table (with each NIfTI's sha256) "
            f"{'yes' if same_n else 'NO'}"
        )
        top = max((w for w in workers if w <= cpus), default=workers[0])
        over = [w for w in workers if w > cpus]
        line = (
            f"scaling: at {top} worker(s) ({cpus} cores) deid runs "
            f"{deid[workers[0]].wall / deid[top].wall:.2f}x and normalize "
            f"{norm[workers[0]].wall / norm[top].wall:.2f}x as fast as with {workers[0]}"
        )
        if over:
            w = max(over)
            line += (
                f"; {w} workers on {cpus} cores: deid {deid[top].wall / deid[w].wall:.2f}x, "
                f"normalize {norm[top].wall / norm[w].wall:.2f}x of the {top}-worker rate "
                f"(past the {cpus} cores a gain can only be a larger share of them against "
                "other processes)"
            )
        print(line)

        # -- projection --------------------------------------------------------------------------
        c_deid = deid[workers[0]].cpu / files  # per-file CPU at the fewest workers
        c_norm = norm[workers[0]].cpu / written
        c_both = c_deid + c_norm
        mean_mb_here = raw_bytes / files / 1e6
        # bytes moved per source MB: deid reads the file and writes it; normalize reads the
        # de-identified file and writes its share of a NIfTI (ratios measured here)
        d_ratio, n_ratio = deid_bytes / raw_bytes, nifti_bytes / raw_bytes
        moved_per_mb = 1 + 2 * d_ratio + n_ratio
        io_floor = FILES_100K_STUDIES * args.mean_mb * moved_per_mb / args.storage_mbps
        print(
            f"projection, 100,000 studies = {FILES_100K_STUDIES / 1e6:.0f} M files, from the "
            f"{workers[0]}-worker CPU costs: deid {c_deid * 1000:.2f} + normalize "
            f"{c_norm * 1000:.2f} = {c_both * 1000:.2f} ms CPU/file"
        )
        print(
            "assumes: CPU cost per file as measured here (these files are "
            f"{mean_mb_here * 1000:.0f} kB; parse, encode, verify and resample grow with bytes, "
            f"so x{args.mean_mb / mean_mb_here:.0f} CPU for {args.mean_mb:g} MB real files is "
            "the pessimistic end), linear scaling in k (one worker per core, shards of a batch "
            "as in issue 18),"
        )
        print(
            f"         and an I/O floor: {args.mean_mb:g} MB/file x {moved_per_mb:.2f} bytes "
            f"moved per source byte (read 1, deid write {d_ratio:.2f}, read {d_ratio:.2f}, "
            f"NIfTI write {n_ratio:.2f}, ratios measured here) over {args.storage_mbps:g} MB/s "
            f"of shared storage = {io_floor / 3600:.1f} h whatever k"
        )
        print("       k  deid (CPU)  normalize (CPU)  both (CPU)  max(both, I/O floor)")
        for k in PROJECTED_K:
            t_d = FILES_100K_STUDIES * c_deid / k
            t_n = FILES_100K_STUDIES * c_norm / k
            t_b = t_d + t_n
            limit = "I/O" if io_floor > t_b else "CPU"
            bound = max(t_b, io_floor)
            print(
                f"  {k:>6} {_hours(t_d)} {_hours(t_n)}     {_hours(t_b)} {_hours(bound)}"
                f" = {bound / 86400:5.1f} d ({limit})"
            )
        print(
            f"load average (1 min): {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after "
            f"(other processes share the {cpus} cores when it is above ~0.5)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
