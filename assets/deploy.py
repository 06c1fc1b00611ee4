"""What pipelines/ needs of the deployment: the active profile and the cluster's managed services.

The profile is configuration (DAGSTER_HOME's dagster.yaml, written by ``medcurate profile``);
the code location reads it once at load to pick its executor and retry policy
(:mod:`pipelines.cluster`). The services are re-exported for ``make cluster-demo``, so pipelines/
reaches the domain through assets/ only.
"""

from __future__ import annotations

import os
from pathlib import Path

from medcurate import profiles
from medcurate.services import cluster as cluster_services
from medcurate.services import workers

__all__ = ["active_profile", "cluster_services", "workers"]


def active_profile() -> str:
    """``cluster`` when DAGSTER_HOME's dagster.yaml is the cluster profile, else ``local``."""
    dagster_home = os.environ.get("DAGSTER_HOME")
    if not dagster_home:
        return profiles.LOCAL
    found = profiles.active_profile(Path(dagster_home))
    return profiles.CLUSTER if found == profiles.CLUSTER else profiles.LOCAL
