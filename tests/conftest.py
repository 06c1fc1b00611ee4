"""Shared fixtures: a throwaway MEDCURATE_HOME, a test salt, and generated studies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medcurate.config import Zones

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

TEST_SALT = "medcurate-test-salt-not-a-secret"


@pytest.fixture
def zones_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Zones:
    """An empty MEDCURATE_HOME with its zones, set in the environment for the test."""
    home = tmp_path / "home"
    monkeypatch.setenv("MEDCURATE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return Zones(home).ensure()


@pytest.fixture
def salt(monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv("MEDCURATE_DEID_SALT", TEST_SALT)
    return TEST_SALT.encode()


@pytest.fixture(scope="session")
def synth_studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small generated cohort shared by the session: (studies folder, truth folder). Read-only."""
    from medcurate.synth import generate_studies

    root = tmp_path_factory.mktemp("synth")
    out, truth = root / "studies", root / "truth"
    generate_studies(out, patients=6, seed=1, truth=truth)
    return out, truth
