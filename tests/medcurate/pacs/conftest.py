"""Real Orthanc servers for the PACS tests: a clinical and a research one, each on free ports in
the test's MEDCURATE_HOME (the ``zones_tmp`` fixture), killed after the test (its home is thrown
away, so Orthanc's clean 3.5 s stop is skipped; ``orthanc.stop`` itself is tested with it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from medcurate.config import Zones
from medcurate.services import orthanc


def _serve(zones: Zones, name: str) -> Iterator[orthanc.OrthancServer]:
    server = orthanc.start(
        zones.home,
        name,
        port=orthanc.free_port(),
        dicom_port=orthanc.free_port(),
        env={},  # generated credentials, never the developer's
        stable_age=1,
    )
    try:
        yield server
    finally:
        orthanc.stop(zones.home, name, kill=True)  # a throwaway home: skip the 3.5 s clean stop


@pytest.fixture
def clinical_pacs(zones_tmp: Zones) -> Iterator[orthanc.OrthancServer]:
    """The clinical PACS (identified data, storage in restricted/pacs/clinical/), StableAge 1 s."""
    yield from _serve(zones_tmp, orthanc.CLINICAL)


@pytest.fixture
def research_pacs(zones_tmp: Zones) -> Iterator[orthanc.OrthancServer]:
    """The research PACS (de-identified SEG only, storage under pacs/research/), StableAge 1 s."""
    yield from _serve(zones_tmp, orthanc.RESEARCH)
