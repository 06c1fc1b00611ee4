"""A small read-only web server for plots and cards, so Dagster's UI shows them inline.

Dagster 1.13 shows a markdown metadata entry inline only when it is shorter than 1000 characters;
a plot inlined as a base64 data URL is far longer and lands behind "[Show Markdown]". Metadata
therefore holds ``![balance](http://127.0.0.1:3001/curated/figures/balance-<sha>.png)`` and this
server (started by ``medcurate ui``) answers it.

What it serves, and nothing else: GET/HEAD of ``.png``, ``.svg`` and ``.md`` files under the
home's PHI-free zones (:data:`ZONES`), never a hidden file or folder (``.staging``, locks), never
a path that resolves outside its zone (``..``, symlinks), never a folder listing. It binds
127.0.0.1 and logs nothing (paths are pseudonymous, but there is no need to repeat them).
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from medcurate.config import Zones

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3001
ENV_URL = "MEDCURATE_FIGURES_URL"
#: zones below MEDCURATE_HOME free of patient-identifying information (DESIGN.md "Data zones")
ZONES = ("curated", "releases", "evaluation")
CONTENT_TYPES = {
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".md": "text/markdown; charset=utf-8",
}


def base_url(env: Mapping[str, str] | None = None) -> str:
    """Where the figures server answers (MEDCURATE_FIGURES_URL, default 127.0.0.1:3001)."""
    env = os.environ if env is None else env
    return (env.get(ENV_URL) or f"http://{DEFAULT_HOST}:{DEFAULT_PORT}").rstrip("/")


def figure_url(zones: Zones, path: Path, env: Mapping[str, str] | None = None) -> str | None:
    """The URL the server gives ``path`` under, or None when it would not serve it."""
    rel = _servable(zones.home, path)
    if rel is None:
        return None
    return f"{base_url(env)}/{urllib.parse.quote(rel.as_posix())}"


def image_markdown(zones: Zones, path: Path, alt: str) -> str:
    """``[![alt](URL)](URL)``: short enough for Dagster to show inline, and a click opens the
    picture at full size ('' when not servable)."""
    url = figure_url(zones, path)
    return f"[![{alt}]({url})]({url})" if url else ""


def _servable(home: Path, path: Path) -> Path | None:
    """``path`` relative to ``home`` when it is a file the server may serve, else None."""
    if path.suffix.lower() not in CONTENT_TYPES:
        return None
    rel = path
    if path.is_absolute():
        for root in (home, home.resolve()):
            if path.is_relative_to(root):
                rel = path.relative_to(root)
                break
        else:
            return None
    parts = rel.parts
    if not parts or parts[0] not in ZONES or any(p.startswith(".") or p == ".." for p in parts):
        return None
    zone = (home / parts[0]).resolve()
    if not (home / rel).resolve().is_relative_to(zone):  # a symlink may not lead out of its zone
        return None
    return Path(*parts)


class _Handler(BaseHTTPRequestHandler):
    home: Path  # set on the subclass made per server
    server_version = "medcurate-figures"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        raw = urllib.parse.urlsplit(self.path).path
        rel = _servable(self.home, Path(urllib.parse.unquote(raw).lstrip("/")))
        file = self.home / rel if rel is not None else None
        if file is None or not file.is_file():
            self.send_error(HTTPStatus.NOT_FOUND, "not found")
            return
        data = file.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPES[file.suffix.lower()])
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        # an SVG is a document: no script, no fetch, styles inline only
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: requests are not worth a line each."""


@dataclass
class FiguresServer:
    """A running figures server (a daemon thread of this process)."""

    httpd: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def start(home: Path, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST) -> FiguresServer:
    """Serve ``home``'s figures on host:port in a background thread (OSError when busy)."""
    handler = type("FiguresHandler", (_Handler,), {"home": home.resolve()})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="figures", daemon=True)
    thread.start()
    return FiguresServer(httpd, thread)
