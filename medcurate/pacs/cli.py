"""``medcurate pacs start|stop|status``: the managed Orthanc servers (clinical and research);
``medcurate pacs store|pull``: DICOM into the PACS, and studies from it into a batch.

The password is never printed: the user reads it from the environment they set, or from the
0600 credentials file whose path is printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from medcurate.config import ConfigError, medcurate_home
from medcurate.services import orthanc

if TYPE_CHECKING:  # the client pulls in numpy, pydicom, pandas: loaded by the commands only
    from medcurate.pacs.client import PacsClient

pacs_app = typer.Typer(no_args_is_help=True, help="Run the local PACS servers (Orthanc).")

_SERVER = typer.Option(
    orthanc.CLINICAL,
    "--server",
    "-s",
    help="clinical (identified data, under restricted/) or research (de-identified SEG)",
)


def _name(server: str) -> str:
    if server not in orthanc.SERVERS:
        raise typer.BadParameter(f"use one of {', '.join(orthanc.SERVERS)}", param_hint="--server")
    return server


@pacs_app.command("start")
def pacs_start(
    server: str = _SERVER,
    port: int | None = typer.Option(None, "--port", "-p", help="HTTP port; refused if busy"),
    dicom_port: int | None = typer.Option(None, "--dicom-port", help="DICOM port"),
) -> None:
    """Start the PACS server of MEDCURATE_HOME (or say where the running one answers)."""
    name = _name(server)
    try:
        pacs = orthanc.start(name=name, port=port, dicom_port=dicom_port)
    except (orthanc.OrthancError, ConfigError) as exc:
        print(f"medcurate: error: {exc}")
        raise typer.Exit(1) from None
    creds_file = orthanc.ServicePaths(pacs.home, name).credentials_file
    print(f"pacs {name}: {pacs.url} (DICOMweb {pacs.dicomweb}, DICOM port {pacs.dicom_port}, ")
    print(f"  AE {pacs.aet}, pid {pacs.pid}); user {pacs.username}, password: env or {creds_file}")


@pacs_app.command("stop")
def pacs_stop(server: str = _SERVER) -> None:
    """Stop the PACS server of MEDCURATE_HOME."""
    name = _name(server)
    stopped = orthanc.stop(medcurate_home(), name)
    print(f"pacs {name}: stopped" if stopped else f"pacs {name}: was not running")


@pacs_app.command("status")
def pacs_status(server: str = _SERVER) -> None:
    """Say whether the PACS server of MEDCURATE_HOME runs and answers (exit 1 if it does not)."""
    st = orthanc.status(medcurate_home(), _name(server))
    print(st.line())
    raise typer.Exit(0 if st.healthy or not st.running else 1)


_URL = typer.Option(
    "",
    "--url",
    help="a PACS's REST root (its DICOMweb at URL/dicom-web), user and password from "
    "MEDCURATE_PACS_USER / MEDCURATE_PACS_PASSWORD; default: the managed clinical server",
)


def _client(url: str) -> PacsClient:
    """The PACS to talk to: ``url`` with credentials from the environment, else the managed
    clinical Orthanc of MEDCURATE_HOME (which must be running)."""
    from medcurate.pacs.client import PacsClient

    if url:
        env = os.environ
        return PacsClient(url, env.get("MEDCURATE_PACS_USER"), env.get("MEDCURATE_PACS_PASSWORD"))
    home = medcurate_home()
    if not orthanc.status(home, orthanc.CLINICAL).running:
        print("medcurate: error: the clinical PACS is not running: `medcurate pacs start`")
        raise typer.Exit(2)
    return PacsClient.from_server(orthanc.start(home, orthanc.CLINICAL))


@pacs_app.command("store")
def pacs_store(
    folder: Path = typer.Argument(..., help="a folder of DICOM files (*.dcm, recursively)"),
    url: str = _URL,
) -> None:
    """Send DICOM files to the PACS, as a modality would (to try the PACS path out)."""
    from medcurate.pacs.client import PacsError

    try:
        n = _client(url).store_tree(folder)
    except PacsError as exc:
        print(f"medcurate: error: {exc}")
        raise typer.Exit(2) from None
    print(f"stored {n} files in the PACS")


@pacs_app.command("pull")
def pacs_pull(
    study: str | None = typer.Option(None, "--study", help="one StudyInstanceUID"),
    since: str | None = typer.Option(None, "--since", help="studies dated YYYYMMDD or later"),
    until: str | None = typer.Option(None, "--until", help="studies dated YYYYMMDD or earlier"),
    modality: str | None = typer.Option(None, "--modality", help="studies holding CT, MR, ..."),
    accessions: Path | None = typer.Option(
        None, "--accessions", help="a CSV with an AccessionNumber column, or one per line"
    ),
    url: str = _URL,
) -> None:
    """Retrieve studies over WADO-RS into one claimed batch (restricted/raw/<batch>/).

    The inbox sensor of `make ui` ingests the batch (ingest_batch), or `medcurate ingest` without
    Dagster. A re-run after a failure resumes: nothing retrieved twice, nothing lost."""
    from medcurate.config import zones
    from medcurate.pacs.client import PacsError
    from medcurate.pacs.retrieve import pull

    z = zones().ensure()
    try:
        result = pull(
            z, _client(url), study=study, since=since, accessions=accessions, until=until,
            modality=modality,
        )  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    except PacsError as exc:
        print(f"medcurate: error: {exc}")
        raise typer.Exit(2) from None
    print(result.summary_line())
    for problem in result.problems:
        print(f"  FAILED {problem}")
    if result.batch:
        how = "`make ui` ingests it (ingest_batch), or `medcurate ingest`"
        print(f"batch {result.batch} claimed: {how}")
    raise typer.Exit(1 if result.failed else 0)
