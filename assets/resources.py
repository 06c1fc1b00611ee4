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


class LabelStudioResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The annotation server. URL and API key are read at use time, never stored in run config:
    from LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY, else from the server `medcurate labelstudio
    start` runs for MEDCURATE_HOME (its URL and the token in restricted/)."""

    url: str = ""

    def connection(self) -> tuple[str, str]:
        import os

        from medcurate.services.labelstudio import connection

        env = dict(os.environ)
        if self.url:
            env["LABEL_STUDIO_URL"] = self.url
        return connection(env=env)

    def client(self):  # type: ignore[no-untyped-def]
        """A ``label_studio_sdk.LabelStudio`` client (imported lazily: it costs ~1 s)."""
        from label_studio_sdk import LabelStudio

        url, api_key = self.connection()
        return LabelStudio(base_url=url, api_key=api_key)
