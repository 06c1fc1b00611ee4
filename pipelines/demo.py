"""`make demo`: the whole chain on generated studies, through the Dagster instance.

It does what a person would do in the UI: drop studies into the inbox, let the inbox sensor's claim
turn them into a batch partition, run the batch's job (``ingest_batch``), cut annotation round-1
(``annotation_round``) in the managed Label Studio (started here, stopped at the end) where three
simulated annotators label it, export it (``round_export``), then the dataset-wide job
(``consensus_and_release``). These are the named jobs of the code location, the ones the sensors
and the UI launch, so `make ui` afterwards shows the runs by name and its round sensor finds
every round exported (it requests nothing).

What the person would type is run through the ``medcurate`` command line (``init-home``, ``synth``,
``annotate-sim``), in this process; the Dagster side goes through the code location. The few
other steps a person does by hand (the salt file, dropping files, starting the server) call the
core directly: tests/test_layout.py lists them as this module's exceptions.

Each phase's wall time (synth, inbox drop, every job run, every annotate-sim) is printed as it
ends, and the pipeline part's total at the end. ``bench/e2e.py`` runs the same :class:`Chain`
for larger cohorts and reads Dagster's step stats of the runs it recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import math
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import typer

from assets import pacs as pacs_assets
from assets.ingest import claim_inbox, drop_into_inbox, pending_batches
from assets.partitions import batch_partitions, round_partitions
from assets.resources import DeidSecrets
from medcurate import cli
from medcurate.config import ConfigError, Zones, zones
from medcurate.perms import make_private, private_dir, write_private_bytes
from medcurate.services import labelstudio as ls
from pipelines.definitions import defs


def demo_salt(z: Zones) -> str:
    """A random salt for the demo, kept in restricted/ so re-runs pseudonymize the same way.

    Real deployments set MEDCURATE_DEID_SALT from their secret store instead. The file is 0600 in
    a 0700 folder whatever the umask; 64 hex digits (256 bits) pass the salt rule of deid_salt.
    """
    path = z.demo_salt
    if not path.exists():
        private_dir(z.restricted)
        write_private_bytes(path, secrets.token_hex(32).encode())
    make_private(path)
    return path.read_text().strip()


def medcurate(*args: str | Path) -> None:
    """Run one ``medcurate`` command in this process, as a person would type it (errors raise,
    as they do in any other step of the demo)."""
    command = typer.main.get_command(cli.app)
    code = command.main([str(a) for a in args], prog_name="medcurate", standalone_mode=False)
    if code:  # a command that ended with typer.Exit(n)
        raise SystemExit(code)


def _metadata_line(result: dg.ExecuteInProcessResult | dg.ExecuteJobResult) -> list[str]:
    lines = []
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization  # type: ignore[union-attr]
        shown = {
            k: v.value
            for k, v in mat.metadata.items()
            if isinstance(v.value, int | float | str) and len(str(v.value)) < 60
        }
        lines.append(f"  {mat.asset_key.to_user_string()}: {shown}")
    for check in result.get_asset_check_evaluations():
        warn = check.severity == dg.AssetCheckSeverity.WARN
        state = "passed" if check.passed else ("warning (see its metadata)" if warn else "FAILED")
        lines.append(f"  check {check.asset_key.to_user_string()}.{check.check_name}: {state}")
    return lines


@dataclass(frozen=True)
class Phase:
    """One timed phase of the chain: a Dagster run (its ``run_id``) or a step outside Dagster."""

    name: str
    seconds: float
    run_id: str | None = None
    #: wall-clock start (epoch seconds, as Dagster's event timestamps): bench/e2e.py lines
    #: memory samples up with the phases outside Dagster
    started_at: float = 0.0


@dataclass
class Clock:
    """Wall time of each phase, printed as it ends (the issue note quotes these lines)."""

    phases: list[Phase] = field(default_factory=list)
    started: float | None = None  # perf_counter at the start of the first phase
    ended: float | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        """Time the block; the caller may put ``run_id`` into the yielded dict."""
        t0, epoch = time.perf_counter(), time.time()
        self.started = t0 if self.started is None else self.started
        info: dict[str, Any] = {}
        try:
            yield info
        finally:
            self.ended = time.perf_counter()
            self.phases.append(Phase(name, self.ended - t0, info.get("run_id"), epoch))
            print(f"  [{name}: {self.ended - t0:.1f} s]")

    def wall(self) -> float:
        """From the start of the first phase to the end of the last (gaps included)."""
        return 0.0 if self.started is None or self.ended is None else self.ended - self.started


def pipeline_line(seconds: float) -> str:
    return f"pipeline part: {seconds:.1f} s"


def run_demo(
    patients: int = 12,
    seed: int = 7,
    rounds: int = 2,
    runner: type[Runner] | None = None,
    alongside: Callable[[Zones], contextlib.AbstractContextManager[object]] | None = None,
) -> int:
    """The chain with Label Studio and both PACS started around it. ``runner``: how each job
    runs (default: in this process); ``alongside``: more to start once the home and the salt are
    ready and to stop before Label Studio (the cluster demo's Celery workers)."""
    z = prepare_home()
    started = start_labelstudio(z.home)
    pacs = pacs_assets.start_all(z.home)  # clinical: studies in; research: SEG back
    try:
        with alongside(z) if alongside else contextlib.nullcontext():
            return _run(z, patients, seed, rounds, runner)
    finally:
        if started:
            ls.stop(z.home)
            print("label studio: stopped")
        pacs_assets.stop_all(pacs)


def prepare_home() -> Zones:
    """MEDCURATE_HOME ready for a run: owner-only zones, DAGSTER_HOME, the de-identification salt
    (a weak MEDCURATE_DEID_SALT from the caller raises here)."""
    z = zones()
    os.environ.setdefault("DAGSTER_HOME", str(z.dagster_home))
    medcurate("init-home")  # first: restricted/ owner-only before the salt is written there
    if not os.environ.get("MEDCURATE_DEID_SALT"):
        os.environ["MEDCURATE_DEID_SALT"] = demo_salt(z)
    DeidSecrets().salt()
    return z


def start_labelstudio(home: Path, port: int | None = None) -> bool:
    """Start the managed Label Studio for MEDCURATE_HOME unless it already runs (then it is left
    running afterwards). True when this call started it. ``port`` None: the default port when
    it is free, else any free one."""
    if ls.status(home).running:
        print(f"label studio: already running ({ls.status(home).url})")
        return False
    if port is None:
        port = int(os.environ.get("MEDCURATE_LABELSTUDIO_PORT", ls.DEFAULT_PORT))
        if not ls.port_is_free(ls.DEFAULT_HOST, port):
            port = ls.free_port()
    server = ls.start(home=home, port=port)
    print(f"label studio: {server.url}")
    return True


def synth_cli(patients: int, seed: int, truth: Path) -> Callable[[Path], None]:
    """Studies as a person makes them: ``medcurate synth DROP --patients N --seed S --truth T``."""
    return lambda drop: medcurate(
        "synth", drop, "--patients", str(patients), "--seed", str(seed), "--truth", truth
    )


def _run(z: Zones, patients: int, seed: int, rounds: int, runner: type[Runner] | None) -> int:
    truth = z.demo_truth / f"seed-{seed}"
    chain = Chain(z, dg.DagsterInstance.get(), runner=runner)
    from_pacs = pacs_assets.status(z.home, pacs_assets.CLINICAL).running
    ok = (
        chain.ingest(synth_cli(patients, seed, truth), via_pacs=from_pacs)
        and chain.label(truth, rounds)
        and chain.release()
    )
    if not ok:
        return 1
    print(pipeline_line(chain.clock.wall()))
    print(f"done. MEDCURATE_HOME={z.home}; `make ui` shows the runs.")
    return 0


class Chain:
    """The person's steps, in order: each Dagster run and each step outside it is timed."""

    def __init__(
        self, z: Zones, instance: dg.DagsterInstance, runner: type[Runner] | None = None
    ) -> None:
        freeze_long_lived()
        self.z = z
        self.clock = Clock()
        self.run = (runner or Runner)(instance, self.clock)
        self.next_round = 1
        self.labelled = 0  # samples put into rounds so far

    def ingest(self, make_studies: Callable[[Path], None], via_pacs: bool = False) -> bool:
        """Studies made into a drop folder, turned into one batch and run through the batch's
        job (``ingest_batch``). The batch: the files dropped into the inbox and claimed (what the
        inbox sensor does), or, ``via_pacs``, stored into the clinical PACS (what its modalities
        do: ``medcurate pacs store``) and pulled from it over DICOMweb (``medcurate pacs pull``;
        the pacs_sensor does the same from the PACS's change feed)."""
        with tempfile.TemporaryDirectory(dir=self.z.restricted) as staging:
            drop = Path(staging) / "drop"
            with self.clock.phase("synth"):
                make_studies(drop)
            batch = self._from_pacs(drop) if via_pacs else self._from_inbox(drop)
        if batch is None:
            return False
        self.run.instance.add_dynamic_partitions(batch_partitions.name, [batch])  # type: ignore[arg-type]
        return self.run("batch", "ingest_batch", batch)

    def _from_inbox(self, drop: Path) -> str | None:
        with self.clock.phase("inbox drop"):
            dropped = drop_into_inbox(drop, self.z)
            batch = claim_inbox(self.z)
        print(f"dropped {dropped} files into the inbox")
        if batch is None:
            print("nothing claimed from the inbox", file=sys.stderr)
            return None
        print(f"claimed batch {batch}")
        return batch

    def _from_pacs(self, drop: Path) -> str | None:
        with self.clock.phase("pacs store"):
            medcurate("pacs", "store", drop)
        before = set(pending_batches(self.z))
        with self.clock.phase("pacs pull"):
            medcurate("pacs", "pull", "--since", "19000101")  # every study the PACS holds
        new = sorted(set(pending_batches(self.z)) - before)
        if len(new) != 1:
            print(f"pacs pull claimed {len(new)} batches, expected one", file=sys.stderr)
            return None
        return new[0]

    def label(self, truth: Path, rounds: int) -> bool:
        """Every volume not yet in a round is labelled across ``rounds`` rounds, so the release
        ships no unlabelled sample (the default round of 8 samples would leave half of the demo's
        32 volumes unlabelled); the next round's model trains on this round's consensus."""
        volumes = pq.read_metadata(self.z.volumes_table).num_rows
        round_size = max(1, math.ceil((volumes - self.labelled) / rounds))
        for n in range(rounds):
            if not self._annotation_round(truth, round_size):
                return False
            if n < rounds - 1 and not self.run("consensus", "consensus"):
                return False
        self.labelled = volumes  # a round picks unlabelled samples only
        return True

    def lap(self) -> Clock:
        """The phases timed so far; a fresh clock times what follows (a second batch)."""
        done, self.clock = self.clock, Clock()
        self.run.clock = self.clock
        return done

    def release(self) -> bool:
        return self.run("dataset", "consensus_and_release")

    def _annotation_round(self, truth: Path, round_size: int) -> bool:
        """One annotation round: the pre-annotation model and the round's tasks in Label Studio
        (``round_size`` samples; job ``annotation_round``), three simulated annotators with
        moderate noise (``medcurate annotate-sim``), then the export (job ``round_export``)."""
        number, self.next_round = self.next_round, self.next_round + 1
        round = f"round-{number}"
        self.run.instance.add_dynamic_partitions(round_partitions.name, [round])  # type: ignore[arg-type]
        cut = {"annotation_tasks": {"n_samples": round_size}}
        if not self.run(round, "annotation_round", round, ops=cut):
            return False
        with self.clock.phase(f"{round} annotate-sim"):
            medcurate(
                "annotate-sim", "--round", str(number), "--annotators", "3",
                "--noise", "moderate", "--truth", truth,
            )  # fmt: skip
            release_memory()  # annotate-sim runs in this process too
        return self.run(f"{round} export", "round_export", round)


def release_memory() -> None:
    """Hand freed memory back to the system: garbage cycles, then glibc's ``malloc_trim``.

    The demo and bench/e2e.py run every step of every job in this one process (the UI's runs
    get a process per step), and glibc keeps what a step freed (arenas, heap tops, chunks
    below the mmap threshold that the step's large arrays pushed up), so each step started
    where the largest one before it ended: the process's peak became the sum of its history
    rather than its largest step. Measured on a UNet training of the annotation model: 60 to
    125 MiB held after the arrays were freed, returned by ``malloc_trim``."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def freeze_long_lived() -> None:
    """Move every object alive now (modules, classes, the code location's definitions: about
    450,000 once torch, MONAI, GX and Dagster are imported) out of the garbage collector's reach.

    They live as long as the process, yet each full collection walked all of them: 0.16-0.35 s
    per :func:`release_memory`, after each of the demo's ~30 steps, 11 s of a demo run (py-spy),
    plus the collections Python starts by itself. Frozen objects are still freed by reference
    counting; only garbage cycles among them would stay (``gc.freeze``)."""
    gc.collect()
    gc.freeze()


@dg.success_hook(name="release_memory")
def release_memory_hook(context: dg.HookContext) -> None:
    release_memory()


def in_process_job(job: str) -> dg.JobDefinition:
    """The code location's job ``job`` with :func:`release_memory` after each of its steps (the
    same job, name and partitions: the run list shows it as the UI's Launch button would)."""
    return defs.resolve_job_def(job).with_hooks({release_memory_hook})


class Runner:
    """Runs one of the code location's named jobs in the instance (as the UI's Launch button
    would, so the run list shows the job's name), times it and reports it. Every step runs in
    this process (:meth:`execute`); the cluster demo's runner sends them to Celery workers."""

    def __init__(self, instance: dg.DagsterInstance, clock: Clock) -> None:
        self.instance = instance
        self.clock = clock

    def __call__(
        self,
        label: str,
        job: str,
        partition_key: str | None = None,
        ops: dict[str, Any] | None = None,
    ) -> bool:
        run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
        if ops:
            run_config["ops"] = {name: {"config": cfg} for name, cfg in ops.items()}
        with self.clock.phase(f"{label}: {job}") as info:
            success, run_id, lines = self.execute(job, partition_key, run_config)
            info["run_id"] = run_id
        state = "success" if success else "FAILED"
        print(f"{label} run {run_id} (job {job}): {state}")
        print("\n".join(lines))
        return success

    def execute(
        self, job: str, partition_key: str | None, run_config: dict[str, Any]
    ) -> tuple[bool, str, list[str]]:
        """Run ``job``: whether it succeeded, its run id, and its metadata lines."""
        result = in_process_job(job).execute_in_process(
            instance=self.instance,
            partition_key=partition_key,
            raise_on_error=False,
            # the step-by-step DEBUG events stay in the instance (the UI shows them)
            run_config=run_config,
        )
        return bool(result.success), result.run_id, _metadata_line(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2, help="annotation rounds (>= 1)")
    args = parser.parse_args(argv)
    try:
        return run_demo(patients=args.patients, seed=args.seed, rounds=max(1, args.rounds))
    except ConfigError as exc:  # a weak salt, an unwritable or open home: one line, no traceback
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
