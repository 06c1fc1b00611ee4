"""Deployment profiles: the cluster dagster.yaml puts a real Dagster instance's runs and events
in the managed PostgreSQL (read back through a second instance object), without a secret in the
file; the local profile is init-home's sqlite file, word for word."""

from __future__ import annotations

import stat
from pathlib import Path

import dagster as dg
import pytest
import yaml

from medcurate import profiles
from medcurate.config import Zones
from medcurate.home import write_dagster_yaml
from medcurate.services import postgres

SECRET = "pw-not-in-yaml"


def test_cluster_yaml_names_the_password_variable_never_the_password(tmp_path: Path) -> None:
    dh = tmp_path / "dagster"
    path = profiles.write_cluster_profile(dh, host="127.0.0.1", port=5433, username="medcurate")
    cfg = yaml.safe_load(path.read_text())
    db = cfg["storage"]["postgres"]["postgres_db"]
    assert db["password"] == {"env": postgres.PASSWORD_VAR}
    assert (db["hostname"], db["port"], db["db_name"]) == ("127.0.0.1", 5433, postgres.DB_NAME)
    assert cfg["telemetry"]["enabled"] is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(dh.stat().st_mode) == 0o700
    assert profiles.active_profile(dh) == profiles.CLUSTER


def test_local_profile_is_init_homes_file_and_undoes_cluster(tmp_path: Path) -> None:
    dh = tmp_path / "dagster"
    assert profiles.active_profile(dh) is None
    profiles.write_cluster_profile(dh, host="127.0.0.1", port=5433, username="medcurate")
    path = profiles.write_local_profile(dh)
    assert profiles.active_profile(dh) == profiles.LOCAL
    expected = write_dagster_yaml(tmp_path / "other").read_text()
    assert path.read_text() == expected.replace(str(tmp_path / "other"), str(dh))
    path.write_text("storage: {}\n")
    assert profiles.active_profile(dh) == "custom"


@dg.asset
def numbers() -> list[int]:
    return [1, 2, 3]


@dg.asset
def total(numbers: list[int]) -> int:
    return sum(numbers)


@pytest.mark.integration
def test_a_dagster_instance_on_the_cluster_profile_keeps_runs_in_postgres(
    zones_tmp: Zones, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {postgres.USER_VAR: "dagster_ops", postgres.PASSWORD_VAR: SECRET}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    server = postgres.start(zones_tmp.home, port=postgres.free_port(), env=env)
    try:
        dh = tmp_path / "dagster-cluster"
        monkeypatch.setenv("DAGSTER_HOME", str(dh))
        path = profiles.write_cluster_profile(
            dh, host=server.host, port=server.port, username=server.username
        )
        assert SECRET not in path.read_text()
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
            result = dg.materialize([numbers, total], instance=instance)
            assert result.success
            run_id = result.run_id
        assert not list(dh.rglob("*.db"))  # no sqlite storage was made
        # a second instance object on the same file: what it reads lives in PostgreSQL
        with dg.DagsterInstance.from_config(str(dh)) as again:
            run = again.get_run_by_id(run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
            mat = again.get_latest_materialization_event(dg.AssetKey("total"))
            assert mat is not None and mat.run_id == run_id
        with server.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs WHERE run_id = %s", (run_id,))
            assert cur.fetchone() == (1,)
            cur.execute(
                "SELECT count(*) FROM event_logs WHERE run_id = %s AND asset_key IS NOT NULL"
                " AND dagster_event_type = 'ASSET_MATERIALIZATION'",
                (run_id,),
            )
            assert cur.fetchone() == (2,)
    finally:
        postgres.stop(zones_tmp.home)


def test_profile_commands_switch_the_file(
    zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from medcurate.services.postgres_cli import profile_app

    monkeypatch.setenv(postgres.PASSWORD_VAR, SECRET)
    runner = CliRunner()
    done = runner.invoke(profile_app, ["cluster", "--port", "5999"])
    assert done.exit_code == 0, done.output
    assert "postgres is not answering" in done.output and SECRET not in done.output
    cfg = yaml.safe_load((zones_tmp.dagster_home / "dagster.yaml").read_text())
    assert cfg["storage"]["postgres"]["postgres_db"]["port"] == 5999
    assert runner.invoke(profile_app, ["local"]).exit_code == 0
    assert profiles.active_profile(zones_tmp.dagster_home) == profiles.LOCAL
    assert "profile: local" in runner.invoke(profile_app, ["show"]).output
