"""``medcurate pacs store`` and ``medcurate pacs pull`` against the managed clinical Orthanc of the
test's home: files in, one claimed batch out, counts equal, no UID in what is printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medcurate.config import Zones
from medcurate.pacs.cli import pacs_app
from medcurate.services import orthanc
from tests.medcurate.pacs.test_client import Study, generated  # noqa: F401 (a fixture)


@pytest.mark.integration
def test_store_then_pull_since_claims_every_instance_once(
    zones_tmp: Zones,
    clinical_pacs: orthanc.OrthancServer,
    generated: list[Study],  # noqa: F811
) -> None:
    runner = CliRunner()
    folder = generated[0].files[0].parents[3]  # the generator's output folder
    files = sorted(folder.rglob("*.dcm"))
    stored = runner.invoke(pacs_app, ["store", str(folder)])
    assert stored.exit_code == 0, stored.output
    assert f"stored {len(files)} files" in stored.output
    pulled = runner.invoke(pacs_app, ["pull", "--since", "19000101"])
    assert pulled.exit_code == 0, pulled.output
    (batch,) = [p.name for p in zones_tmp.raw.iterdir() if p.is_dir()]
    assert f"batch {batch} claimed" in pulled.output
    assert len(list(zones_tmp.raw_batch(batch).rglob("*.dcm"))) == len(files)
    assert zones_tmp.catalog_pending(batch).exists()
    for s in generated:  # studies are named by a one-way key, never by their UID
        assert s.uid not in pulled.output
    again = runner.invoke(pacs_app, ["pull", "--since", "19000101"])
    assert again.exit_code == 0 and "pulled" in again.output  # a second pull: a second batch
    assert sum(1 for p in zones_tmp.raw.iterdir() if p.is_dir()) == 2


def test_pull_needs_exactly_one_selection_and_a_running_pacs(zones_tmp: Zones) -> None:
    runner = CliRunner()
    down = runner.invoke(pacs_app, ["pull", "--since", "20250101"])
    assert down.exit_code == 2 and "clinical PACS is not running" in down.output
    assert not any(zones_tmp.raw.iterdir()) if zones_tmp.raw.exists() else True


@pytest.mark.integration
def test_pull_refuses_two_selections(
    zones_tmp: Zones, clinical_pacs: orthanc.OrthancServer, tmp_path: Path
) -> None:
    listing = tmp_path / "acc.csv"
    listing.write_text("AccessionNumber\nA1\n")
    both = CliRunner().invoke(
        pacs_app, ["pull", "--since", "20250101", "--accessions", str(listing)]
    )
    assert both.exit_code == 2 and "exactly one" in both.output


@pytest.mark.integration
def test_pull_by_modality_and_date_range_takes_only_those_studies(
    zones_tmp: Zones,
    clinical_pacs: orthanc.OrthancServer,
    generated: list[Study],  # noqa: F811
) -> None:
    runner = CliRunner()
    folder = generated[0].files[0].parents[3]
    assert runner.invoke(pacs_app, ["store", str(folder)]).exit_code == 0
    mr = [s for s in generated if s.modality == "MR"]
    assert mr and len(mr) < len(generated)
    last = max(s.date for s in generated)
    args = ["pull", "--modality", "mr", "--since", "19000101", "--until", last]
    pulled = runner.invoke(pacs_app, args)
    assert pulled.exit_code == 0, pulled.output
    (batch,) = [p.name for p in zones_tmp.raw.iterdir() if p.is_dir()]
    files = list(zones_tmp.raw_batch(batch).rglob("*.dcm"))
    assert len(files) == sum(len(s.files) for s in mr)
    none = runner.invoke(pacs_app, ["pull", "--until", "19000101"])  # nothing that old
    assert none.exit_code == 0 and "no batch" in none.output
