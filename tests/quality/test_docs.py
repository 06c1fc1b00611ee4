"""Data Docs: a page per suite run and per table, an index of the latest runs, styled offline."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from quality.docs import INDEX, LATEST, write_docs
from quality.runner import Outcome, SuiteResult

URL = re.compile(r"https?://", re.IGNORECASE)


def _result(table: str, ok: bool = True, key: str = "") -> SuiteResult:
    outcomes = [
        Outcome("modality_in_allowed_set", "ERROR", ok, {"unexpected_count": 0 if ok else 2},
                "modality_in_allowed_set: passed" if ok else "modality_in_allowed_set: failed <b>"),
        Outcome("site_drift", "WARN", False, {"z": 4.2}, "site_drift: site S2 drifts"),
    ]  # fmt: skip
    return SuiteResult(table, outcomes, rows=5, key=key)


def test_a_page_per_table_and_an_index_without_external_urls(tmp_path: Path) -> None:
    pages = {t: write_docs(_result(t, ok=(t != "labels")), tmp_path) for t in ("catalog", "labels")}
    volumes = write_docs(_result("volumes", key="b20260101-abc"), tmp_path)
    for page in (*pages.values(), volumes):
        assert page.is_file() and page.suffix == ".html"
    for table in ("catalog", "labels", "volumes"):
        assert (tmp_path / table / LATEST).is_file()
    assert (tmp_path / "volumes" / "b20260101-abc" / LATEST).is_file()
    index = (tmp_path / INDEX).read_text()
    for table in ("catalog", "labels", "volumes"):
        assert f">{table}</a>" in index
    assert "FAILED" in index and "passed with warnings" in index
    for html in tmp_path.rglob("*.html"):
        text = html.read_text()
        assert not URL.search(text), html
        assert "<style>" in text  # the stylesheet is inlined
    page = pages["labels"].read_text()
    assert "site_drift" in page and "&lt;b&gt;" in page  # every expectation, escaped


def test_links_of_the_index_resolve(tmp_path: Path) -> None:
    write_docs(_result("catalog"), tmp_path)
    write_docs(_result("annotations", key="round-1"), tmp_path)
    index = (tmp_path / INDEX).read_text()
    for href in re.findall(r'href="([^"]+)"', index):
        assert (tmp_path / href).is_file(), href


def test_the_latest_run_replaces_the_table_row_in_the_index(tmp_path: Path) -> None:
    write_docs(_result("splits", ok=False), tmp_path)
    write_docs(_result("splits", ok=True), tmp_path)
    index = (tmp_path / INDEX).read_text()
    assert index.count(">splits</a>") == 1 and "FAILED" not in index


@pytest.mark.slow
def test_a_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if chromium is None:
        pytest.skip("chromium is not installed (the no-URL test covers offline styling)")
    page = write_docs(_result("catalog"), tmp_path)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=1200,800", page.as_uri()],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 1000
