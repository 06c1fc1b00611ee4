"""MEDCURATE_HOME set-up: the zones and a Dagster instance with telemetry off.

``init-home`` is the explicit set-up command (``make setup`` runs it), so it is the one that repairs
homes made by older versions, whose ``restricted/`` and Dagster home were 0755: every other command
refuses to run on such a home (:meth:`medcurate.config.Zones.check_private`) and points here.
Dagster's home is owner-only because its sqlite files hold run and event logs.
"""

from __future__ import annotations

from pathlib import Path

from medcurate.config import Zones, zones
from medcurate.perms import open_to_others, private_dir, write_private_bytes

DAGSTER_YAML = """\
# Written by `medcurate init-home`. Local sqlite storage under MEDCURATE_HOME; no telemetry.
telemetry:
  enabled: false
nux:
  enabled: false  # no "join the community" e-mail pop-up in the UI
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
    private_dir(dagster_home)
    target = dagster_home / "dagster.yaml"
    if target.exists() and target.read_text().startswith("# medcurate profile: cluster"):
        return target  # `medcurate profile cluster` chose PostgreSQL; `profile local` undoes it
    text = DAGSTER_YAML.format(base=dagster_home)
    if not target.exists() or target.read_text() != text:
        write_private_bytes(target, text.encode())
    return target


def init_home(z: Zones | None = None) -> str:
    z = z or zones()
    fixed = len(open_to_others(z.private_roots()))
    z.ensure(fix=True)
    write_dagster_yaml(z.dagster_home)
    line = f"MEDCURATE_HOME ready: {z.home}"
    if fixed:
        line += (
            f"\n  fixed permissions: {fixed} folder(s) under restricted/, dagster/ or labelstudio/"
            " were readable by other users; they and everything in them are now owner-only"
        )
    return line
