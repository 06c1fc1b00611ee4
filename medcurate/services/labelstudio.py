"""Label Studio as a managed local service: install, start from a template, stop, status.

Why it looks like this (facts measured in ../shared/notes/labelstudio.md):

- The server lives in its own venv (``.venv-labelstudio``) because its pins (Django, pytz,
  pyarrow, the SDK) must not leak into the pipeline's environment.
- A first start migrates an empty database for 30-50 s; copying a pre-migrated template makes a
  start take seconds, which is what keeps the integration tests and ``make ui`` quick.
- Label Studio also reads UNPREFIXED variables (USERNAME, PASSWORD, HOST, PORT, DEBUG), so it is
  started with a clean environment built here, never with ours.
- If its port is busy it silently moves to the next one; we refuse instead, so the URL we hand out
  is the URL it serves.
- Legacy API tokens are off for new organizations in 1.23 unless enabled when the organization is
  created (first start on a fresh data dir); the SDK needs them.
- Telemetry and version checks are switched off; images are served as local files from
  ``$MEDCURATE_HOME/annotation`` (pseudonymous renders only, never ``restricted/``).
- Its sqlite database holds every user's API token in plain text: the server runs with umask 077,
  its folder, data dir and the pre-migrated template are owner-only (0700/0600), and a start on a
  data dir that others can read is refused (``medcurate init-home`` fixes it).
- Sign-up is only possible through the organization's invite link (the pipeline's simulated
  annotators use it): ``LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK=true``. Without it anyone who can
  reach the port signs up into the admin's organization and sees every project.

Secrets (admin password, API token, Django SECRET_KEY) come from the environment or are generated
once into ``$MEDCURATE_HOME/restricted/labelstudio/`` with mode 600; they are never logged.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from medcurate.config import ConfigError, Zones, medcurate_home
from medcurate.perms import private_dir, private_tree, write_private_bytes
from medcurate.services import process
from medcurate.services.process import SERVER_UMASK

VERSION = "1.23.2"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_USERNAME = "admin@medcurate.local"
_REPO_ROOT = Path(__file__).resolve().parents[2]


class LabelStudioError(RuntimeError):
    """Label Studio could not be installed, started or reached."""


# --------------------------------------------------------------------------- locations


def venv_dir(env: Mapping[str, str] | None = None) -> Path:
    """The server's own venv (MEDCURATE_LABELSTUDIO_VENV, default ``.venv-labelstudio``)."""
    env = os.environ if env is None else env
    return Path(env.get("MEDCURATE_LABELSTUDIO_VENV", str(_REPO_ROOT / ".venv-labelstudio")))


def template_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the pre-migrated data dir is cached, one per server version (an ignored folder)."""
    env = os.environ if env is None else env
    root = Path(env.get("MEDCURATE_LABELSTUDIO_TEMPLATE", str(_REPO_ROOT / ".cache")))
    return root / "labelstudio-template" / VERSION


@dataclass(frozen=True)
class ServicePaths(process.ServerPaths):
    """Files of one Label Studio instance under a MEDCURATE_HOME."""

    STEM: ClassVar[str] = "labelstudio"

    home: Path

    @property
    def base(self) -> Path:
        return Zones(self.home).labelstudio

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def secrets_dir(self) -> Path:
        return Zones(self.home).restricted / "labelstudio"

    @property
    def credentials_file(self) -> Path:
        return self.secrets_dir / "credentials.json"

    @property
    def sim_annotators_file(self) -> Path:
        """The simulated annotators' passwords (``medcurate annotate-sim``, the demo)."""
        return self.secrets_dir / "sim-annotators.json"

    @property
    def document_root(self) -> Path:
        """Label Studio serves local files from here: the pseudonymous renders only."""
        return Zones(self.home).annotation


# --------------------------------------------------------------------------- install


def _installed(venv: Path) -> bool:
    if not (venv / "bin" / "label-studio").exists():
        return False
    return any(venv.glob(f"lib/python*/site-packages/label_studio-{VERSION}.dist-info"))


def _uv() -> str:
    here = Path(sys.executable).parent / "uv"
    found = str(here) if here.exists() else shutil.which("uv")
    if not found:
        raise LabelStudioError("uv not found next to this Python nor on PATH: run `make setup`")
    return found


