"""`make demo`: the whole chain on generated studies, through the Dagster instance.

It does what a person would do in the UI: drop studies into the inbox, let the inbox sensor's claim
turn them into a batch partition, materialize the batch's assets, open annotation round-1 in the
managed Label Studio (started here, stopped at the end) where three simulated annotators label it,
export it, then the dataset-wide assets (consensus labels ... release). Runs are recorded in the
instance, so `make ui` shows them afterwards.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

import dagster as dg

from assets.partitions import batch_partitions, round_partitions
from medcurate.config import Zones, deid_salt, zones
from medcurate.home import init_home
from medcurate.ingest import claim_inbox, drop_into_inbox
from medcurate.perms import make_private, private_dir, write_private_bytes
from medcurate.synth import generate_studies
from pipelines.definitions import all_assets, all_checks, defs


def demo_salt(restricted: Path) -> str:
    """A random salt for the demo, kept in restricted/ so re-runs pseudonymize the same way.

    Real deployments set MEDCURATE_DEID_SALT from their secret store instead. The file is 0600 in
    a 0700 folder whatever the umask; 64 hex digits (256 bits) pass the salt rule of deid_salt.
    """
    path = restricted / "demo-salt"
    if not path.exists():
        private_dir(restricted)
        write_private_bytes(path, secrets.token_hex(32).encode())
    make_private(path)
    return path.read_text().strip()


def _metadata_line(result: dg.ExecuteInProcessResult) -> list[str]:
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
        state = "passed" if check.passed else "FAILED"
        lines.append(f"  check {check.asset_key.to_user_string()}.{check.check_name}: {state}")
    return lines


def run_demo(patients: int = 12, seed: int = 7, rounds: int = 2) -> int:
    z = zones()
    os.environ.setdefault("DAGSTER_HOME", str(z.dagster_home))
    print(init_home(z))  # first: restricted/ owner-only before the salt is written there
    if not os.environ.get("MEDCURATE_DEID_SALT"):
        os.environ["MEDCURATE_DEID_SALT"] = demo_salt(z.restricted)
    deid_salt()  # a weak MEDCURATE_DEID_SALT from the caller stops the demo here, not mid-run
    started = _start_labelstudio(z.home)
    try:
        return _run(z, patients, seed, rounds)
    finally:
        if started:
            from medcurate.services.labelstudio import stop

            stop(z.home)
            print("label studio: stopped")


def _start_labelstudio(home: Path) -> bool:
    """Start the managed Label Studio for MEDCURATE_HOME unless it already runs (then it is left
    running afterwards). True when this demo started it."""
    from medcurate.services import labelstudio as ls

    if ls.status(home).running:
        print(f"label studio: already running ({ls.status(home).url})")
        return False
    port = int(os.environ.get("MEDCURATE_LABELSTUDIO_PORT", ls.DEFAULT_PORT))
    if not ls.port_is_free(ls.DEFAULT_HOST, port):
        port = ls.free_port()
    server = ls.start(home=home, port=port)
    print(f"label studio: {server.url}")
    return True


def _run(z: Zones, patients: int, seed: int, rounds: int) -> int:
    truth = z.restricted / "demo-truth" / f"seed-{seed}"
    with tempfile.TemporaryDirectory(dir=z.restricted) as staging:
        summary = generate_studies(
            Path(staging) / "drop", patients=patients, seed=seed, truth=truth
        )
        print(f"generated: {summary}")
        dropped = drop_into_inbox(Path(staging) / "drop", z)
    print(f"dropped {dropped} files into the inbox")
    batch = claim_inbox(z)
    if batch is None:
        print("nothing claimed from the inbox", file=sys.stderr)
        return 1
    print(f"claimed batch {batch}")

    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(batch_partitions.name, [batch])  # type: ignore[arg-type]
    run = _Runner(instance)
    batch_keys = [a.key for a in all_assets if a.partitions_def == batch_partitions]  # type: ignore[union-attr]
    other_keys = [a.key for a in all_assets if a.partitions_def is None]  # type: ignore[union-attr]

    if not run("batch", batch_keys, batch):
        return 1
    for n in range(1, rounds + 1):
        if not _annotation_round(run, f"round-{n}", truth):
            return 1
        # the next round's model trains on this round's consensus
        if n < rounds and not run("consensus", [dg.AssetKey("consensus_labels")]):
            return 1
    if other_keys and not run("dataset", other_keys):
        return 1
    print(f"done. MEDCURATE_HOME={z.home}; `make ui` shows the runs.")
    return 0


class _Runner:
    """Materializes a selection of the code location's assets in the instance and reports it."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.everything = [*all_assets, *all_checks]

    def __call__(
        self, label: str, selection: list[dg.AssetKey], partition_key: str | None = None
    ) -> bool:
        result = dg.materialize(
            self.everything,  # type: ignore[arg-type]
            instance=self.instance,
            resources=defs.resources,
            partition_key=partition_key,
            selection=selection,
            raise_on_error=False,
            # the step-by-step DEBUG events stay in the instance (the UI shows them)
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
        print(f"{label} run {result.run_id}: {'success' if result.success else 'FAILED'}")
        print("\n".join(_metadata_line(result)))
        return bool(result.success)


def _annotation_round(run: _Runner, round_key: str, truth: Path) -> bool:
    """One annotation round: the pre-annotation model, the round's tasks in Label Studio, three
    simulated annotators with moderate noise, then the export."""
    from annotation.rounds import round_number
    from annotation.simulate import annotate_round

    run.instance.add_dynamic_partitions(round_partitions.name, [round_key])  # type: ignore[arg-type]
    round_assets = [a for a in all_assets if a.partitions_def == round_partitions]  # type: ignore[union-attr]
    keys = [k for a in round_assets for k in a.keys]  # type: ignore[union-attr]
    tasks, exported = dg.AssetKey("annotation_tasks"), dg.AssetKey("annotations")
    before = [k for k in keys if k not in (tasks, exported)]
    if before and not run(round_key, before, round_key):
        return False
    if not run(round_key, [tasks], round_key):
        return False
    print(annotate_round(round_number(round_key), annotators=3, noise="moderate", truth=truth))
    return run(f"{round_key} export", [exported], round_key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2, help="annotation rounds (>= 1)")
    args = parser.parse_args(argv)
    from medcurate.config import ConfigError

    try:
        return run_demo(patients=args.patients, seed=args.seed, rounds=max(1, args.rounds))
    except ConfigError as exc:  # a weak salt, an unwritable or open home: one line, no traceback
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
