"""Normalization figures: conversion vs dcm2niix, full-chain cost, peak memory vs series count.

Run: ``.venv/bin/python bench/normalize.py [--series 20] [--size 64] [--slices 40]
[--counts 10,100]``. Prints measured numbers only; nothing is asserted. Series are generated
(medcurate phantom CT series), so the figures compare like with like on this machine; the
conversion ratio is dcm2niix's time over ours on the same files in the same run (the issue's
goal: at least 0.5). The full-chain runs say how many worker processes ``workers=2`` started
(:func:`medcurate.normalize.run.pool_size`: a pool only when each worker has enough voxels), and
what converting series side by side in threads gives over one at a time (same process, same
files; :func:`medcurate.normalize.run.thread_count`).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medcurate.io import write_nifti  # noqa: E402
from medcurate.normalize.assembly import VolumePlan, assemble, read_instance  # noqa: E402
from medcurate.normalize.phantom import PhantomSeries, write_series  # noqa: E402
from medcurate.normalize.transforms import load_plan  # noqa: E402


def make_series(root: Path, n: int, size: int, slices: int) -> int:
    voxels = 0
    for k in range(n):
        s = PhantomSeries(
            name=f"s{k:03d}", patient=f"P{k:03d}", rows=size, cols=size, slices=slices,
            pixel_spacing=(0.8, 0.8), slice_step=2.5, origin=(-25.0, -25.0, -40.0 + k),
        )  # fmt: skip
        write_series(root / f"s{k:03d}", s)
        voxels += size * size * slices
    return voxels


def bench_conversion(src: Path, out: Path) -> float:
    """medcurate's conversion step only: headers, assembly, PydicomReader load, NIfTI write."""
    t0 = time.perf_counter()
    infos = [i for i in (read_instance(p) for p in sorted(src.rglob("*.dcm"))) if i]
    for plan in assemble(infos):
        assert isinstance(plan, VolumePlan)
        loaded = load_plan(plan)
        write_nifti(out / f"{plan.sample_id}.nii.gz", loaded.array, loaded.affine)
    return time.perf_counter() - t0


def bench_dcm2niix(src: Path, out: Path) -> float:
    exe = Path(sys.executable).parent / "dcm2niix"
    cmd = [str(exe if exe.exists() else "dcm2niix"), "-z", "y", "-b", "n", "-f", "%j", "-o"]
    t0 = time.perf_counter()
    subprocess.run([*cmd, str(out), str(src)], check=True, capture_output=True)
    return time.perf_counter() - t0


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from medcurate.normalize import normalize_tree
import medcurate.normalize.run as run
if len(sys.argv) > 4:
    run.MAX_THREADS = int(sys.argv[4])
t0 = time.perf_counter()
r = normalize_tree(Path(sys.argv[1]), Path(sys.argv[2]), workers=int(sys.argv[3]))
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "written": r.written,
                  "self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "workers_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def run_chain(src: Path, out: Path, workers: int, threads: int | None = None) -> dict[str, float]:
    """``normalize_tree`` in a fresh process; ``threads`` caps the series converted side by side
    without a pool (None: the default, one per CPU up to ``MAX_THREADS``)."""
    extra = [] if threads is None else [str(threads)]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(src), str(out), str(workers), *extra],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _started(src: Path, workers: int) -> int:
    """How many processes ``normalize_tree(src, workers=workers)`` converts in (1: no pool)."""
    try:
        from medcurate.normalize.run import pool_size
    except ImportError:  # a version before pool_size: a pool whenever workers > 1
        return workers
    outcomes = assemble([i for i in map(read_instance, sorted(src.rglob("*.dcm"))) if i])
    return pool_size([o for o in outcomes if isinstance(o, VolumePlan)], workers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--counts", default="10,100", help="series counts of the memory runs")
    args = ap.parse_args()
    counts = [int(c) for c in str(args.counts).split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-normalize-"))
    try:
        src = tmp / "src"
        voxels = make_series(src, args.series, args.size, args.slices)
        print(f"series: {args.series} CT of {args.size}x{args.size}x{args.slices}, 0.8x0.8x2.5 mm")
        import monai  # noqa: F401  (import cost is not conversion cost)

        (tmp / "m").mkdir()
        (tmp / "d").mkdir()
        t_m = bench_conversion(src, tmp / "m")
        t_d = bench_dcm2niix(src, tmp / "d")
        n = args.series
        print(f"conversion medcurate: {n / t_m:8.1f} series/s {voxels / t_m / 1e6:8.2f} Mvox/s")
        print(f"conversion dcm2niix : {n / t_d:8.1f} series/s {voxels / t_d / 1e6:8.2f} Mvox/s")
        print(f"ratio medcurate/dcm2niix throughput: {t_d / t_m:.2f}")
        one = run_chain(src, tmp / "chain1", workers=1, threads=1)
        chain = run_chain(src, tmp / "chain", workers=1)
        per = (chain["seconds"]) / n
        print(
            f"full chain (RAS, target spacing, HU window, write), 1 worker, incl. imports: "
            f"{chain['seconds']:.1f} s, {per * 1000:.0f} ms/series; one series at a time: "
            f"{one['seconds']:.1f} s (series side by side in threads: "
            f"{one['seconds'] / chain['seconds']:.2f}x)"
        )
        seconds: dict[tuple[int, int], float] = {}
        for count in counts:
            src_n = tmp / f"src{count}"
            make_series(src_n, count, 48, 24)
            for workers in (1, 2):
                r = run_chain(src_n, tmp / f"out{count}-{workers}", workers=workers)
                seconds[count, workers] = r["seconds"]
                print(
                    f"peak memory, {count:3d} series (48x48x24), workers={workers} "
                    f"({_started(src_n, workers)} process(es) convert): parent "
                    f"{r['self_kib'] / 1024:6.0f} MiB, largest worker "
                    f"{r['workers_kib'] / 1024:6.0f} MiB, {r['seconds']:.1f} s"
                )
        lo, hi = min(counts), max(counts)
        for workers in (1, 2) if hi > lo else ():
            marginal = (seconds[hi, workers] - seconds[lo, workers]) / (hi - lo) * 1000
            print(f"marginal full-chain cost, workers={workers}: {marginal:.0f} ms/series")
        print(
            f"(this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
