"""Reports attached beside an immutable version: verified, replaced whole, part of the card."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from medcurate import datasets
from medcurate.splits import SplitConfig, assign_splits
from medcurate.store.manifest import curate_samples
from medcurate.store.objects import ObjectStore, StoreError, TamperedObjectError
from medcurate.store.publish import list_versions, resolve
from medcurate.store.release import release_dataset
from medcurate.store.reports import (
    attach_report,
    full_card,
    list_reports,
    read_report,
    read_report_file,
)
from medcurate.store.signing import KEY_ENV, SignatureError

KEY = "0f9e8d7c6b5a49382716f5e4d3c2b1a0a1b2c3d4e5f60718"


def _store(tmp_path: Path, release_cohort, url: str | None = None) -> ObjectStore:  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(tmp_path, 8)
    store = ObjectStore(url or str(tmp_path / "store"))
    a = assign_splits(curate_samples(vol, lab), SplitConfig(folds=2))
    release_dataset(store, "demo", a, tmp_path / "volumes", tmp_path / "labels")
    return store


def _section(text: str) -> dict[str, bytes]:
    return {"section.md": f"## Evaluation\n\n{text}\n".encode(), "plot.png": b"\x89PNG fake"}


def test_attach_then_card_has_the_section_and_version_is_unchanged(
    tmp_path: Path, release_cohort, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(KEY_ENV, raising=False)
    store = _store(tmp_path, release_cohort)
    info = resolve(store, "demo@v1")
    folder = Path(store.path("demo", "v1"))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    report = attach_report(store, info, "evaluation", _section("AUC 0.91"))
    assert report.version_id == info.id and set(report.files) == {"section.md", "plot.png"}
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [v.version for v in list_versions(store, "demo")] == ["v1"]
    assert list_reports(store, info) == ["evaluation"]
    card = full_card(store, info)
    assert card.startswith("# demo v1-") and card.rstrip().endswith("AUC 0.91")
    ds = datasets.load("demo", "v1", root=store.url, cache_dir=tmp_path / "cache")
    assert ds.reports() == ["evaluation"] and "AUC 0.91" in ds.card()
    # a re-evaluation replaces the report whole
    attach_report(store, info, "evaluation", {"section.md": b"## Evaluation\n\nAUC 0.95\n"})
    assert "AUC 0.95" in full_card(store, info) and "AUC 0.91" not in full_card(store, info)
    assert set(read_report(store, info, "evaluation").files) == {"section.md"}
    leftovers = [p.name for p in folder.parent.joinpath("reports", "v1").iterdir()]
    assert leftovers == ["evaluation"]


def test_modified_or_foreign_reports_are_refused(
    tmp_path: Path, release_cohort, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(KEY_ENV, raising=False)
    store = _store(tmp_path, release_cohort)
    info = resolve(store, "demo@v1")
    attach_report(store, info, "evaluation", _section("AUC 0.91"))
    section = Path(store.path("demo", "reports", "v1", "evaluation", "section.md"))
    section.chmod(0o644)
    section.write_bytes(b"## Evaluation\n\nAUC 0.99 (edited)\n")
    with pytest.raises(TamperedObjectError, match="modified after"):
        full_card(store, info)
    with pytest.raises(StoreError, match="no file"):
        read_report_file(store, info, "evaluation", "model.pt")
    with pytest.raises(StoreError, match="no augmentation report"):
        read_report(store, info, "augmentation")
    with pytest.raises(StoreError, match="may not hold"):
        attach_report(store, info, "evaluation", {"../x.md": b""})
    with pytest.raises(StoreError, match="invalid report kind"):
        attach_report(store, info, "Bad Kind", {})
    # a report copied from another version's folder names that version: refused
    other = type(info)(info.dataset, "v2", "0" * 64, info.n_samples, info.files, "v1")
    attach_report(store, other, "evaluation", _section("v2"))
    src = Path(store.path("demo", "reports", "v2", "evaluation"))
    dst = Path(store.path("demo", "reports", "v1", "evaluation"))
    for p in dst.iterdir():
        p.chmod(0o644)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    with pytest.raises(TamperedObjectError, match="another version"):
        read_report(store, info, "evaluation")


def test_signed_reports_under_a_store_key(tmp_path: Path, release_cohort, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(KEY_ENV, KEY)
    store = _store(tmp_path, release_cohort, f"memory://reports-{uuid.uuid4().hex}")
    info = resolve(store, "demo@v1")
    attach_report(store, info, "evaluation", _section("signed"))
    assert "signed" in full_card(store, info)
    monkeypatch.setenv(KEY_ENV, KEY[::-1] + "Zq")
    with pytest.raises(SignatureError):
        read_report(store, info, "evaluation")
    monkeypatch.delenv(KEY_ENV)
    attach_report(store, info, "evaluation", _section("unsigned"))
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(SignatureError, match="unsigned"):
        read_report(store, info, "evaluation")
