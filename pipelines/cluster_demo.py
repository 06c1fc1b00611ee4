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
from collections.abc import Iterator
from contextlib import contextmanager
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
        return _run(patients, seed, rounds, n_workers)
    finally:
        print(f"stopped: {', '.join(cluster_services.stop(home)) or 'nothing'}")


@contextmanager
def _celery_workers(home: Path, n: int) -> Iterator[None]:
    """The workers, started after the salt is in the environment (they inherit it)."""
    for w in workers.start(n, home):
        print(f"celery worker {w.index}: pid {w.pid}, queues {','.join(w.queues)}")
    try:
        yield
    finally:
        print(f"celery workers stopped: {workers.stop(home)}")


def _run(patients: int, seed: int, rounds: int, n_workers: int) -> int:
    from pipelines import demo  # the code location loads now, under the cluster profile

    return demo.run_demo(
        patients,
        seed,
        rounds,
        runner=_runner_class(),
        alongside=lambda z: _celery_workers(z.home, n_workers),
    )


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