def _server_env(venv: Path, data_dir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """A clean environment: only what Label Studio needs, telemetry off, nothing inherited."""
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(data_dir)),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "DO_NOT_TRACK": "1",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        # sign-up only through the organization's invite link (read as DISABLE_SIGNUP_WITHOUT_LINK
        # by core/settings/base.py and checked in users/views.py:user_signup in 1.23.2)
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LOG_LEVEL": "WARNING",
        # sqlite in WAL mode (label_studio/server.py runs PRAGMA journal_mode=wal on each
        # connection when this is set; the name is Label Studio's): an annotation POST took half
        # the time (143-174 ms vs 302-332 ms under load), same exported annotations
        "AZURE_MOUNT_FIX": "1",
    }
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    env.update(extra)
    return env


def ensure_template(venv: Path | None = None, template: Path | None = None) -> Path:
    """Build the pre-migrated data dir once (``label-studio init``); later starts copy it."""
    venv = venv or venv_dir()
    template = template or template_dir()
    if (template / "label_studio.sqlite3").exists():
        private_tree(template.parent)  # templates built by older versions were 0644
        return template
    private_dir(template.parent)
    work = template.parent / f".{template.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    private_dir(work)
    # A throwaway SECRET_KEY keeps Label Studio from writing one into the template's .env.
    env = _server_env(venv, work, {"SECRET_KEY": secrets.token_urlsafe(32)})
    cmd = [str(venv / "bin" / "label-studio"), "init", "--quiet", "--data-dir", str(work)]
    done = subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        umask=SERVER_UMASK,
    )
    if done.returncode != 0 or not (work / "label_studio.sqlite3").exists():
        shutil.rmtree(work, ignore_errors=True)
        tail = (done.stdout + done.stderr)[-2000:]
        raise LabelStudioError(f"label-studio init failed (rc={done.returncode}): {tail}")
    (work / ".env").unlink(missing_ok=True)
    private_tree(work)
    try:
        work.rename(template)
    except OSError:  # someone else finished first
        shutil.rmtree(work, ignore_errors=True)
    return template


def ensure_installed(venv: Path | None = None, template: Path | None = None) -> Path:
    """Install the pinned server into its own venv and build the template; skip what is there."""
    venv = venv or venv_dir()
    if not _installed(venv):
        if not (venv / "bin" / "python").exists():
            subprocess.run(
                [shutil.which("python3") or sys.executable, "-m", "venv", str(venv)], check=True
            )
        # bytecode now: where PYTHONDONTWRITEBYTECODE is set, every start compiled Django anew
        cmd = [
            _uv(),
            "pip",
            "install",
            "--compile-bytecode",
            "--python",
            str(venv / "bin" / "python"),
        ]
        if os.environ.get("PIP_FIND_LINKS"):
            cmd += ["--find-links", os.environ["PIP_FIND_LINKS"]]
        subprocess.run([*cmd, f"label-studio=={VERSION}"], check=True)
        if not _installed(venv):
            raise LabelStudioError(f"label-studio {VERSION} is not in {venv} after installing")
    ensure_template(venv, template)
    return venv


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    api_key: str

    def __repr__(self) -> str:  # never print secrets by accident
        return f"Credentials(username={self.username!r}, password=***, api_key=***)"


def _write_private(path: Path, text: str) -> None:
    """Write a secrets file 0600 in 0700 folders up to ``restricted/``, whatever the umask."""
    restricted = path.parent.parent if path.parent.parent.name == "restricted" else None
    private_dir(path.parent, root=restricted)
    write_private_bytes(path, text.encode())


