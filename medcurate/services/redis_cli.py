"""``medcurate redis start|stop|status``: the managed Redis (Celery's broker and result backend).

The password is never printed: it is in the environment the user set, or in the 0600 credentials
file whose path is printed. Processes that need the broker get it from
:func:`medcurate.services.redis.client_env`.
"""

from __future__ import annotations

import typer

from medcurate.config import ConfigError, zones
from medcurate.perms import PermissionsError
from medcurate.services import redis

redis_app = typer.Typer(
    no_args_is_help=True, help="Run the local Redis (Celery's broker for the cluster profile)."
)


@redis_app.command("start")
def redis_start(
    port: int | None = typer.Option(
        None, "--port", "-p", help="TCP port; refused if busy (default 6380, or a free one)"
    ),
) -> None:
    """Start the Redis of MEDCURATE_HOME (or say where the running one answers)."""
    z = zones()
    try:
        server = redis.start(z.home, port=port)
    except (redis.RedisError, ConfigError, PermissionsError) as exc:
        print(f"medcurate: error: {exc}")
        raise typer.Exit(1) from None
    creds = redis.ServicePaths(server.home).credentials_file
    print(f"redis: {server.url(redis.BROKER_DB)} (pid {server.pid})")
    print(f"  broker db {redis.BROKER_DB}, result backend db {redis.BACKEND_DB}")
    print(f"  password: ${redis.PASSWORD_VAR} or {creds}")


@redis_app.command("stop")
def redis_stop() -> None:
    """Stop the Redis of MEDCURATE_HOME (its append-only file is fsynced first)."""
    stopped = redis.stop(zones().home)
    print("redis: stopped" if stopped else "redis: was not running")


@redis_app.command("status")
def redis_status() -> None:
    """Say whether the Redis of MEDCURATE_HOME runs and answers (exit 1 if it does not)."""
    st = redis.status(zones().home)
    print(st.line())
    raise typer.Exit(0 if st.healthy or not st.running else 1)
