"""Scaling through the real cluster path: Celery workers running Dagster steps (issue 18).

bench/scale.py measures the stages with a process pool inside one process; this measures them the
way the cluster profile runs them. One cohort is generated once; then for each worker count k a
fresh MEDCURATE_HOME gets its own PostgreSQL, Redis and S3 endpoint
(:func:`medcurate.services.cluster.start`, ``MEDCURATE_SHARDS=k``) and k Celery workers, the same
files are dropped into its inbox and claimed as a batch, and job ``ingest_batch`` runs on it
exactly as ``make cluster-demo`` runs it (``dagster.execute_job`` of the reconstructable job, the
Celery executor sending each step to a worker). The code location reads the profile when it is
imported, once per process, so each k runs in a child process of this script
(``--one K --home H``) that prints one JSON line for the parent.

From Dagster's step stats of the run (STEP_START / STEP_SUCCESS of each step key) come: the
de-identification phase (first ``deid_instances.*`` step start to the end of its merge step),
the normalization phase likewise, files/s of each, the run's wall time, and Dagster + Celery
overhead (defined in :data:`OVERHEAD_DEFINITION`). Outputs must not depend on k: the sha256 of
every de-identified file and every NIfTI volume (the per-batch tables carry the batch id, so they
are left out) is compared across k. Then the measured per-file worker-seconds are projected to
100,000 studies (20 M files). Measured figures only; nothing about time is asserted.

Each de-identification step gets one process (``--step-procs 1``: no process pool inside the
step), so k workers are k processes and the curve is Celery's; normalization converts a shard's
series in threads, one per CPU of the worker (the stage's own choice).

    .venv/bin/python bench/cluster.py [--workers 1,2,4] [--patients 24] [--seed 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# run as a script, this folder comes first on sys.path and bench/quality.py would shadow the
# quality package the pipeline imports: look for packages from the repository root instead
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

REPO = Path(__file__).resolve().parents[1]
#: a fixed salt (same pseudonyms for every k); a benchmark value, not a secret
SALT = hashlib.sha256(b"medcurate bench/cluster.py: fixed salt, not a secret").hexdigest()
RESULT_PREFIX = "BENCH-CLUSTER "
DEID_GRAPH = "deid_instances."
NORMALIZE_GRAPH = "series_volumes."
OVERHEAD_DEFINITION = (
    "overhead = share of the run's wall time (run start to run end, Dagster's run stats) during "
    "which no step was executing on any worker (1 - union of all step [start, end] intervals / "
    "run wall): launch, planning, Celery queueing and result collection, event writes"
)

Step = tuple[str, float, float]  # (step key, start, end): epoch seconds


# --------------------------------------------------------------------------- figures (pure)


def phase_window(steps: Iterable[Step], prefix: str) -> tuple[float, float] | None:
    """(start, end) of the steps whose key starts with ``prefix`` (a graph asset's steps: its
    fan-out, its shards, its merge): the first start to the last end. None when none ran."""
    chosen = [(s, e) for k, s, e in steps if k.startswith(prefix)]
    if not chosen:
        return None
    return min(s for s, _ in chosen), max(e for _, e in chosen)


def covered(intervals: Iterable[tuple[float, float]]) -> float:
    """Length of the union of intervals (steps running side by side count once)."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def overhead_share(steps: Sequence[Step], run_wall: float) -> float:
    """See :data:`OVERHEAD_DEFINITION`; 0 for a run without wall time."""
    if run_wall <= 0:
        return 0.0
    busy = covered((s, e) for _, s, e in steps)
    return max(0.0, 1.0 - busy / run_wall)


def step_seconds(steps: Iterable[Step], prefix: str) -> float:
    """Worker-seconds of the steps under ``prefix`` (each step occupies one worker)."""
    return sum(e - s for k, s, e in steps if k.startswith(prefix))


def tree_digest(files: Mapping[str, str]) -> str:
    """sha256 over ``relative path -> sha256`` lines, sorted: one value for a set of outputs."""
    body = "".join(f"{rel}\t{sha}\n" for rel, sha in sorted(files.items()))
    return hashlib.sha256(body.encode()).hexdigest()


