"""Settings read once from the environment, and the data zones under MEDCURATE_HOME.

Everything that decides where data lives goes through :class:`Zones`, so the rule that nothing
identifying leaves ``restricted/`` has one place to be checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".medcurate"


class ConfigError(RuntimeError):
    """A required setting is missing or invalid."""


class MissingSaltError(ConfigError):
    """MEDCURATE_DEID_SALT is not set; de-identification must not start without it."""


@dataclass(frozen=True)
class Zones:
    """The data zones of DESIGN.md, as paths under one home folder."""

    home: Path

    @property
    def inbox(self) -> Path:
        return self.home / "inbox"

    @property
    def restricted(self) -> Path:
        return self.home / "restricted"

    @property
    def raw(self) -> Path:
        return self.restricted / "raw"

    @property
    def quarantine(self) -> Path:
        return self.restricted / "quarantine"

    @property
    def duplicates(self) -> Path:
        return self.restricted / "duplicates"

    @property
    def catalog(self) -> Path:
        return self.restricted / "catalog"

    @property
    def deid(self) -> Path:
        return self.home / "deid"

    @property
    def volumes(self) -> Path:
        return self.home / "volumes"

    @property
    def annotation(self) -> Path:
        return self.home / "annotation"

    @property
    def labels(self) -> Path:
        return self.home / "labels"

    @property
    def curated(self) -> Path:
        return self.home / "curated"

    @property
    def synthetic(self) -> Path:
        return self.home / "synthetic"

    @property
    def releases(self) -> Path:
        return self.home / "releases"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def ensure(self) -> Zones:
        for p in (self.inbox, self.raw, self.quarantine, self.duplicates, self.catalog, self.deid):
            p.mkdir(parents=True, exist_ok=True)
        return self


def medcurate_home(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    return Path(env.get("MEDCURATE_HOME", DEFAULT_HOME)).expanduser().resolve()


def zones(env: dict[str, str] | None = None) -> Zones:
    return Zones(medcurate_home(env))


def deid_salt(env: dict[str, str] | None = None) -> bytes:
    """The de-identification secret. Raises before any file is touched when it is missing."""
    env = dict(os.environ) if env is None else env
    salt = env.get("MEDCURATE_DEID_SALT", "")
    if not salt:
        raise MissingSaltError(
            "MEDCURATE_DEID_SALT is not set: de-identification needs a secret salt "
            "(pseudonyms, UIDs and date shifts derive from it). Set it in the environment."
        )
    if len(salt) < 8:
        raise ConfigError("MEDCURATE_DEID_SALT is too short: use at least 8 characters.")
    return salt.encode("utf-8")
