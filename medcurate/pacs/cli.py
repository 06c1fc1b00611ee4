"""``medcurate pacs start|stop|status``: the managed Orthanc servers (clinical and research).

The password is never printed: the user reads it from the environment they set, or from the
0600 credentials file whose path is printed.
"""

from __future__ import annotations

import typer

from medcurate.config import ConfigError, medcurate_home
from medcurate.services import orthanc

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
