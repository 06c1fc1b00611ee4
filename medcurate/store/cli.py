"""``medcurate datasets list / show / pull / diff``: the scientist's door to released versions.

Errors are one line on stderr, never a traceback: exit status 2 when the store itself cannot be
used (unknown protocol, no store at that path, an unusable store key: the user's setup to fix),
1 when the store answered but the request failed (no such version, tampered or unsigned data).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from medcurate.store.objects import StoreError, StoreUnavailableError, open_store
from medcurate.store.signing import StoreKeyError

datasets_app = typer.Typer(
    name="datasets",
    help="List, show, pull and diff immutable dataset versions.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

StoreOpt = typer.Option(
    None,
    "--store",
    help="store root: a folder or fsspec URL (default $MEDCURATE_STORE, else "
    "$MEDCURATE_HOME/releases)",
)


def _fail(exc: Exception) -> typer.Exit:
    line = " ".join(str(exc).split())
    typer.echo(f"error: {line}", err=True)
    return typer.Exit(2 if isinstance(exc, StoreUnavailableError | StoreKeyError) else 1)


@datasets_app.command("list")
def list_cmd(store: str | None = StoreOpt) -> None:
    """Datasets and their versions (id = vN-<manifest digest>)."""
    # lazy here and below: pandas and pyarrow would slow every `medcurate` command's start
    from medcurate.store.publish import list_datasets, list_versions

    try:
        s = open_store(store, must_exist=True)
        names = list_datasets(s)
        if not names:
            typer.echo(f"no datasets in {s.url}")
            return
        for name in names:
            for info in list_versions(s, name):
                typer.echo(f"{info.ref}\t{info.id}\t{info.n_samples} samples")
    except StoreError as exc:
        raise _fail(exc) from None


@datasets_app.command("show")
def show_cmd(
    ref: str = typer.Argument(..., help="NAME or NAME@vN"),
    store: str | None = StoreOpt,
    card: bool = typer.Option(
        False, "--card", help="print the dataset card too (card.md and attached reports)"
    ),
) -> None:
    """Counts per split and label, the digest, and optionally the datasheet."""
    from medcurate.store.publish import resolve, version_summary
    from medcurate.store.reports import full_card

    try:
        s = open_store(store, must_exist=True)
        info = resolve(s, ref)
        typer.echo(json.dumps(version_summary(s, info), indent=2))
        if card and "card.md" in info.files:
            typer.echo(full_card(s, info))
    except StoreError as exc:
        raise _fail(exc) from None


@datasets_app.command("pull")
def pull_cmd(
    ref: str = typer.Argument(..., help="NAME@vN (or NAME for the newest)"),
    dest: Path = typer.Argument(..., help="folder to pull into"),
    fmt: str = typer.Option("nifti", "--format", "-f", help="layout: nifti or nnunet"),
    store: str | None = StoreOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Pull a version, verifying every sha256; reuses files of sibling pulls."""
    from medcurate.store.pull import pull

    try:
        res = pull(open_store(store, must_exist=True), ref, dest, fmt=fmt, progress=not quiet)
    except StoreError as exc:
        raise _fail(exc) from None
    except OSError as exc:  # the destination: not writable, disk full
        raise _fail(OSError(f"cannot write the pull to {dest}: {exc.strerror}")) from None
    typer.echo(res.summary_line())


@datasets_app.command("diff")
def diff_cmd(
    ref_a: str = typer.Argument(..., help="NAME@vA"),
    ref_b: str = typer.Argument(..., help="NAME@vB"),
    store: str | None = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Samples added, removed, relabelled, moved split, and files changed."""
    from medcurate.store.diff import diff_versions

    try:
        d = diff_versions(open_store(store, must_exist=True), ref_a, ref_b)
    except StoreError as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps(d.to_dict(), indent=2, default=str) if as_json else d.format())
