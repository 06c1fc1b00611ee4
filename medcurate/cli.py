"""The ``medcurate`` command line. Heavy imports stay inside the commands that need them."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    name="medcurate",
    help="Curate DICOM into de-identified, labelled, versioned datasets.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.command("init-home")
def init_home(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only permission fixes"),
) -> None:
    """Create the data zones and the Dagster instance config under MEDCURATE_HOME.

    Also makes restricted/, dagster/ and labelstudio/ owner-only when an older version left them
    readable by others (other commands refuse to run on such a home)."""
    import sys

    from medcurate.home import init_home as _init

    ready, *fixes = _init().splitlines()
    if not quiet:
        print(ready)
    for line in fixes:  # on stderr: `make setup` hides stdout, not this
        print(f"medcurate: {line.strip()}", file=sys.stderr)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="folder to write the DICOM studies into"),
    patients: int = typer.Option(12, "--patients", "-n", min=1, help="number of patients"),
    seed: int = typer.Option(0, "--seed", "-s", help="random seed; same seed, same bytes"),
    truth: Path | None = typer.Option(
        None, "--truth", help="folder for ground truth (lesion masks, labels table); never OUT"
    ),
) -> None:
    """Generate realistic, PHI-laden CT/MR/CR studies with known findings."""
    from medcurate.synth import generate_studies

    print(generate_studies(out, patients=patients, seed=seed, truth=truth))


@app.command()
def ingest(
    src: Path | None = typer.Argument(
        None, help="folder to drop into the inbox first (default: ingest what is in the inbox)"
    ),
) -> None:
    """Claim the inbox as one batch and validate it, without Dagster (one-off use).

    Batches claimed earlier but never finished (a run killed after its claim) are finished too.
    """
    import sys

    from medcurate.config import zones
    from medcurate.ingest import (
        IngestMoveError,
        claim_inbox,
        drop_into_inbox,
        ingest_batch,
        pending_batches,
    )

    z = zones().ensure()
    if src is not None:
        drop_into_inbox(src, z)
    claim_inbox(z)
    batches = pending_batches(z)  # the new batch, and any a killed run left behind
    if not batches:
        print("inbox empty: nothing to ingest")
        raise typer.Exit(0)
    failed = False
    for batch in batches:
        try:
            print(ingest_batch(batch, z).summary_line())
        except IngestMoveError as exc:  # names the batch and file numbers, never a path
            print(f"medcurate: error: {exc}", file=sys.stderr)
            failed = True
    if failed:
        raise typer.Exit(1)


@app.command()
def deid(
    src: Path = typer.Argument(..., help="folder of DICOM files, read recursively"),
    dst: Path = typer.Argument(..., help="folder for de-identified files and deid.parquet"),
    restricted: Path = typer.Option(
        ..., "--restricted", help="folder for quarantined originals, reasons.csv and crosswalk"
    ),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="worker processes"),
) -> None:
    """De-identify DICOM to PS3.15 Annex E (salt from MEDCURATE_DEID_SALT)."""
    from medcurate.config import deid_salt
    from medcurate.deid import deidentify_tree

    salt = deid_salt()  # fails before any file is touched
    print(deidentify_tree(src, dst, restricted, salt=salt, workers=workers).summary_line())


@app.command()
def normalize(
    src: Path = typer.Argument(..., help="folder of de-identified DICOM, read recursively"),
    dst: Path = typer.Argument(..., help="folder for NIfTI volumes and volumes.parquet"),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="worker processes"),
) -> None:
    """Assemble series and write normalized NIfTI volumes (same code as the asset)."""
    from medcurate.normalize import normalize_tree

    print(normalize_tree(src, dst, workers=workers).summary_line())


def _register_datasets() -> None:
    try:
        from medcurate.store.cli import datasets_app
    except ImportError:  # the store lands with its own issue
        return
    app.add_typer(datasets_app, name="datasets", help="List, show, pull and diff dataset versions.")


_register_datasets()

labelstudio_app = typer.Typer(no_args_is_help=True, help="Run the local Label Studio server.")
app.add_typer(labelstudio_app, name="labelstudio")


@labelstudio_app.command("install")
def labelstudio_install() -> None:
    """Install the pinned server into .venv-labelstudio and build its database template."""
    from medcurate.services.labelstudio import ensure_installed

    print(f"label studio installed in {ensure_installed()}")


@labelstudio_app.command("start")
def labelstudio_start(
    port: int = typer.Option(8080, "--port", "-p", help="port on the host; refused if busy"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind"),
) -> None:
    """Start Label Studio for MEDCURATE_HOME (admin and token from env or restricted/)."""
    from medcurate.services.labelstudio import LabelStudioError, ServicePaths, start

    try:
        server = start(port=port, host=host)
    except LabelStudioError as exc:
        print(f"medcurate: error: {exc}")
        raise typer.Exit(1) from None
    print(f"label studio: {server.url} (pid {server.pid}); credentials: env LABEL_STUDIO_* or")
    print(f"  {ServicePaths(server.home).credentials_file}")


@labelstudio_app.command("stop")
def labelstudio_stop() -> None:
    """Stop the Label Studio server of MEDCURATE_HOME."""
    from medcurate.services.labelstudio import stop

    print("label studio: stopped" if stop() else "label studio: was not running")


@labelstudio_app.command("status")
def labelstudio_status() -> None:
    """Say whether the server of MEDCURATE_HOME runs and answers."""
    from medcurate.services.labelstudio import status

    st = status()
    print(st.line())
    raise typer.Exit(0 if st.healthy or not st.running else 1)


@app.command("annotate-sim")
def annotate_sim(
    round_number: int = typer.Option(..., "--round", "-r", min=1, help="round N (round-N)"),
    annotators: int = typer.Option(3, "--annotators", "-k", min=1, help="simulated annotators"),
    noise: str = typer.Option("moderate", "--noise", help="none, low, moderate or high"),
    truth: Path | None = typer.Option(
        None, "--truth", help="the generator's truth folder (default: restricted/demo-truth/*)"
    ),
    seed: int = typer.Option(0, "--seed", "-s", help="seed of the annotators' noise"),
) -> None:
    """Simulated annotators sign up in Label Studio and label round N from ground truth."""
    from annotation.simulate import annotate_round  # lazy: the CLI core needs no annotation

    print(annotate_round(round_number, annotators, noise, truth=truth, seed=seed))


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: shown as one line, not as a traceback."""
    from medcurate.config import ConfigError
    from medcurate.perms import PermissionsError

    types: list[type[BaseException]] = [
        ConfigError,
        PermissionsError,
        FileNotFoundError,
        NotADirectoryError,
    ]
    try:
        from medcurate.splits import SplitError
        from medcurate.store.manifest import ManifestError
        from medcurate.store.objects import StoreError

        types += [StoreError, ManifestError, SplitError]
    except ImportError:
        pass
    return tuple(types)


def _os_error_line(exc: OSError) -> str:
    """One line for a failed file operation, without ``exc.filename``: a source path's folder
    names carry patient names. MEDCURATE_HOME is the user's own setting and is named."""
    from medcurate.config import medcurate_home

    cause = exc.strerror or type(exc).__name__
    return (
        f"{cause} (file operation failed; path not shown, folder names may identify patients): "
        f"check that MEDCURATE_HOME {medcurate_home()} is writable and the input readable"
    )


def main() -> None:
    """Console entry point: clear one-line errors for bad input, exit status 2.

    Errors that carry a file name (every OSError raised by the OS) are shown without it."""
    import sys

    try:
        app()
    except Exception as exc:
        raised_by_os = isinstance(exc, OSError) and (
            exc.errno is not None or exc.filename is not None or exc.filename2 is not None
        )
        if raised_by_os:
            line = _os_error_line(exc)  # type: ignore[arg-type]
        elif isinstance(exc, (*_user_error_types(), OSError)):
            line = str(exc)
        else:
            raise
        print(f"medcurate: error: {line}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
