"""The ``medcurate`` command line. Heavy imports stay inside the commands that need them.

Rooms above the core add their own commands through the ``medcurate.commands`` entry point group
(e.g. ``annotate-sim`` from :mod:`annotation.cli`): the core imports none of them.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path

import typer

from medcurate.config import ConfigError, deid_salt, medcurate_home, zones
from medcurate.home import init_home as _init_home
from medcurate.pacs.cli import pacs_app
from medcurate.perms import PermissionsError, private_tree
from medcurate.services import labelstudio as ls
from medcurate.services.postgres_cli import postgres_app, profile_app
from medcurate.services.redis_cli import redis_app
from medcurate.store.cli import datasets_app
from medcurate.store.objects import StoreError

#: entry point group of commands other rooms add (name = command name; value = a function, which
#: becomes a command, or a ``typer.Typer``, which becomes a command group)
COMMANDS_GROUP = "medcurate.commands"

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
    ready, *fixes = _init_home().splitlines()
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
    """Generate realistic, PHI-laden CT/MR/CR studies with known findings (the ground truth
    owner-only, whatever the umask: the demo keeps it in restricted/)."""
    from medcurate.synth import generate_studies  # heavy: numpy, pydicom

    print(generate_studies(out, patients=patients, seed=seed, truth=truth))
    if truth is not None:
        private_tree(truth)


@app.command()
def ingest(
    src: Path | None = typer.Argument(
        None, help="folder to drop into the inbox first (default: ingest what is in the inbox)"
    ),
) -> None:
    """Claim the inbox as one batch and validate it, without Dagster (one-off use).

    Batches claimed earlier but never finished (a run killed after its claim) are finished too.
    """
    from medcurate.ingest import (  # heavy: pydicom, pandas
        IngestMoveError,
        claim_inbox,
        drop_into_inbox,
        pending_batches,
        run_ingest,
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
            print(run_ingest(z, batch).summary_line())
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
    from medcurate.deid import deidentify_tree  # heavy: pydicom, dicognito, pandas

    salt = deid_salt()  # fails before any file is touched
    print(deidentify_tree(src, dst, restricted, salt=salt, workers=workers).summary_line())


@app.command()
def normalize(
    src: Path = typer.Argument(..., help="folder of de-identified DICOM, read recursively"),
    dst: Path = typer.Argument(..., help="folder for NIfTI volumes and volumes.parquet"),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="worker processes"),
) -> None:
    """Assemble series and write normalized NIfTI volumes (same code as the asset)."""
    from medcurate.normalize import normalize_tree  # heavy: pydicom, pandas (MONAI later)

    print(normalize_tree(src, dst, workers=workers).summary_line())


@app.command()
def evaluate(
    ref: str = typer.Argument(..., help="NAME@vN (or NAME, NAME@latest) of a released version"),
    store: str | None = typer.Option(
        None, "--store", help="dataset store: folder or fsspec URL (default $MEDCURATE_STORE)"
    ),
    preset: str = typer.Option("small", "--preset", help="small (this CPU, minutes) or full"),
    seed: int = typer.Option(0, "--seed", help="seed of training and bootstrap"),
    attach: bool = typer.Option(
        True, "--attach/--no-attach", help="attach the report to the version's dataset card"
    ),
) -> None:
    """Train baselines on a release, report sensitivity/specificity/AUC/Dice with 95% CIs per
    subgroup and Grad-CAM, and attach the report to the version's dataset card."""
    from medcurate.evaluate.run import EvaluateSettings, run_evaluation  # heavy: torch, MONAI
    from medcurate.store.publish import parse_ref

    name, version = parse_ref(ref)
    settings = EvaluateSettings(name, version or "latest", store or "", preset, seed, attach)
    result = run_evaluation(zones(), settings)
    print(result.summary_line())
    for flag in result.problems:
        print(f"  WARN {flag}")
    print(f"report: {result.folder / 'evaluation.md'}")


app.add_typer(datasets_app, name="datasets", help="List, show, pull and diff dataset versions.")

app.add_typer(pacs_app, name="pacs")
app.add_typer(postgres_app, name="postgres")
app.add_typer(profile_app, name="profile")
app.add_typer(redis_app, name="redis")