def as_steps(raw: Iterable[Sequence[Any]]) -> list[Step]:
    """Steps as they come back from the child's JSON (lists) as typed tuples."""
    return [(str(k), float(s), float(e)) for k, s, e in raw]


def speedup(base_wall: float, wall: float) -> float:
    return base_wall / wall if wall > 0 else 0.0


def curve_line(walls: Mapping[int, float], cpus: int, what: str = "run wall") -> str:
    """What the walls of one measure say about scaling on this machine, in one line."""
    ks = sorted(walls)
    base = walls[ks[0]]
    parts = [f"{k}: {speedup(base, walls[k]):.2f}x" for k in ks]
    within = [k for k in ks if k <= cpus]
    top = max(within) if within else ks[0]
    line = f"{what}, speed-up over {ks[0]} worker(s): {', '.join(parts)} on {cpus} cores"
    beyond = [k for k in ks if k > top]
    if beyond:
        gain = speedup(walls[top], walls[max(beyond)])
        shape = "slower" if gain < 0.95 else "flat" if gain < 1.15 else "still rising"
        line += (
            f"; {max(beyond)} workers vs {top}: {gain:.2f}x ({shape}: past {cpus} cores more "
            "workers only share them)"
        )
    return line


@dataclass(frozen=True)
class Projection:
    k: int
    deid_h: float
    normalize_h: float
    overhead: float

    @property
    def total_h(self) -> float:
        """Compute time stretched by the measured overhead share (wall = compute / (1 - o))."""
        return (self.deid_h + self.normalize_h) / max(1e-9, 1.0 - self.overhead)


def project(
    files_total: int, deid_s_per_file: float, norm_s_per_file: float, overhead: float, k: int
) -> Projection:
    """Hours for ``files_total`` files on k workers at the measured worker-seconds per file,
    assuming linear scaling (one worker per core, a batch cut into k shards)."""
    return Projection(
        k,
        files_total * deid_s_per_file / k / 3600,
        files_total * norm_s_per_file / k / 3600,
        overhead,
    )


# --------------------------------------------------------------------------- one k (child)


def _sha_tree(root: Path, suffix: str) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob(f"*{suffix}"))
        if p.is_file()
    }


