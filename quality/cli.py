"""``medcurate quality run [--table NAME]``: the quality suites outside Dagster.

Registered through the ``medcurate.commands`` entry point group (``quality = quality.cli:app``);
the core CLI imports nothing of this room. Heavy imports (pandas, great_expectations) stay inside
the command: ``medcurate --help`` loads this module.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="quality",
    help="Data-quality gates: run the expectation suites on the tables of MEDCURATE_HOME.",
    no_args_is_help=True,
)

TABLES = ("catalog", "deid", "volumes", "annotations", "labels", "splits", "release")


@app.command("run")
def run(
    table: list[str] = typer.Option(
        [], "--table", "-t", help=f"table to check (repeatable; default all): {', '.join(TABLES)}"
    ),
    key: str = typer.Option(
        "", "--key", "-k", help="one batch (catalog, deid, volumes) or round (annotations)"
    ),
    store: str = typer.Option("", "--store", help="release store URL (default MEDCURATE_STORE)"),
    dataset: str = typer.Option("", "--dataset", help="released dataset (default medcurate-demo)"),
) -> None:
    """Run the suites; one line per table. Exit 1 when an ERROR expectation failed (WARN and
    tables not materialized yet do not fail)."""
    unknown = [t for t in table if t not in TABLES]
    if unknown:
        raise typer.BadParameter(
            f"unknown table(s) {', '.join(unknown)}; known: {', '.join(TABLES)}",
            param_hint="--table",
        )
    from medcurate.config import zones  # lazy: the checks load pandas and great_expectations
    from quality.runner import check_table, load_config

    z = zones().ensure()
    config = load_config()
    failed = False
    for name in table or TABLES:
        result = check_table(z, name, key, config=config, store_url=store, dataset=dataset)
        print(result.summary_line())
        for msg in result.problems:
            print(f"  ERROR {msg}")
        for msg in result.warnings:
            print(f"  WARN  {msg}")
        failed = failed or bool(result.problems)
    index = z.quality_docs / "index.html"
    if index.is_file():
        print(f"Data Docs: {index}")
    if failed:
        raise typer.Exit(1)
