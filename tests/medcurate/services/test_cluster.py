"""The cluster profile's services started and stopped together: real PostgreSQL, Redis and the
local S3 endpoint, the cluster dagster.yaml, and the environment the deployment's processes need
(passwords in it, never in its repr or in the files it writes)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from medcurate import profiles
from medcurate.config import Zones
from medcurate.services import cluster, postgres, redis, s3local

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dg.asset
def tiny() -> int:
    return 1


def _running(home: Path) -> dict[str, bool]:
    return {
        "postgres": postgres.status(home).healthy,
        "redis": redis.status(home).healthy,
        "s3": s3local.status(home).healthy,
    }


def test_start_writes_the_profile_and_dagster_stores_runs_in_postgres(
    zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = zones_tmp.home
    dagster_home = home / "dagster"
    try:
        services = cluster.start(home, shards=3)
        assert _running(home) == {"postgres": True, "redis": True, "s3": True}
        assert profiles.active_profile(dagster_home) == "cluster"

        # the environment: broker and backend, store, shards, PostgreSQL's credentials
        env = services.env
        pg_user, pg_password = postgres.credentials(home)
        redis_password = redis.password(home)
        assert env[postgres.PASSWORD_VAR] == pg_password
        assert env[postgres.USER_VAR] == pg_user
        assert env == {**env, **redis.client_env(home)}
        assert env[cluster.STORE_VAR] == services.store
        assert services.store.startswith("s3://")
        assert env[cluster.SHARDS_VAR] == "3"
        assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        # ... and no password where it could be printed or read by others
        for secret in (pg_password, redis_password):
            assert secret not in repr(services)
            assert secret not in services.broker and secret not in services.postgres_url
            assert secret not in (dagster_home / "dagster.yaml").read_text()
        assert services.broker.startswith("redis://127.0.0.1:")

        # a second start keeps the running servers
        again = cluster.start(home, shards=3)
        assert again == services and again.env == services.env

        # a Dagster process with that environment stores its runs in PostgreSQL
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            result = dg.materialize([tiny], instance=instance)
            assert result.success
            run_id = result.run_id
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:  # a fresh reader
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.is_success
            assert instance.get_latest_materialization_event(dg.AssetKey("tiny")) is not None
        server = postgres.start(home)  # the running one
        with server.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT run_id FROM runs")
            assert run_id in {row[0] for row in cur.fetchall()}
        conn.close()
    finally:
        stopped = cluster.stop(home)
    assert stopped == ["s3", "redis", "postgres"]
    assert _running(home) == {"postgres": False, "redis": False, "s3": False}
    assert not any(
        st.running for st in (postgres.status(home), redis.status(home), s3local.status(home))
    )
    assert cluster.stop(home) == []
    assert profiles.active_profile(dagster_home) == "cluster"  # the profile stays
