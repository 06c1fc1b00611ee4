"""The cluster profile's services for one MEDCURATE_HOME, started and stopped together.

``make cluster-demo`` and the cluster integration test need the same four things before a run:
PostgreSQL (Dagster's run and event storage), Redis (Celery's broker and result backend), the
local S3 endpoint (the dataset store) and DAGSTER_HOME's dagster.yaml pointing at PostgreSQL.
:func:`start` does that and returns the environment every process of the deployment needs (the
launching process and each Celery worker); it holds passwords, so it is put into process
environments, never written or printed. Default ports are used when free, any free port when not
(a second home on the same machine, pytest's workers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medcurate import profiles
from medcurate.services import postgres, redis, s3local
from medcurate.services.labelstudio import free_port, port_is_free

SHARDS_VAR = "MEDCURATE_SHARDS"  # = assets.shards.SHARDS_VAR
STORE_VAR = "MEDCURATE_STORE"  # = medcurate.store.objects.STORE_ENV


@dataclass(frozen=True)
class ClusterServices:
    """Where the services answer, and the environment for the deployment's processes."""

    postgres_url: str
    broker: str  # without password
    store: str
    env: dict[str, str] = field(repr=False)


def start(home: Path, shards: int = 2, store_prefix: str = "releases") -> ClusterServices:
    """Start PostgreSQL, Redis and the local S3 endpoint of ``home`` (those already running are
    kept), write the cluster profile into ``home/dagster/dagster.yaml``, and return the
    environment: PostgreSQL's credentials, the Celery broker and backend, the S3 endpoint and
    its dummy keys, MEDCURATE_STORE in the bucket, MEDCURATE_SHARDS."""
    home = Path(home).resolve()
    pg = postgres.start(
        home, port=_port(postgres.HOST, postgres.DEFAULT_PORT, postgres.status(home))
    )
    rd = redis.start(home)
    s3 = s3local.start(home)
    profiles.write_cluster_profile(
        home / "dagster", host=pg.host, port=pg.port, username=pg.username
    )
    env = {
        **postgres.client_env(home),
        **redis.client_env(home),
        **s3.client_env(),
        STORE_VAR: s3.store_url(store_prefix),
        SHARDS_VAR: str(shards),
    }
    return ClusterServices(
        postgres_url=f"postgresql://{pg.host}:{pg.port}/{postgres.DB_NAME}",
        broker=rd.url(0),
        store=s3.store_url(store_prefix),
        env=env,
    )


def stop(home: Path) -> list[str]:
    """Stop the three services of ``home`` (the profile stays: ``medcurate profile local``
    undoes it). Returns the names of those that were running."""
    home = Path(home).resolve()
    stopped = []
    for name, stop_one in (
        ("s3", s3local.stop),
        ("redis", redis.stop),
        ("postgres", postgres.stop),
    ):
        if stop_one(home):
            stopped.append(name)
    return stopped


def _port(host: str, default: int, status: postgres.PostgresStatus) -> int | None:
    """The running server's port (None: start keeps it), else the default when free, else any."""
    if status.running:
        return None
    return default if port_is_free(host, default) else free_port(host)