labelstudio_app = typer.Typer(no_args_is_help=True, help="Run the local Label Studio server.")
app.add_typer(labelstudio_app, name="labelstudio")


@labelstudio_app.command("install")
def labelstudio_install() -> None:
    """Install the pinned server into .venv-labelstudio and build its database template."""
    print(f"label studio installed in {ls.ensure_installed()}")


@labelstudio_app.command("start")
def labelstudio_start(
    port: int = typer.Option(8080, "--port", "-p", help="port on the host; refused if busy"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind"),
) -> None:
    """Start Label Studio for MEDCURATE_HOME (admin and token from env or restricted/)."""
    try:
        server = ls.start(port=port, host=host)
    except ls.LabelStudioError as exc:
        print(f"medcurate: error: {exc}")
        raise typer.Exit(1) from None
    print(f"label studio: {server.url} (pid {server.pid}); credentials: env LABEL_STUDIO_* or")
    print(f"  {ls.ServicePaths(server.home).credentials_file}")


@labelstudio_app.command("stop")
def labelstudio_stop() -> None:
    """Stop the Label Studio server of MEDCURATE_HOME."""
    print("label studio: stopped" if ls.stop() else "label studio: was not running")


@labelstudio_app.command("status")
def labelstudio_status() -> None:
    """Say whether the server of MEDCURATE_HOME runs and answers."""
    st = ls.status()
    print(st.line())
    raise typer.Exit(0 if st.healthy or not st.running else 1)


@app.command()
def ui(
    dagster_port: int = typer.Option(3000, "--dagster-port", help="Dagster UI port"),
    figures_port: int = typer.Option(3001, "--figures-port", help="figures server port"),
    labelstudio_port: int = typer.Option(
        8080, "--labelstudio-port", help="Label Studio port (a free one when busy)"
    ),
) -> None:
    """Start Dagster's UI, Label Studio and the figures server together; Ctrl-C stops them."""
    from medcurate.services.ui import UiError, UiSettings, run_ui

    settings = UiSettings(medcurate_home(), dagster_port, figures_port, labelstudio_port)
    try:
        code = run_ui(settings)
    except (ls.LabelStudioError, UiError) as exc:
        print(f"medcurate: error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def register_plugins(target: typer.Typer | None = None) -> list[str]:
    """Add the commands declared under the ``medcurate.commands`` entry point group to ``target``
    (the ``medcurate`` app); returns their names. A command that fails to load is left out with a
    one-line warning on stderr, so one broken room does not take the whole CLI down."""
    target = app if target is None else target
    added: list[str] = []
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        if ep.name in added:  # the same distribution seen twice on sys.path
            continue
        try:
            command = ep.load()
        except Exception as exc:
            print(f"medcurate: warning: command {ep.name} not loaded ({exc!r})", file=sys.stderr)
            continue
        if isinstance(command, typer.Typer):
            target.add_typer(command, name=ep.name)
        else:
            target.command(ep.name)(command)
        added.append(ep.name)
    return added


register_plugins()  # after the core's commands: `medcurate --help` lists them first


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: shown as one line, not as a traceback. Imported only
    when a command failed: splits and the manifest load pandas."""
    from medcurate.evaluate import EvaluationError
    from medcurate.splits import SplitError
    from medcurate.store.manifest import ManifestError

    return (
        ConfigError,
        PermissionsError,
        FileNotFoundError,
        NotADirectoryError,
        StoreError,
        ManifestError,
        SplitError,
        EvaluationError,
    )


def _os_error_line(exc: OSError) -> str:
    """One line for a failed file operation, without ``exc.filename``: a source path's folder
    names carry patient names. MEDCURATE_HOME is the user's own setting and is named."""
    cause = exc.strerror or type(exc).__name__
    return (
        f"{cause} (file operation failed; path not shown, folder names may identify patients): "
        f"check that MEDCURATE_HOME {medcurate_home()} is writable and the input readable"
    )


def main() -> None:
    """Console entry point: clear one-line errors for bad input, exit status 2.

    Errors that carry a file name (every OSError raised by the OS) are shown without it."""
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