def run_one(k: int, home: Path, studies: Path, step_procs: int) -> dict[str, Any]:
    """Services, k workers, one batch of ``studies`` through ``ingest_batch``; the figures."""
    home = home.resolve()
    os.environ["MEDCURATE_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    os.environ["MEDCURATE_DEID_SALT"] = SALT
    from medcurate.config import Zones
    from medcurate.ingest import claim_inbox, drop_into_inbox, read_catalog
    from medcurate.services import cluster, workers

    z = Zones(home).ensure()
    t0 = time.perf_counter()
    services = cluster.start(home, shards=k)  # writes the cluster profile into DAGSTER_HOME
    try:
        os.environ.update(services.env)
        try:
            running = workers.start(k, home, env={**services.env, "MEDCURATE_DEID_SALT": SALT})
            startup = time.perf_counter() - t0
            dropped = drop_into_inbox(studies, z)
            batch = claim_inbox(z)
            if batch is None:
                raise RuntimeError("nothing claimed from the inbox")
            result = _execute(batch, step_procs)
        finally:
            workers.stop(home)
    finally:
        cluster.stop(home)
    catalog = read_catalog(z, batch)
    deid_files = _sha_tree(z.deid, ".dcm")
    volumes = _sha_tree(z.volumes, ".nii.gz")
    return {
        **result,
        "k": k,
        "workers_started": len(running),
        "startup_s": startup,
        "dropped": dropped,
        "files": int((catalog["status"] == "ok").sum()),
        "deid_written": len(deid_files),
        "volumes": len(volumes),
        "deid_digest": tree_digest(deid_files),
        "volumes_digest": tree_digest(volumes),
    }


def _execute(batch: str, step_procs: int) -> dict[str, Any]:
    """``ingest_batch`` for the batch as pipelines/cluster_demo.py launches it (the code
    location is imported here, after the cluster profile was written)."""
    import dagster as dg

    from assets.partitions import batch_partitions

    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(batch_partitions.name, [batch])  # type: ignore[arg-type]
    recon = dg.build_reconstructable_job(
        "pipelines.definitions",
        "resolved_job",
        reconstructable_args=("ingest_batch",),
        reconstructor_working_directory=str(REPO),
    )
    run_config = {
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        "ops": {"deid_instances": {"ops": {"deid_shard": {"config": {"workers": step_procs}}}}},
    }
    t0 = time.perf_counter()
    with dg.execute_job(
        recon, instance=instance, run_config=run_config, tags={"dagster/partition": batch}
    ) as result:
        success, run_id = bool(result.success), result.run_id
    measured = time.perf_counter() - t0
    stats = instance.get_run_stats(run_id)
    steps = [
        (str(s.step_key), float(s.start_time), float(s.end_time))
        for s in instance.get_run_step_stats(run_id)
        if s.start_time is not None and s.end_time is not None
    ]
    run_wall = (
        float(stats.end_time - stats.start_time)
        if stats.start_time is not None and stats.end_time is not None
        else measured
    )
    return {
        "success": success,
        "run_wall": run_wall,
        "execute_wall": measured,
        "steps": steps,
    }


# --------------------------------------------------------------------------- parent


def _child(k: int, home: Path, studies: Path, step_procs: int, log: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--one", str(k), "--home", str(home),
        "--studies", str(studies), "--step-procs", str(step_procs),
    ]  # fmt: skip
    with open(log, "wb") as err:
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err, check=False)
    lines = [
        ln[len(RESULT_PREFIX) :]
        for ln in proc.stdout.decode(errors="replace").splitlines()
        if ln.startswith(RESULT_PREFIX)
    ]
    if proc.returncode != 0 or not lines:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"k={k}: child exited {proc.returncode}; its log ends:\n{tail}")
    return dict(json.loads(lines[-1]))


