"""The figures server answers plots and cards of the PHI-free zones, and nothing else."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from medcurate.config import Zones
from medcurate.services import figures
from medcurate.services.labelstudio import free_port

PNG = b"\x89PNG\r\n\x1a\nnot really"


@pytest.fixture
def served(zones_tmp: Zones) -> Iterator[tuple[Zones, figures.FiguresServer]]:
    server = figures.start(zones_tmp.home, free_port())
    try:
        yield zones_tmp, server
    finally:
        server.stop()


def _get(server: figures.FiguresServer, path: str) -> tuple[int, bytes, str]:
    host, port = server.httpd.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    conn.request("GET", path)  # sent as written: no client-side normalisation of ".."
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body, resp.getheader("Content-Type") or ""


def test_urls_only_for_servable_files(zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(figures.ENV_URL, raising=False)
    plot = zones_tmp.curated / "figures" / "balance-abc.png"
    assert figures.figure_url(zones_tmp, plot) == (
        "http://127.0.0.1:3001/curated/figures/balance-abc.png"
    )
    card = zones_tmp.releases / "ds" / "v1" / "card.md"
    monkeypatch.setenv(figures.ENV_URL, "http://127.0.0.1:9999/")
    assert figures.figure_url(zones_tmp, card) == "http://127.0.0.1:9999/releases/ds/v1/card.md"
    url = "http://127.0.0.1:9999/curated/figures/balance-abc.png"
    assert figures.image_markdown(zones_tmp, plot, "balance") == f"[![balance]({url})]({url})"
    for refused in (
        zones_tmp.restricted / "x.png",  # not a PHI-free zone
        zones_tmp.volumes / "x.png",
        zones_tmp.curated / "samples.parquet",  # not a figure or card
        zones_tmp.releases / "ds" / ".staging" / "card.md",  # hidden
        zones_tmp.home.parent / "elsewhere.png",
    ):
        assert figures.figure_url(zones_tmp, refused) is None, refused
    assert figures.image_markdown(zones_tmp, zones_tmp.restricted / "x.png", "a") == ""


def test_serves_figures_and_cards(served: tuple[Zones, figures.FiguresServer]) -> None:
    z, server = served
    assert server.httpd.server_address[0] == "127.0.0.1"
    (z.curated / "figures").mkdir(parents=True)
    (z.curated / "figures" / "balance-abc.png").write_bytes(PNG)
    (z.releases / "ds" / "v1").mkdir(parents=True)
    (z.releases / "ds" / "v1" / "card.md").write_text("# ds v1\n")
    assert _get(server, "/curated/figures/balance-abc.png") == (200, PNG, "image/png")
    status, body, ctype = _get(server, "/releases/ds/v1/card.md")
    assert (status, body) == (200, b"# ds v1\n") and ctype.startswith("text/markdown")


def test_refuses_everything_else(served: tuple[Zones, figures.FiguresServer]) -> None:
    z, server = served
    z.restricted.mkdir(exist_ok=True)
    (z.restricted / "secret.png").write_bytes(b"phi")
    z.curated.mkdir(exist_ok=True)
    (z.curated / "samples.parquet").write_bytes(b"table")
    (z.curated / "link.png").symlink_to(z.restricted / "secret.png")
    (z.releases / "ds" / ".staging").mkdir(parents=True)
    (z.releases / "ds" / ".staging" / "card.md").write_text("half written")
    (z.curated / "dir.png").mkdir()
    for path in (
        "/restricted/secret.png",
        "/curated/../restricted/secret.png",
        "/curated/%2e%2e/restricted/secret.png",
        "/curated/link.png",  # a symlink out of its zone
        "/curated/samples.parquet",
        "/releases/ds/.staging/card.md",
        "/curated/dir.png",
        "/curated/",
        "/",
    ):
        status, body, _ = _get(server, path)
        assert status == 404, path
        assert b"phi" not in body and b"table" not in body
