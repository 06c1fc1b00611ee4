"""The whole chain through Dagster for N patients, then a second batch of 10% more to a new release.

Each N runs in a fresh temporary MEDCURATE_HOME with its own Label Studio (a free port), through
the same named jobs and the same code as ``make demo`` (:class:`pipelines.demo.Chain`): synth,
inbox drop and claim, ``ingest_batch``, annotation rounds sized so every volume is labelled
(``annotation_round``, ``medcurate annotate-sim``, ``round_export``, ``consensus`` between rounds),
``consensus_and_release``. Then the incremental part: patients N.. of the same seed's cohort
(new people, ``generate_studies(first_patient=N)``), ``ingest_batch``, one round over the new
volumes, ``consensus_and_release`` to a new release.

Printed: wall time per phase (non-Dagster steps included), per Dagster run and per step (from
Dagster's run step stats); peak memory of the process tree (sampled RSS of this process and its
children, Label Studio included; and getrusage's high-water marks); Dagster's own overhead
= (sum of run wall times - sum of step times) / total wall (goal < 20%); the incremental part's
wall time as a share of the first run's (goal < 25%).

    .venv/bin/python bench/e2e.py                  # 60 and 240 patients (240: 15+ minutes)
    .venv/bin/python bench/e2e.py --patients 60
    .venv/bin/python bench/e2e.py --quick          # 12 patients, to try it
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# run as a script, this folder comes first on sys.path, and bench/quality.py would shadow the
# quality package that the pipeline imports: look for packages from the repository root instead
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

OVERHEAD_GOAL = 0.20
INCREMENTAL_GOAL = 0.25
SECOND_BATCH = 0.10  # the second batch: this share of the first batch's patients (at least 1)


# --------------------------------------------------------------------------- figures (pure)


@dataclass(frozen=True)
class RunFigures:
    """One Dagster run: its wall time (run record) and its steps' wall times (step stats)."""

    label: str
    job: str
    wall: float
    steps: tuple[tuple[str, float], ...]

    @property
    def step_sum(self) -> float:
        return sum(s for _, s in self.steps)


def step_times(stats: Sequence[Any]) -> tuple[tuple[str, float], ...]:
    """(step key, seconds) of each finished step of Dagster's ``get_run_step_stats``."""
    return tuple(
        (str(s.step_key), float(s.end_time - s.start_time))
        for s in stats
        if s.start_time is not None and s.end_time is not None
    )


def overhead_share(runs: Sequence[RunFigures], total_wall: float) -> float:
    """Dagster's own time (run wall minus its steps' wall) as a share of the total wall time."""
    if total_wall <= 0:
        raise ValueError("total wall time must be positive")
    return sum(r.wall - r.step_sum for r in runs) / total_wall


def incremental_share(incremental_wall: float, first_wall: float) -> float:
    """The second batch's wall time (to its release) as a share of the first full run's."""
    if first_wall <= 0:
        raise ValueError("the first run's wall time must be positive")
    return incremental_wall / first_wall


def second_batch_size(patients: int, share: float = SECOND_BATCH) -> int:
    return max(1, math.ceil(patients * share))


def verdict(value: float, goal: float) -> str:
    return f"{value:.1%} (goal < {goal:.0%}: {'met' if value < goal else 'NOT met'})"


