"""`make cluster-demo`: the demo's chain on the cluster profile, then everything stopped.

Starts PostgreSQL (Dagster's run and event storage), Redis (Celery's broker), the local S3
endpoint (the dataset store, ``MEDCURATE_STORE=s3://medcurate/releases``) and two Celery workers,
points DAGSTER_HOME at PostgreSQL (``medcurate profile cluster``), then runs the same
:class:`pipelines.demo.Chain` as ``make demo``: every job is launched as a run whose steps the
Celery executor sends to the workers (de-identification and normalization of the batch in one
shard per worker), and the release is written to S3. Same seed and salt, same version id as
``make demo``.

The profile is chosen before the code location is imported: the code location reads it once to
pick its executor, so :mod:`pipelines.demo` (which imports the code location) is imported only
once DAGSTER_HOME's dagster.yaml names the cluster profile.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import dagster as dg

from assets.deploy import cluster_services, workers

REPO = Path(__file__).resolve().parents[1]


def _runner_class() -> type[Any]:
    from pipelines import demo

    class Runner(demo.Runner):
        """Launches the job as a run of the instance with the code location's executor (the
        Celery executor under the cluster profile): this process orchestrates, workers run the
        steps."""

        def execute(
            self, job: str, partition_key: str | None, run_config: dict[str, Any]
        ) -> tuple[bool, str, list[str]]:
            recon = dg.build_reconstructable_job(
                "pipelines.definitions",
                "resolved_job",
                reconstructable_args=(job,),
                reconstructor_working_directory=str(REPO),
            )
            tags = {"dagster/partition": partition_key} if partition_key else None
            with dg.execute_job(
                recon, instance=self.instance, run_config=run_config, tags=tags
            ) as result:
                return bool(result.success), result.run_id, demo._metadata_line(result)

    return Runner


def run_cluster_demo(patients: int = 12, seed: int = 7, rounds: int = 2, n_workers: int = 2) -> int:
    home = Path(os.environ.setdefault("MEDCURATE_HOME", str(REPO / ".medcurate-cluster")))
    home = home.resolve()
    os.environ.setdefault("DAGSTER_HOME", str(home / "dagster"))
    services = cluster_services.start(home, shards=n_workers)
    os.environ.update(services.env)
    print(f"postgres: {services.postgres_url}; redis: {services.broker}; store: {services.store}")
    try:
        return _run(home, patients, seed, rounds, n_workers)
    finally:
        print(f"stopped: {', '.join(cluster_services.stop(home)) or 'nothing'}")


def _run(home: Path, patients: int, seed: int, rounds: int, n_workers: int) -> int:
    from pipelines import demo  # the code location loads now, under the cluster profile

    z = demo.prepare_home()  # init-home keeps the cluster profile; the salt into the environment
    started = demo.start_labelstudio(z.home)
    pacs = demo.pacs_assets.start_all(z.home)
    try:
        running = workers.start(n_workers, z.home)  # after the salt: they inherit it
        for w in running:
            print(f"celery worker {w.index}: pid {w.pid}, queues {','.join(w.queues)}")
        truth = z.demo_truth / f"seed-{seed}"
        chain = demo.Chain(z, dg.DagsterInstance.get(), runner=_runner_class())
        from_pacs = demo.pacs_assets.status(z.home, demo.pacs_assets.CLINICAL).running
        ok = (
            chain.ingest(demo.synth_cli(patients, seed, truth), via_pacs=from_pacs)
            and chain.label(truth, rounds)
            and chain.release()
        )
        if not ok:
            return 1
        print(demo.pipeline_line(chain.clock.wall()))
        print(f"done on the cluster profile. MEDCURATE_HOME={z.home}")
        return 0
    finally:
        print(f"celery workers stopped: {workers.stop(z.home)}")
        if started:
            demo.ls.stop(z.home)
        demo.pacs_assets.stop_all(pacs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    return run_cluster_demo(args.patients, args.seed, max(1, args.rounds), max(1, args.workers))


if __name__ == "__main__":
    sys.exit(main())
