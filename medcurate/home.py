"""MEDCURATE_HOME set-up: the zones and a Dagster instance with telemetry off."""

from __future__ import annotations

from pathlib import Path

from medcurate.config import Zones, zones

DAGSTER_YAML = """\
# Written by `medcurate init-home`. Local sqlite storage under MEDCURATE_HOME; no telemetry.
telemetry:
  enabled: false
storage:
  sqlite:
    base_dir: {base}
local_artifact_storage:
  module: dagster._core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: {base}
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
"""


def write_dagster_yaml(dagster_home: Path) -> Path:
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    text = DAGSTER_YAML.format(base=dagster_home)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return target


def init_home(z: Zones | None = None) -> str:
    z = (z or zones()).ensure()
    write_dagster_yaml(z.dagster_home)
    return f"MEDCURATE_HOME ready: {z.home}"
