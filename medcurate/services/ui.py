"""``medcurate ui`` (``make ui``): Dagster, Label Studio and the figures server together.

One command for a data engineer: Label Studio is started unless it already runs for
MEDCURATE_HOME (then it is left running afterwards), the figures server answers the plots that
Dagster's metadata links to, and ``dagster dev`` runs as a child in its own process group. Ctrl-C
or SIGTERM stops Dagster (TERM to its group, KILL after a grace period), the figures server, and
Label Studio when this command started it. Nothing is left behind either way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from medcurate import profiles
from medcurate.config import Zones
from medcurate.home import init_home
from medcurate.services import cluster, figures, orthanc, workers
from medcurate.services import labelstudio as ls
from medcurate.services.wait import WaitTimeout, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGSTER_HOST = "127.0.0.1"
DAGSTER_PORT = 3000
STOP_GRACE_S = 30.0  # dagster dev stops its webserver and daemon within seconds on TERM


class UiError(RuntimeError):
    """A port that is busy: the user chooses another."""


#: Celery workers ``make ui`` starts under the cluster profile
CLUSTER_WORKERS = 2


@dataclass(frozen=True)
class UiSettings:
    home: Path
    dagster_port: int = DAGSTER_PORT
    figures_port: int = figures.DEFAULT_PORT
    labelstudio_port: int = ls.DEFAULT_PORT
    workspace: Path = REPO_ROOT / "workspace.yaml"


def dagster_env(z: Zones, figures_url: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ``make ui`` gives Dagster: its home under MEDCURATE_HOME, no telemetry,
    the figures server's URL, and the demo's salt unless MEDCURATE_DEID_SALT is set (after
    ``make demo`` runs then pseudonymize as the demo did)."""
    out = dict(os.environ if env is None else env)
    out["MEDCURATE_HOME"] = str(z.home)
    out.setdefault("DAGSTER_HOME", str(z.dagster_home))
    out["GX_ANALYTICS_ENABLED"] = "false"
    out["DO_NOT_TRACK"] = "1"
    out[figures.ENV_URL] = figures_url
    if not out.get("MEDCURATE_DEID_SALT") and z.demo_salt.exists():
        out["MEDCURATE_DEID_SALT"] = z.demo_salt.read_text().strip()
    return out


def login_lines(home: Path, url: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Where to log in to Label Studio: the user name, and where its password is (never the
    password itself: terminals are scrolled back and screen-shared)."""
    env = os.environ if env is None else env
    creds, _ = ls.load_credentials(home, env)
    where = (
        "$LABEL_STUDIO_PASSWORD"
        if env.get("LABEL_STUDIO_PASSWORD")
        else f'"password" in {ls.ServicePaths(home).credentials_file}'
    )
    return [f"Label Studio   {url}", f"  login        {creds.username}", f"  password     {where}"]


def _dagster_bin() -> str:
    here = Path(sys.executable).parent / "dagster"
    return str(here) if here.exists() else (shutil.which("dagster") or "dagster")


def _answers(url: str) -> bool:
    return ls.http_status(url, timeout=2.0) == 200


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: not ours, and not dagster's
        return False
    return True


def _stop_group(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> int | None:
    """TERM the child's process group (dagster dev, its webserver, daemon and code servers) and
    wait until every process of it is gone, KILL after ``grace`` seconds; dagster dev's status."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

        def gone() -> bool:
            proc.poll()  # reap dagster dev itself; its children are reaped by init
            return not _group_alive(proc.pid)

        try:
            wait_until(gone, grace, interval=0.2, what="dagster stop")
            break
        except WaitTimeout:
            continue
    return proc.poll()


def run_ui(settings: UiSettings, say: Callable[[str], None] = print) -> int:
    """Run until Ctrl-C / SIGTERM (0) or until Dagster exits by itself (its status)."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    home = settings.home.resolve()
    z = Zones(home)
    started_ls = False
    pacs: list[orthanc.OrthancServer] = []
    figs: figures.FiguresServer | None = None
    proc: subprocess.Popen[bytes] | None = None
    on_cluster = profiles.active_profile(z.dagster_home) == profiles.CLUSTER
    try:
        if not ls.port_is_free(DAGSTER_HOST, settings.dagster_port):
            raise UiError(
                f"port {settings.dagster_port} is busy (another Dagster?): choose another with "
                "--dagster-port"
            )
        init_home(z)
        status = ls.status(home)
        if status.running and status.healthy and status.url:
            ls_url = status.url
            say("label studio: already running for this home (left running afterwards)")
        else:
            port = settings.labelstudio_port
            if not ls.port_is_free(ls.DEFAULT_HOST, port):
                port = ls.free_port()
            ls_url = ls.start(home=home, port=port).url
            started_ls = True
        pacs = orthanc.start_all(home, say)
        try:
            figs = figures.start(home, settings.figures_port)
        except OSError:
            raise UiError(
                f"port {settings.figures_port} is busy: choose another with --figures-port"
            ) from None
        if stop.is_set():  # Ctrl-C while Label Studio was starting
            return 0
        env = dagster_env(z, figs.url)
        if on_cluster:  # PostgreSQL, Redis, S3 and the Celery workers the runs' steps go to
            services = cluster.start(home)
            env.update(services.env)
            started = workers.start(CLUSTER_WORKERS, home, env=env)
            say(f"cluster profile: {services.postgres_url}, broker {services.broker}, store "
                f"{services.store}, {len(started)} Celery workers")  # fmt: skip
        dagster_url = f"http://{DAGSTER_HOST}:{settings.dagster_port}"
        cmd = [_dagster_bin(), "dev", "-h", DAGSTER_HOST, "-p", str(settings.dagster_port)]
        proc = subprocess.Popen(
            [*cmd, "-w", str(settings.workspace)],
            env=env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: Ctrl-C reaches it through us, once
        )
        say("")
        say(f"Dagster        {dagster_url}   (starting, pid {proc.pid}; Ctrl-C stops everything)")
        for line in login_lines(home, ls_url):
            say(line)
        say(f"figures        {figs.url}   (plots in Dagster's metadata)")
        say(f"MEDCURATE_HOME {home}")
        say("")
        ready = False
        while not stop.is_set():
            if proc.poll() is not None:
                say(f"dagster dev exited with status {proc.returncode}")
                return proc.returncode or 1
            if not ready and _answers(dagster_url + "/server_info"):
                ready = True
                say(f"Dagster is up: {dagster_url}")
            stop.wait(1.0)
        say("stopping ...")
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            _stop_group(proc)
            say("dagster: stopped")
        if on_cluster:
            workers.stop(home)
            cluster.stop(home)
            say("cluster services: stopped")
        if figs is not None:
            figs.stop()
        if started_ls:
            ls.stop(home)
            say("label studio: stopped")
        orthanc.stop_all(pacs, say)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_for(url: str, timeout: float) -> bool:
    """True once ``url`` answers 200 within ``timeout`` seconds (for tests and scripts)."""
    try:
        return bool(wait_until(lambda: _answers(url), timeout, interval=0.5, what=url))
    except WaitTimeout:
        return False
