"""The datasheet: every section, counts and balance, lineage, nothing identifying."""

from __future__ import annotations

from pathlib import Path

from medcurate.splits import assign_splits
from medcurate.store.card import code_version, render_card
from medcurate.store.manifest import build_manifest, curate_samples


def test_card_sections_counts_and_lineage(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(tmp_path, 8)
    a = assign_splits(curate_samples(vol, lab))
    m, _ = build_manifest(a, tmp_path / "volumes", tmp_path / "labels")
    card = render_card(
        m,
        "v3-0123456789ab",
        "demo",
        config={"seed": 4},
        lineage={"dagster_run_id": "run-77", "code_version": "0.1.0+abc"},
    )
    for section in (
        "## Motivation",
        "## Composition",
        "### Balance",
        "## Collection",
        "## De-identification",
        "## Preprocessing",
        "## Labelling",
        "## Intended uses",
        "## Lineage",
    ):
        assert section in card
    assert card.startswith("# demo v3-0123456789ab")
    assert f"{len(m)} samples" in card
    assert "| round-1 | " in card and "0.8" in card
    assert '"dagster_run_id": "run-77"' in card and '"seed": 4' in card
    assert "| train |" in card
    for uid in vol["study_uid"]:  # de-identified UIDs do not enter the card either
        assert uid not in card
    assert "datasets pull demo@v3 DEST" in card


def test_code_version_names_the_installed_version() -> None:
    import importlib.metadata

    assert code_version().split("+")[0] == importlib.metadata.version("medcurate")
