"""Resources the assets ask for. Declared here (assets import them by type); pipelines/ builds them.

The salt is a secret: it is read from the environment when the resource is used, never stored in
run config or shown in the UI.
"""

from __future__ import annotations

import dagster as dg

from medcurate.config import Zones, deid_salt, medcurate_home


class MedcurateHome(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the data zones live (MEDCURATE_HOME unless configured)."""

    home: str = ""

    def zones(self) -> Zones:
        from pathlib import Path

        return Zones(Path(self.home).resolve() if self.home else medcurate_home()).ensure()


class DeidSecrets(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Reads MEDCURATE_DEID_SALT from the environment at use time."""

    def salt(self) -> bytes:
        return deid_salt()
