"""Browser fixtures: one headless Debian chromium per pytest worker, driven by Playwright.

Playwright cannot download its own browsers here (closed network), so it drives the system's
chromium (``make browser`` installs it) with the flags that keep it off the network. Screenshots
go to ``$MEDCURATE_SCREENSHOTS`` when set (``make screenshots`` sets docs/img, the README's
pictures), else to the test's own tmp_path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """A headless chromium for the worker's session (a playwright ``Browser``)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    """A fresh context (own cookies) and page per test; the same viewport every time."""
    context = browser.new_context(
        viewport=VIEWPORT, device_scale_factor=1, locale="en-US", timezone_id="UTC"
    )
    # Dagster's "join the community" pop-up (shown on localhost) stays closed, as once dismissed
    context.add_init_script("window.localStorage.setItem('communityNux', '1')")
    context.set_default_timeout(30_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where a test saves its screenshots: $MEDCURATE_SCREENSHOTS, else its tmp_path."""
    out = Path(os.environ.get("MEDCURATE_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out
