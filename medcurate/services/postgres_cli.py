"""``medcurate postgres start|stop|status`` (the managed PostgreSQL) and ``medcurate profile
cluster|local`` (which storage Dagster's dagster.yaml names).

The password is never printed: it is in the environment the user set, or in the 0600 credentials
file whose path is printed.
"""

from __future__ import annotations

import typer

from medcurate import profiles
from medcurate.config import ConfigError, zones
from medcurate.services import postgres

postgres_app = typer.Typer(
    no_args_is_help=True, help="Run the local PostgreSQL (Dagster's cluster profile storage)."
)
profile_app = typer.Typer(
    no_args_is_help=True, help="Choose Dagster's storage: local (sqlite) or cluster (PostgreSQL)."
)


@postgres_app.command("start")
def postgres_start(
    port: int | None = typer.Option(None, "--port", "-p", help="TCP port; refused if busy"),
) -> None:
    """Start the PostgreSQL of MEDCURATE_HOME (or say where the running one answers)."""
    z = zones()
    try:
        server = postgres.start(z.home, port=port)
    except (postgres.PostgresError, ConfigError) as exc:
        print(f"medcurate: error: {exc}")
        raise typer.Exit(1) from None
    creds = postgres.ServicePaths(server.home).credentials_file
    print(f"postgres: {server.url} (pid {server.pid})")
    print(f"  password: ${postgres.PASSWORD_VAR} or {creds}")


@postgres_app.command("stop")
def postgres_stop() -> None:
    """Stop the PostgreSQL of MEDCURATE_HOME (fast shutdown)."""
    stopped = postgres.stop(zones().home)
    print("postgres: stopped" if stopped else "postgres: was not running")


@postgres_app.command("status")
def postgres_status() -> None:
    """Say whether the PostgreSQL of MEDCURATE_HOME runs and answers (exit 1 if it does not)."""
    st = postgres.status(zones().home)
    print(st.line())
    raise typer.Exit(0 if st.healthy or not st.running else 1)


@profile_app.command("cluster")
def profile_cluster(
    port: int | None = typer.Option(
        None, "--port", "-p", help="PostgreSQL's port (default: the running server's, else 5433)"
    ),
    host: str = typer.Option(postgres.HOST, "--host", help="PostgreSQL's host"),
) -> None:
    """Point DAGSTER_HOME/dagster.yaml at PostgreSQL (run, event and schedule storage)."""
    z = zones()
    st = postgres.status(z.home)
    if port is None:
        port = int(st.url.rsplit(":", 1)[1].split("/")[0]) if st.url else postgres.DEFAULT_PORT
    user, _ = postgres.credentials(z.home)
    path = profiles.write_cluster_profile(z.dagster_home, host=host, port=port, username=user)
    print(f"profile cluster: {path} -> postgresql://{user}@{host}:{port}/{postgres.DB_NAME}")
    print(f"  Dagster processes read the password from ${postgres.PASSWORD_VAR}")
    if not st.healthy:
        print("  postgres is not answering: `medcurate postgres start`")


@profile_app.command("local")
def profile_local() -> None:
    """Point DAGSTER_HOME/dagster.yaml back at sqlite under DAGSTER_HOME (the default)."""
    path = profiles.write_local_profile(zones().dagster_home)
    print(f"profile local: {path} (sqlite under {path.parent})")


@profile_app.command("show")
def profile_show() -> None:
    """Say which profile DAGSTER_HOME/dagster.yaml is."""
    print(f"profile: {profiles.active_profile(zones().dagster_home) or 'none (init-home)'}")