def load_credentials(home: Path, env: Mapping[str, str] | None = None) -> tuple[Credentials, str]:
    """Admin credentials and SECRET_KEY: the environment wins, else generated once (mode 600).

    Only generated values are written to ``restricted/labelstudio/credentials.json``; values
    given in the environment stay there.
    """
    env = os.environ if env is None else env
    path = ServicePaths(home).credentials_file
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    generators = {
        "username": lambda: DEFAULT_USERNAME,
        "password": lambda: secrets.token_urlsafe(24),
        "api_key": lambda: secrets.token_hex(20),  # 40 chars: the server's maximum
        "secret_key": lambda: secrets.token_urlsafe(48),
    }
    env_names = {
        "username": "LABEL_STUDIO_USERNAME",
        "password": "LABEL_STUDIO_PASSWORD",
        "api_key": "LABEL_STUDIO_API_KEY",
        "secret_key": "LABEL_STUDIO_SECRET_KEY",
    }
    values, changed = process.settle_secrets(env, stored, env_names, generators)
    if changed:
        _write_private(path, json.dumps(stored, indent=2, sort_keys=True) + "\n")
    if not 5 < len(values["api_key"]) <= 40:
        raise ConfigError("LABEL_STUDIO_API_KEY must be 6 to 40 characters long")
    if "@" not in values["username"]:
        raise ConfigError("LABEL_STUDIO_USERNAME must be an e-mail address")
    creds = Credentials(values["username"], values["password"], values["api_key"])
    return creds, values["secret_key"]


# --------------------------------------------------------------------------- process control


@dataclass(frozen=True)
class LabelStudioServer:
    """A running server: where it answers and the token to use (no secret in repr)."""

    url: str
    api_key: str
    pid: int
    port: int
    home: Path

    def __repr__(self) -> str:
        return f"LabelStudioServer(url={self.url!r}, pid={self.pid}, api_key=***)"

    def stop(self, timeout: float = 20.0) -> bool:
        return stop(self.home, timeout=timeout)


@dataclass(frozen=True)
class ServiceStatus:
    running: bool
    healthy: bool
    url: str | None
    pid: int | None

    def line(self) -> str:
        return process.status_line("label studio", self.running, self.healthy, self.url, self.pid)


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port and we could bind it (Label Studio's own check
    looks at localhost and silently moves on to port+1)."""
    for target in {host, "127.0.0.1", "localhost"}:
        try:
            with socket.create_connection((target, port), timeout=0.5):
                return False
        except OSError:
            pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as the servers do: a port whose last connections sit in TIME_WAIT is free to listen on
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS considers free now (for tests and parallel instances)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _is_our_process(pid: int, data_dir: Path | None = None) -> bool:
    """True when ``pid`` is a Label Studio server (of ``data_dir``, when given): a stale pid
    file must never make us signal an unrelated process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): trust the pid file
    if data_dir is not None and str(data_dir).encode() not in cmdline:
        return False
    return b"label-studio" in cmdline or b"label_studio" in cmdline


def _read_pid(paths: ServicePaths) -> int | None:
    return process.read_pid(paths.server_files, lambda pid: _is_our_process(pid, paths.data))


def http_status(url: str, api_key: str | None = None, timeout: float = 2.0) -> int:
    """The HTTP status of a GET on ``url`` (0 when nothing answers): the one health probe, used
    here and by the annotation room's client."""
    req = urllib.request.Request(url)
    if api_key:
        req.add_header("Authorization", f"Token {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # a local URL we built
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, urllib.error.URLError):
        return 0