def tree_rss(pid: int, proc: Path = Path("/proc")) -> int:
    """Resident bytes of ``pid`` and all its descendants (Linux /proc; 0 where unreadable)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        p = int(stat.parent.name)
        parents[p] = int(fields[1])  # ppid (fields[0] is the state)
        rss[p] = int(fields[21]) * page  # rss in pages
    tree, frontier = {pid}, [pid]
    while frontier:
        kids = [c for c, pp in parents.items() if pp in frontier and c not in tree]
        tree.update(kids)
        frontier = kids
    return sum(rss.get(p, 0) for p in tree)


PROC_SELF = Path("/proc/self")


def self_rss(proc_self: Path = PROC_SELF) -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes, from /proc/self/status (0, 0 where unreadable)."""
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in (proc_self / "status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) * 1024  # "  123456 kB"
    except (OSError, ValueError, IndexError):
        pass
    return values["VmRSS"], values["VmHWM"]


def reset_hwm(proc_self: Path = PROC_SELF) -> bool:
    """Reset this process's VmHWM to its current RSS (``echo 5 > /proc/self/clear_refs``), so the
    next reading is the peak since now. False where the kernel does not allow it. Note: this also
    resets the high-water mark that getrusage's ru_maxrss reports for this process."""
    try:
        (proc_self / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class MemSample:
    """One sampling interval (epoch seconds): this process's peak RSS inside it (VmHWM since the
    previous reset, so short spikes between samples are not missed), its RSS at the end, and the
    RSS of its descendants at the end (Label Studio, workers; sampled)."""

    start: float
    end: float
    peak: int
    rss: int
    children: int


class PeakRss:
    """Samples memory every ``interval`` s in a thread: :class:`MemSample` per interval in
    ``samples``; ``peak`` is the process tree's largest (this process's peak + its children)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak = 0
        self.samples: list[MemSample] = []
        self.resets = reset_hwm()
        self._last = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> MemSample:
        now = time.time()
        rss, hwm = self_rss()
        # without a reset VmHWM is the whole life's high-water mark: the current RSS says more
        peak = max(hwm, rss) if self.resets and reset_hwm() else rss
        children = max(0, tree_rss(os.getpid()) - rss)
        s = MemSample(self._last, now, peak, rss, children)
        self._last = now
        self.samples.append(s)
        self.peak = max(self.peak, peak + children)
        return s

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def self_peak(self) -> int:
        return max((s.peak for s in self.samples), default=0)


def reclaimable() -> tuple[int, int, int]:
    """This process's RSS now, after ``gc.collect()``, and after glibc's ``malloc_trim(0)``: what
    a long-lived process (the bench, the Dagster daemon) keeps between steps, split into live
    objects (left after both), garbage, and freed memory the allocator has not handed back."""
    import ctypes
    import gc

    before = self_rss()[0]
    gc.collect()
    after_gc = self_rss()[0]
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return before, after_gc, self_rss()[0]


@dataclass(frozen=True)
class Window:
    """A step (Dagster step stats) or a phase outside Dagster, in epoch seconds."""

    label: str
    start: float
    end: float


@dataclass(frozen=True)
class WindowMemory:
    """Memory of one window: this process's RSS just before it, its peak inside it, and the
    largest RSS of its children inside it (bytes)."""

    window: Window
    before: int
    peak: int
    children: int

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.before)


def window_memory(windows: Sequence[Window], samples: Sequence[MemSample]) -> list[WindowMemory]:
    """Each window's memory from the samples whose interval overlaps it (an interval across a
    boundary counts for both sides: a peak is never lost, at worst shared with a neighbour).
    ``before`` is the RSS at the end of the last interval ending at or before the window's start
    (the first overlapping interval's end where there is none)."""
    out = []
    for w in windows:
        inside = [s for s in samples if s.start < w.end and s.end > w.start]
        earlier = [s for s in samples if s.end <= w.start]
        before = earlier[-1].rss if earlier else (inside[0].rss if inside else 0)
        peak = max((s.peak for s in inside), default=0)
        children = max((s.children for s in inside), default=0)
        out.append(WindowMemory(w, before, peak, children))
    return out


def phase_windows(phases: Sequence[Any], steps: Mapping[str, Sequence[Any]]) -> list[Window]:
    """Windows in order: each Dagster run's steps (``steps[run_id]``: step stats with
    ``step_key, start_time, end_time``) as ``<phase> / <step>``, each phase outside Dagster as
    itself (from ``started_at`` and ``seconds``)."""
    out = []
    for p in phases:
        if p.run_id is None:
            out.append(Window(p.name, p.started_at, p.started_at + p.seconds))
            continue
        for s in steps.get(p.run_id, ()):
            if s.start_time is not None and s.end_time is not None:
                out.append(Window(f"{p.name} / {s.step_key}", s.start_time, s.end_time))
    return out


def memory_table(rows: Sequence[WindowMemory]) -> list[str]:
    """The per-step memory lines (MiB): before, peak, growth inside the step, children's peak."""
    mib = 1024**2
    lines = [f"    {'step':58s} {'before':>7s} {'peak':>7s} {'+grow':>7s} {'child':>7s}  (MiB)"]
    for r in rows:
        lines.append(
            f"    {r.window.label[:58]:58s} {r.before / mib:7.0f} {r.peak / mib:7.0f} "
            f"{r.growth / mib:7.0f} {r.children / mib:7.0f}"
        )
    return lines


def maxrss_bytes() -> tuple[int, int]:
    """getrusage high-water marks (bytes) of this process and of its largest waited-for child."""
    kib = 1024  # Linux reports KiB
    self_ = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib
    return self_, children


# --------------------------------------------------------------------------- running


@contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (None: unset) environment variables for the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    _set_environment(values)
    try:
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: Mapping[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def run_figures(instance: Any, phases: Sequence[Any]) -> list[RunFigures]:
    out = []
    for p in phases:
        if p.run_id is None:
            continue
        record = instance.get_run_record_by_id(p.run_id)
        wall = float(record.end_time - record.start_time)
        steps = step_times(instance.get_run_step_stats(p.run_id))
        out.append(RunFigures(p.name, record.dagster_run.job_name, wall, steps))
    return out


def step_stats(instance: Any, phases: Sequence[Any]) -> dict[str, Sequence[Any]]:
    return {p.run_id: instance.get_run_step_stats(p.run_id) for p in phases if p.run_id}


def report_part(
    title: str,
    phases: Sequence[Any],
    runs: Sequence[RunFigures],
    wall: float,
    memory: Sequence[WindowMemory] = (),
) -> None:
    print(f"\n--- {title}: {wall:.1f} s wall")
    by_id = {r.label: r for r in runs}
    for p in phases:
        kind = "dagster" if p.run_id else "outside"
        print(f"  {p.name:38s} {p.seconds:8.1f} s  ({kind})")
        run = by_id.get(p.name)
        if run is not None:
            print(f"      run wall {run.wall:.1f} s, steps {run.step_sum:.1f} s")
            for key, seconds in run.steps:
                print(f"        {key:44s} {seconds:7.1f} s")
    outside = sum(p.seconds for p in phases if p.run_id is None)
    dagster = sum(r.wall for r in runs)
    print(f"  dagster runs {dagster:.1f} s, outside dagster {outside:.1f} s")
    print(f"  dagster overhead: {verdict(overhead_share(runs, wall), OVERHEAD_GOAL)}")
    if memory:
        print("  memory per step: this process's RSS before the step, its peak inside it (VmHWM,")
        print("  reset every sample), the growth, and the peak RSS of its children (sampled)")
        print("\n".join(memory_table(memory)))


def measure(patients: int, seed: int, rounds: int) -> dict[str, float]:
    import dagster as dg

    from medcurate.services import labelstudio as ls
    from medcurate.synth import generate_studies
    from pipelines import demo

    extra = second_batch_size(patients)
    print(f"\n===== e2e: {patients} patients (seed {seed}, {rounds} rounds), then {extra} more")
    with tempfile.TemporaryDirectory(prefix="medcurate-e2e-") as tmp:
        home = Path(tmp) / "home"
        env = {
            "MEDCURATE_HOME": str(home),
            "DAGSTER_HOME": None,  # prepare_home: the home's own
            "MEDCURATE_DEID_SALT": None,  # prepare_home writes a fresh one into restricted/
            "LABEL_STUDIO_URL": None,  # the server this run starts
            "LABEL_STUDIO_API_KEY": None,
        }
        with environment(env), PeakRss() as peak:
            t0 = time.perf_counter()
            z = demo.prepare_home()
            demo.start_labelstudio(z.home, port=ls.free_port())
            t_setup = time.perf_counter() - t0
            try:
                instance = dg.DagsterInstance.get()
                chain = demo.Chain(z, instance)
                truth = z.demo_truth / f"seed-{seed}"
                ok = (
                    chain.ingest(demo.synth_cli(patients, seed, truth))
                    and chain.label(truth, rounds)
                    and chain.release()
                )
                if not ok:
                    raise SystemExit(f"e2e: the first run of {patients} patients failed")
                first = chain.lap()
                truth2 = z.demo_truth / f"seed-{seed}-from-{patients}"
                ok = (
                    chain.ingest(
                        lambda drop: print(
                            generate_studies(drop, extra, seed, truth2, first_patient=patients)
                        )
                    )
                    and chain.label(truth2, 1)
                    and chain.release()
                )
                if not ok:
                    raise SystemExit(f"e2e: the second batch of {extra} patients failed")
                second = chain.lap()
                runs1 = run_figures(instance, first.phases)
                runs2 = run_figures(instance, second.phases)
                windows1 = phase_windows(first.phases, step_stats(instance, first.phases))
                windows2 = phase_windows(second.phases, step_stats(instance, second.phases))
                releases = sorted(
                    f"{d.name}@{p.name}"
                    for d in z.releases.glob("*")
                    if d.is_dir()
                    for p in d.iterdir()
                    if p.is_dir() and p.name[1:].isdigit()
                )  # releases/<dataset>/v<N>
            finally:
                ls.stop(z.home)
    self_max, child_rss = maxrss_bytes()
    held, after_gc, after_trim = reclaimable()
    gib = 1024**3
    mem1 = window_memory(windows1, peak.samples)
    mem2 = window_memory(windows2, peak.samples)
    report_part(f"{patients} patients to a release", first.phases, runs1, first.wall(), mem1)
    report_part(f"+{extra} patients to a new release", second.phases, runs2, second.wall(), mem2)
    total = first.wall() + second.wall()
    share = incremental_share(second.wall(), first.wall())
    print(f"\n=== {patients} patients: summary")
    print(f"  setup (init-home, salt, Label Studio start): {t_setup:.1f} s")
    print(f"  first run {first.wall():.1f} s; second batch {second.wall():.1f} s")
    both = overhead_share(runs1 + runs2, total)
    print(f"  dagster overhead (both parts): {verdict(both, OVERHEAD_GOAL)}")
    print(f"  incremental cost: {verdict(share, INCREMENTAL_GOAL)}")
    print(
        f"  peak memory: this process {peak.self_peak() / gib:.2f} GiB (VmHWM per sample), "
        f"process tree {peak.peak / gib:.2f} GiB; getrusage maxrss self {self_max / gib:.2f} GiB"
        f"{' (since the last VmHWM reset)' if peak.resets else ''}, largest child "
        f"{child_rss / gib:.2f} GiB"
    )
    print(
        f"  held at the end (Label Studio stopped): RSS {held / gib:.2f} GiB, after gc.collect "
        f"{after_gc / gib:.2f} GiB, after malloc_trim {after_trim / gib:.2f} GiB"
    )
    top = sorted(mem1 + mem2, key=lambda m: -m.peak)[:5]
    print("  largest step peaks: " + ", ".join(f"{m.window.label} {m.peak / gib:.2f}" for m in top))
    print(f"  releases: {', '.join(releases) or 'none found'}")
    return {"first": first.wall(), "second": second.wall(), "share": share}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--patients", type=int, nargs="+", default=[60, 240])
    ap.add_argument("--quick", action="store_true", help="12 patients only, to try it")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=2, help="annotation rounds of the first run")
    args = ap.parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    for n in [12] if args.quick else args.patients:
        measure(n, args.seed, max(1, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
