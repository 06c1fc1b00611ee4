from pathlib import Path

import yaml

from medcurate.config import Zones
from medcurate.home import init_home, write_dagster_yaml


def test_dagster_yaml_turns_telemetry_off_and_uses_home(tmp_path: Path) -> None:
    path = write_dagster_yaml(tmp_path / "dagster")
    cfg = yaml.safe_load(path.read_text())
    assert cfg["telemetry"]["enabled"] is False
    assert cfg["nux"]["enabled"] is False  # no e-mail pop-up in the UI
    assert cfg["storage"]["sqlite"]["base_dir"] == str(tmp_path / "dagster")


def test_init_home_is_idempotent(tmp_path: Path) -> None:
    z = Zones(tmp_path / "h")
    init_home(z)
    before = (z.dagster_home / "dagster.yaml").stat().st_mtime_ns
    init_home(z)
    assert (z.dagster_home / "dagster.yaml").stat().st_mtime_ns == before
    assert z.inbox.is_dir() and z.quarantine.is_dir()


def test_init_home_keeps_the_cluster_profile_and_local_restores_sqlite(tmp_path: Path) -> None:
    """`make setup` runs init-home: it must not turn a home chosen for PostgreSQL back to sqlite."""
    from medcurate.profiles import active_profile, write_cluster_profile, write_local_profile

    z = Zones(tmp_path / "home")
    init_home(z)
    assert active_profile(z.dagster_home) == "local"
    write_cluster_profile(z.dagster_home, host="127.0.0.1", port=5433, username="dagster")
    cluster = (z.dagster_home / "dagster.yaml").read_text()
    init_home(z)
    assert (z.dagster_home / "dagster.yaml").read_text() == cluster
    assert active_profile(z.dagster_home) == "cluster"
    write_local_profile(z.dagster_home)
    init_home(z)
    assert active_profile(z.dagster_home) == "local"