def start(
    home: Path | None = None,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    timeout: float = 180.0,
    env: Mapping[str, str] | None = None,
) -> LabelStudioServer:
    """Start Label Studio for MEDCURATE_HOME (or return the one already running there).

    A fresh data dir is copied from the pre-migrated template; an existing one is reused, so
    projects and annotations survive restarts.
    """
    home = (home or medcurate_home()).resolve()
    paths = ServicePaths(home)
    running = _read_pid(paths)
    if running is not None:
        state = json.loads(paths.state_file.read_text()) if paths.state_file.exists() else {}
        if state.get("url") and http_status(state["url"] + "/health") == 200:
            api_key = load_credentials(home, env)[0].api_key
            return LabelStudioServer(state["url"], api_key, running, state["port"], home)
        raise LabelStudioError(
            f"a Label Studio process (pid {running}) is registered in {paths.pid_file} but does "
            "not answer: run `medcurate labelstudio stop` first"
        )
    if not port_is_free(host, port):
        raise LabelStudioError(f"port {port} on {host} is busy: choose another with --port")
    Zones(home).check_private()  # refuse a data dir or restricted/ that others can read
    creds, secret_key = load_credentials(home, env)

    venv = ensure_installed()
    private_dir(paths.base)
    paths.document_root.mkdir(parents=True, exist_ok=True)
    if not (paths.data / "label_studio.sqlite3").exists():
        shutil.rmtree(paths.data, ignore_errors=True)
        shutil.copytree(template_dir(), paths.data)
    private_tree(paths.data)  # the database holds API tokens: 0700 folders, 0600 files

    server_env = _server_env(
        venv,
        paths.data,
        {
            "SECRET_KEY": secret_key,
            "LABEL_STUDIO_USERNAME": creds.username,
            "LABEL_STUDIO_PASSWORD": creds.password,
            "LABEL_STUDIO_USER_TOKEN": creds.api_key,
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(paths.document_root),
        },
    )
    cmd = [
        str(venv / "bin" / "label-studio"),
        "start",
        "--no-browser",
        "--internal-host",
        host,
        "--port",
        str(port),
        "--data-dir",
        str(paths.data),
        "--enable-legacy-api-token",
    ]
    url = f"http://{host}:{port}"
    proc = process.spawn(
        paths.server_files, cmd, server_env, paths.base, {"url": url, "port": port}
    )
    process.wait_started(
        proc,
        paths.server_files,
        lambda: http_status(url + "/health") == 200,
        label="Label Studio",
        url=url,
        timeout=timeout,
        interval=0.3,
        error=LabelStudioError,
        stop=lambda: stop(home),
    )

    if "is in use" in process.log_tail(paths.server_files, 20000):
        stop(home)
        raise LabelStudioError(f"Label Studio moved away from port {port}; see {paths.log_file}")
    code = http_status(url + "/api/current-user/whoami", creds.api_key, timeout=10)
    if code != 200:
        stop(home)
        raise LabelStudioError(
            f"Label Studio rejects the API token (HTTP {code}): the data dir {paths.data} was made "
            "with other credentials; use those, or remove the data dir"
        )
    return LabelStudioServer(url, creds.api_key, proc.pid, port, home)


def stop(home: Path | None = None, timeout: float = 20.0) -> bool:
    """Stop the server of MEDCURATE_HOME: TERM its process group, wait, then KILL. True if one
    was running."""
    paths = ServicePaths((home or medcurate_home()).resolve())
    return process.stop_server(
        paths.server_files,
        lambda pid: _is_our_process(pid, paths.data),
        timeout=timeout,
        interval=0.1,
        label="Label Studio",
    )


def status(home: Path | None = None) -> ServiceStatus:
    """Whether the server of MEDCURATE_HOME runs and answers /health."""
    home = (home or medcurate_home()).resolve()
    paths = ServicePaths(home)
    pid = _read_pid(paths)
    if pid is None:
        return ServiceStatus(False, False, None, None)
    state = json.loads(paths.state_file.read_text()) if paths.state_file.exists() else {}
    url = state.get("url")
    healthy = bool(url) and http_status(f"{url}/health") == 200
    return ServiceStatus(True, healthy, url, pid)


def connection(home: Path | None = None, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(url, api_key) for clients: LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY when set, else the
    server this MEDCURATE_HOME runs and its stored credentials (so ``make ui`` needs no setup)."""
    env = os.environ if env is None else env
    url, key = env.get("LABEL_STUDIO_URL", ""), env.get("LABEL_STUDIO_API_KEY", "")
    if url and key:
        return url.rstrip("/"), key
    paths = ServicePaths((home or medcurate_home(dict(env))).resolve())
    z = Zones(paths.home)
    z.check_private([z.restricted])  # the token is read from restricted/: refuse it open
    if not url and paths.state_file.exists():
        url = str(json.loads(paths.state_file.read_text()).get("url", ""))
    if not key and paths.credentials_file.exists():
        key = str(json.loads(paths.credentials_file.read_text()).get("api_key", ""))
    if not url or not key:
        raise ConfigError(
            "Label Studio is not configured: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, or "
            "run `medcurate labelstudio start`"
        )
    return url.rstrip("/"), key
