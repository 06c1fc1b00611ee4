"""Deployment profiles: which storage Dagster's instance uses, chosen by ``dagster.yaml`` alone.

- ``local`` (the default ``medcurate init-home`` writes): sqlite files under DAGSTER_HOME.
- ``cluster``: run, event-log and schedule storage in PostgreSQL (``dagster_postgres``, the
  server of :mod:`medcurate.services.postgres`), so several machines and worker processes share
  one instance without sqlite's "database is locked".

Asset code never changes between them: Dagster reads the file at instance load. No secret lands
in the file: the password is ``{env: MEDCURATE_POSTGRES_PASSWORD}``, resolved by Dagster in each
process (:func:`medcurate.services.postgres.client_env` gives the value to put there). The first
line names the profile so :func:`active_profile` (and ``init-home``) can tell them apart.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from medcurate.home import DAGSTER_YAML
from medcurate.perms import private_dir, write_private_bytes

LOCAL = "local"
CLUSTER = "cluster"
PROFILES = (LOCAL, CLUSTER)
_MARK = "# medcurate profile: "
_PASSWORD_VAR = "MEDCURATE_POSTGRES_PASSWORD"  # = services.postgres.PASSWORD_VAR (no import)


def dagster_yaml(dagster_home: Path) -> Path:
    return Path(dagster_home) / "dagster.yaml"


def cluster_config(
    dagster_home: Path,
    *,
    host: str,
    port: int,
    username: str,
    db_name: str = "dagster",
    password_var: str = _PASSWORD_VAR,
    max_concurrent_runs: int = 4,
) -> dict[str, object]:
    """The ``cluster`` dagster.yaml as a mapping (telemetry off, like the local one)."""
    base = str(Path(dagster_home))
    return {
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
        "storage": {
            "postgres": {
                "postgres_db": {
                    "username": username,
                    "password": {"env": password_var},
                    "hostname": host,
                    "port": int(port),
                    "db_name": db_name,
                    # SQLAlchemy 2.1 maps plain "postgresql" to psycopg 3, which dagster-postgres
                    # does not install; psycopg2 is its dependency
                    "scheme": "postgresql+psycopg2",
                }
            }
        },
        "local_artifact_storage": {
            "module": "dagster._core.storage.root",
            "class": "LocalArtifactStorage",
            "config": {"base_dir": base},
        },
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"max_concurrent_runs": int(max_concurrent_runs)},
        },
    }


def write_cluster_profile(
    dagster_home: Path,
    *,
    host: str,
    port: int,
    username: str,
    db_name: str = "dagster",
    password_var: str = _PASSWORD_VAR,
    max_concurrent_runs: int = 4,
) -> Path:
    """Write DAGSTER_HOME/dagster.yaml for the ``cluster`` profile (0600 in a 0700 folder)."""
    cfg = cluster_config(
        dagster_home,
        host=host,
        port=port,
        username=username,
        db_name=db_name,
        password_var=password_var,
        max_concurrent_runs=max_concurrent_runs,
    )
    head = (
        f"{_MARK}{CLUSTER}\n"
        f"# Written by `medcurate profile cluster`. Storage in PostgreSQL; the password is read\n"
        f"# from ${password_var} by every Dagster process. `medcurate profile local` undoes it.\n"
    )
    return _write(dagster_home, head + yaml.safe_dump(cfg, sort_keys=False))


def write_local_profile(dagster_home: Path) -> Path:
    """Write DAGSTER_HOME/dagster.yaml back to the single-machine sqlite profile (the file
    ``medcurate init-home`` writes, word for word)."""
    return _write(dagster_home, DAGSTER_YAML.format(base=Path(dagster_home)))


def active_profile(dagster_home: Path) -> str | None:
    """``cluster`` or ``local`` for a file this module or init-home wrote, ``custom`` for any
    other dagster.yaml, None when there is none."""
    path = dagster_yaml(dagster_home)
    try:
        first = path.read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return None
    if first.startswith(_MARK):
        return first[len(_MARK) :].strip()
    if path.read_text() == DAGSTER_YAML.format(base=Path(dagster_home)):
        return LOCAL
    return "custom"


def _write(dagster_home: Path, text: str) -> Path:
    private_dir(Path(dagster_home))
    target = dagster_yaml(dagster_home)
    if not target.exists() or target.read_text() != text:
        write_private_bytes(target, text.encode())
    return target
