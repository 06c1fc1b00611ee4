"""Data Docs: one HTML page per suite run and an index of each table's latest run, styled offline.

GX's own Data Docs load their CSS and JavaScript from CDNs, unreachable where this runs; these
pages are written from our :class:`~quality.runner.SuiteResult` with the stylesheet shipped in
``quality/data/docs.css`` inlined, so they hold no http(s) URL at all. Layout under
``$MEDCURATE_HOME/quality/docs/``::

    index.html                          latest run of each table (with its partition)
    <table>/latest.html                 the latest run of the table (of any partition)
    <table>/<key>/latest.html           the latest run of one partition (batch or round)
    <table>/[<key>/]<UTC time>.html     every run
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from medcurate.io import atomic_write_text
from medcurate.locks import exclusive

if TYPE_CHECKING:
    from quality.runner import SuiteResult

CSS = Path(__file__).parent / "data" / "docs.css"
INDEX = "index.html"
LATEST = "latest.html"
_RUNS_JSON = "runs.json"  # the index's source: table -> its latest run
_SAFE_KEY = re.compile(r"[^A-Za-z0-9_.+-]")


def _css() -> str:
    return CSS.read_text(encoding="utf-8")


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>\n{_css()}\n</style></head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def _state(result: SuiteResult) -> tuple[str, str]:
    if result.problems:
        return "fail", "FAILED"
    if result.warnings:
        return "warn", "passed with warnings"
    if not result.outcomes:
        return "none", "not materialized"
    return "pass", "passed"


def render_page(result: SuiteResult, when: str) -> str:
    """The HTML of one suite run: a summary and a table of every expectation."""
    from quality.runner import format_observed

    cls, state = _state(result)
    c = result.counts()
    where = f"{result.table} {result.key}".strip()
    rows = [
        "<tr><th>expectation</th><th>severity</th><th>result</th>"
        "<th>observed</th><th>message</th></tr>"
    ]
    for o in result.outcomes:
        ok = "pass" if o.success else ("fail" if o.severity == "ERROR" else "warn")
        rows.append(
            f'<tr class="{ok}"><td><code>{html.escape(o.expectation)}</code></td>'
            f"<td>{o.severity}</td><td>{'pass' if o.success else 'FAIL'}</td>"
            f"<td>{html.escape(format_observed(o))}</td><td>{html.escape(o.message)}</td></tr>"
        )
    body = (
        f'<p class="summary {cls}"><b>{html.escape(state)}</b>: '
        f"{c['passed']} of {c['expectations']} expectations passed, "
        f"{c['failed_errors']} error(s), {c['failed_warnings']} warning(s)"
        + (f", {result.rows} rows" if result.rows is not None else "")
        + f". Run at {html.escape(when)}.</p>\n"
        '<p class="note">ERROR failures stop every downstream asset; WARN failures are reported '
        'only. <a href="../' + ("../" if result.key else "") + INDEX + '">All tables</a></p>\n'
        f"<table>\n{chr(10).join(rows)}\n</table>"
    )
    return _page(f"Data quality: {where}", body)


def render_index(runs: dict[str, dict[str, object]]) -> str:
    """The index: one row per table with its latest run's state and a link to its page."""
    rows = ["<tr><th>table</th><th>partition</th><th>state</th><th>expectations</th>"
            "<th>errors</th><th>warnings</th><th>rows</th><th>run at</th></tr>"]  # fmt: skip
    for table in sorted(runs):
        r = runs[table]
        link = html.escape(str(r["page"]))
        rows.append(
            f'<tr class="{html.escape(str(r["class"]))}">'
            f'<td><a href="{link}">{html.escape(table)}</a></td>'
            f"<td>{html.escape(str(r.get('key') or ''))}</td>"
            f"<td>{html.escape(str(r['state']))}</td><td>{r['expectations']}</td>"
            f"<td>{r['failed_errors']}</td><td>{r['failed_warnings']}</td>"
            f"<td>{'' if r.get('rows') is None else r['rows']}</td>"
            f"<td>{html.escape(str(r['when']))}</td></tr>"
        )
    body = (
        '<p class="note">The latest run of each table\'s suite. ERROR failures stop every '
        "downstream asset; WARN failures are reported only.</p>\n"
        f"<table>\n{chr(10).join(rows)}\n</table>"
    )
    return _page("Data quality: latest runs", body)


def write_docs(result: SuiteResult, docs_dir: Path, now: datetime | None = None) -> Path:
    """Write the run's page (and the table's and partition's ``latest.html``) and refresh the
    index; returns the run's page."""
    now = now or datetime.now(UTC)
    when = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    folder = docs_dir / result.table
    if result.key:
        folder = folder / _SAFE_KEY.sub("_", result.key)
    folder.mkdir(parents=True, exist_ok=True)
    page = render_page(result, when)
    run_page = folder / f"{now.strftime('%Y%m%dT%H%M%S%fZ')}.html"
    atomic_write_text(run_page, page)
    atomic_write_text(folder / LATEST, page)
    if result.key:  # the table's latest, whatever its partition: links go one level further up
        atomic_write_text(
            docs_dir / result.table / LATEST, page.replace('href="../../', 'href="../')
        )

    with exclusive(docs_dir / ".index.lock"):  # checks of several runs share the index
        _update_index(docs_dir, result, run_page, when)
    return run_page


def _update_index(docs_dir: Path, result: SuiteResult, run_page: Path, when: str) -> None:
    runs_file = docs_dir / _RUNS_JSON
    try:
        runs = json.loads(runs_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        runs = {}
    cls, state = _state(result)
    runs[result.table] = {
        "page": run_page.relative_to(docs_dir).as_posix(),
        "key": result.key,
        "class": cls,
        "state": state,
        "when": when,
        "rows": result.rows,
        **result.counts(),
    }
    atomic_write_text(runs_file, json.dumps(runs, indent=1, sort_keys=True))
    atomic_write_text(docs_dir / INDEX, render_index(runs))