def _report(results: dict[int, dict[str, Any]], patients: int, step_procs: int) -> None:
    from bench.scale import FILES_100K_STUDIES, PROJECTED_K

    cpus = os.cpu_count() or 1
    ks = sorted(results)
    base = results[ks[0]]
    print(
        f"cohort: {patients} generated patients, {base['files']} files catalogued ok, "
        f"{base['deid_written']} de-identified, {base['volumes']} volumes; {cpus} cores; "
        f"deid steps with {step_procs} process(es) each"
    )
    print(OVERHEAD_DEFINITION)
    print(
        "workers shards files  deid files/s  norm files/s  norm series/s  run wall  speed-up"
        "  deid s  norm s  overhead  ok"
    )
    walls: dict[int, float] = {}
    deid_walls: dict[int, float] = {}
    norm_walls: dict[int, float] = {}
    for k in ks:
        r = results[k]
        steps = as_steps(r["steps"])
        d = phase_window(steps, DEID_GRAPH)
        n = phase_window(steps, NORMALIZE_GRAPH)
        d_s = d[1] - d[0] if d else 0.0
        n_s = n[1] - n[0] if n else 0.0
        walls[k], deid_walls[k], norm_walls[k] = r["run_wall"], d_s, n_s
        shards = sum(1 for key, _, _ in steps if key.startswith(DEID_GRAPH + "deid_shard["))
        print(
            f"{k:>7} {shards:>6} {r['files']:>5} {r['files'] / d_s if d_s else 0:>13.1f} "
            f"{r['deid_written'] / n_s if n_s else 0:>13.1f} "
            f"{r['volumes'] / n_s if n_s else 0:>14.2f} {r['run_wall']:>8.1f}s "
            f"{speedup(base['run_wall'], r['run_wall']):>8.2f}x {d_s:>7.1f} {n_s:>7.1f} "
            f"{overhead_share(steps, r['run_wall']):>8.0%}  "
            f"{'yes' if r['success'] else 'FAILED'}"
        )
    print(curve_line(walls, cpus))
    print(curve_line(deid_walls, cpus, "deid phase"))
    print(curve_line(norm_walls, cpus, "normalize phase"))
    print(
        f"reading: a normalize step converts its shard's series in threads, one per core of its "
        f"worker ({cpus} here), so one worker already uses every core in that phase and more "
        "workers cannot speed it up on one machine; deid steps run one process each, so the deid "
        "phase is where k workers on k cores show (its fan-out and merge steps are serial). "
        f"load average (1 min) {os.getloadavg()[0]:.2f}: other processes share the cores when "
        "it is above the workers' count"
    )
    same = (
        len({r["deid_digest"] for r in results.values()}) == 1
        and len({r["volumes_digest"] for r in results.values()}) == 1
    )
    print(
        f"same outputs for every k: {'yes' if same else 'no'} (sha256 of every de-identified "
        f"file and every NIfTI volume: deid {base['deid_digest'][:12]}, volumes "
        f"{base['volumes_digest'][:12]})"
    )
    # projection from the fewest workers' worker-seconds per file (steps of the two graphs)
    b_steps = as_steps(base["steps"])
    c_d = step_seconds(b_steps, DEID_GRAPH) / base["files"]
    c_n = step_seconds(b_steps, NORMALIZE_GRAPH) / base["files"]
    o = overhead_share(b_steps, base["run_wall"])
    print(
        f"projection, 100,000 studies = {FILES_100K_STUDIES / 1e6:.0f} M files, from the "
        f"{ks[0]}-worker step times: deid {c_d * 1000:.2f} + normalize {c_n * 1000:.2f} "
        f"worker-ms/file, {o:.0%} overhead; linear in k, no I/O floor (bench/scale.py prints "
        f"one); a worker here is one deid process, and up to {cpus} normalize threads"
    )
    print("       k   deid (h)   normalize (h)   with overhead (h)   days")
    for k in sorted({*PROJECTED_K, *ks}):
        p = project(FILES_100K_STUDIES, c_d, c_n, o, k)
        print(
            f"  {k:>6} {p.deid_h:>10.1f} {p.normalize_h:>15.1f} {p.total_h:>19.1f} "
            f"{p.total_h / 24:>6.1f}"
        )
    if not same:
        raise SystemExit("outputs differ between worker counts")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--workers", default="1,2,4", help="Celery worker counts, comma-separated")
    ap.add_argument("--patients", type=int, default=24, help="generated patients (24: ~2,500)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--step-procs", type=int, default=1, help="processes per deid step (0: auto)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary homes")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: one worker count
    ap.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--studies", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one is not None:
        out = run_one(args.one, args.home, args.studies, args.step_procs)
        print(RESULT_PREFIX + json.dumps(out), flush=True)
        return 0  # a failed run is reported by the parent (its figures are still printed)

    from medcurate.synth import generate_studies

    ks = [int(w) for w in str(args.workers).split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        studies = tmp / "studies"
        t0 = time.perf_counter()
        generate_studies(studies, patients=args.patients, seed=args.seed)
        print(f"generated {args.patients} patients in {time.perf_counter() - t0:.1f} s")
        results: dict[int, dict[str, Any]] = {}
        for k in ks:
            t0 = time.perf_counter()
            home = tmp / f"home-{k}"
            results[k] = _child(k, home, studies, args.step_procs, tmp / f"k{k}.log")
            r = results[k]
            print(
                f"k={k}: run {'ok' if r['success'] else 'FAILED'} in {r['run_wall']:.1f} s "
                f"(services + workers {r['startup_s']:.1f} s, child {time.perf_counter() - t0:.1f}"
                " s)",
                flush=True,
            )
            if not args.keep:
                shutil.rmtree(home, ignore_errors=True)
        _report(results, args.patients, args.step_procs)
        return 0 if all(r["success"] for r in results.values()) else 1
    finally:
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
