"""Resources the assets ask for. Declared here (assets import them by type); pipelines/ builds them.

The salt is a secret: it is read from the environment when the resource is used, never stored in
run config or shown in the UI.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from annotation.client import LabelStudioClient
from medcurate.config import Zones, deid_salt, medcurate_home
from medcurate.pacs.client import PacsClient
from medcurate.services import orthanc
from medcurate.services.labelstudio import connection


class MedcurateHome(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the data zones live (MEDCURATE_HOME unless configured)."""

    home: str = ""

    def zones(self) -> Zones:
        return Zones(Path(self.home).resolve() if self.home else medcurate_home()).ensure()


class DeidSecrets(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Reads MEDCURATE_DEID_SALT from the environment at use time."""

    def salt(self) -> bytes:
        return deid_salt()


class LabelStudioResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The annotation server, as a client (Dagster's resource-as-client pattern). URL and API key
    are read at use time, never stored in run config: from LABEL_STUDIO_URL /
    LABEL_STUDIO_API_KEY, else from the server `medcurate labelstudio start` runs for
    MEDCURATE_HOME (its URL and the token in restricted/)."""

    url: str = ""

    def connection(self) -> tuple[str, str]:
        env = dict(os.environ)
        if self.url:
            env["LABEL_STUDIO_URL"] = self.url
        return connection(env=env)

    def client(self) -> LabelStudioClient:
        """The one Label Studio client (:class:`annotation.client.LabelStudioClient`)."""
        return LabelStudioClient(*self.connection())


class PacsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """A PACS over DICOMweb, as a client. ``server`` names the managed Orthanc of MEDCURATE_HOME
    (``medcurate pacs start --server clinical|research``); with ``url`` set, that PACS instead,
    its user and password read at use time from the environment variables named by
    ``username_env`` / ``password_env`` (never stored in run config)."""

    server: str = "clinical"
    url: str = ""
    username_env: str = ""
    password_env: str = ""

    def client(self, home: MedcurateHome) -> PacsClient | None:
        """The client, or None when the managed server of this home is not running."""
        if self.url:
            env = os.environ
            user = env.get(self.username_env) if self.username_env else None
            password = env.get(self.password_env) if self.password_env else None
            return PacsClient(self.url, user, password, name=self.server)
        z = home.zones()
        if not orthanc.status(z.home, self.server).running:
            return None
        return PacsClient.from_server(orthanc.start(z.home, self.server))
