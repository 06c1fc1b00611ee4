"""Orthanc as a managed local service: the clinical PACS and the research PACS, start/stop/status.

Why it looks like this (facts measured in ../shared/notes/orthanc.md):

- Two servers, never one: ``clinical`` stands for the hospital's PACS and holds IDENTIFIED data,
  so its whole folder (storage, index, config, log) lives under ``restricted/pacs/clinical/``;
  ``research`` receives de-identified DICOM SEG only and lives under ``pacs/research/``.
- Orthanc 1.10 has no bind-address option and listens on every interface. An LD_PRELOAD shim
  (``bind_loopback.c``, compiled once into the ignored ``.cache/medcurate/``) rewrites wildcard
  binds to loopback, so both ports answer on this machine only.
- Basic auth is always on; the credentials come from the environment or are generated once and
  kept 0600 in the service folder (0700). The config JSON holds them too, so it is 0600 as well.
  The password is never printed nor put in a repr.
- DICOM transfers crawl (~100 ms per instance) unless TCP_NODELAY=1 is in Orthanc's environment.
- Orthanc answers 0.1-0.3 s after launch: start polls ``/system`` every 50 ms.
- Its logs de-identify patient data (``DeidentifyLogs``) and everything it writes is owner-only
  (umask 077), whatever the caller's umask.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from medcurate.config import ConfigError, Zones, medcurate_home
from medcurate.perms import private_dir, private_tree, write_private_bytes
from medcurate.services import process
from medcurate.services.labelstudio import free_port, port_is_free
from medcurate.services.process import SERVER_UMASK as SERVER_UMASK  # kept public

__all__ = [
    "CLINICAL",
    "RESEARCH",
    "OrthancError",
    "OrthancServer",
    "OrthancStatus",
    "ServicePaths",
    "credentials",
    "free_port",
    "start",
    "status",
    "stop",
]

CLINICAL = "clinical"
RESEARCH = "research"
SERVERS = (CLINICAL, RESEARCH)
HOST = "127.0.0.1"
ORTHANC_BIN = Path(os.environ.get("MEDCURATE_ORTHANC_BIN", "/usr/sbin/Orthanc"))
DICOMWEB_PLUGIN = Path(
    os.environ.get("MEDCURATE_ORTHANC_DICOMWEB", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
)
_REPO_ROOT = Path(__file__).resolve().parents[2]
_SHIM_SOURCE = Path(__file__).with_name("bind_loopback.c")
# (HTTP port, DICOM port, AE title, credential variables) per server. Not Orthanc's own 8042/4242:
# Debian's package starts a system Orthanc there on hosts with systemd.
_DEFAULTS: dict[str, tuple[int, int, str, str, str]] = {
    CLINICAL: (8044, 4244, "MEDCURATE_CLIN", "MEDCURATE_PACS_USER", "MEDCURATE_PACS_PASSWORD"),
    RESEARCH: (
        8045,
        4245,
        "MEDCURATE_RSCH",
        "MEDCURATE_RESEARCH_PACS_USER",
        "MEDCURATE_RESEARCH_PACS_PASSWORD",
    ),
}


class OrthancError(RuntimeError):
    """Orthanc could not be started or reached."""


def _check_name(name: str) -> str:
    if name not in SERVERS:
        raise ConfigError(f"unknown PACS server {name!r}: use one of {', '.join(SERVERS)}")
    return name


@dataclass(frozen=True)
class ServicePaths(process.ServerPaths):
    """Files of one Orthanc server under a MEDCURATE_HOME."""

    STEM: ClassVar[str] = "orthanc"

    home: Path
    name: str = CLINICAL

    @property
    def root(self) -> Path:
        """The top folder made owner-only down to ``base`` (restricted/ for clinical)."""
        z = Zones(self.home)
        return z.restricted if self.name == CLINICAL else self.home / "pacs"

    @property
    def base(self) -> Path:
        _check_name(self.name)
        z = Zones(self.home)
        if self.name == CLINICAL:
            return z.restricted / "pacs" / CLINICAL
        return self.home / "pacs" / RESEARCH

    @property
    def storage(self) -> Path:
        return self.base / "storage"

    @property
    def config_file(self) -> Path:
        return self.base / "orthanc.json"

    @property
    def credentials_file(self) -> Path:
        return self.base / "credentials.json"


# --------------------------------------------------------------------------- credentials


def credentials(
    home: Path | None = None, name: str = CLINICAL, env: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(username, password): from the environment when set, else generated once and kept 0600
    in the service folder. Values from the environment are never written to disk."""
    env = os.environ if env is None else env
    paths = ServicePaths((home or medcurate_home()).resolve(), _check_name(name))
    user_var, pw_var = _DEFAULTS[name][3], _DEFAULTS[name][4]
    stored: dict[str, str] = {}
    if paths.credentials_file.exists():
        stored = json.loads(paths.credentials_file.read_text())
    generators = {
        "username": lambda: f"medcurate-{name}",
        "password": lambda: secrets.token_urlsafe(24),
    }
    variables = {"username": user_var, "password": pw_var}
    values, changed = process.settle_secrets(env, stored, variables, generators)
    if ":" in values["username"]:
        raise ConfigError(f"{user_var} must not contain ':' (HTTP basic auth)")
    if changed:
        private_dir(paths.base, root=paths.root)
        data = json.dumps(stored, indent=2, sort_keys=True) + "\n"
        write_private_bytes(paths.credentials_file, data.encode())
    return values["username"], values["password"]


def _auth_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def http_status(url: str, username: str | None = None, password: str | None = None) -> int:
    """The HTTP status of a GET on ``url`` (0 when nothing answers)."""
    req = urllib.request.Request(url)
    if username is not None and password is not None:
        req.add_header("Authorization", _auth_header(username, password))
    try:
        with urllib.request.urlopen(req, timeout=2.0) as resp:  # a local URL we built
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, urllib.error.URLError):
        return 0


# --------------------------------------------------------------------------- loopback shim


def loopback_shim(cache: Path | None = None) -> Path:
    """The compiled bind() shim, built once per source version into an ignored cache folder."""
    source = _SHIM_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    cache = cache or _REPO_ROOT / ".cache" / "medcurate"  # .cache/ is git-ignored
    lib = cache / f"bind_loopback-{digest}.so"
    if lib.exists():
        return lib
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise OrthancError("no C compiler (cc) to build the loopback shim: apt-get install gcc")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{lib.name}.{os.getpid()}.tmp"
    done = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(_SHIM_SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise OrthancError(f"building the loopback shim failed: {done.stderr[-1500:]}")
    os.replace(tmp, lib)
    return lib


# --------------------------------------------------------------------------- process control


@dataclass(frozen=True)
class OrthancServer:
    """A running Orthanc: where it answers and how to log in (no password in repr)."""

    name: str
    url: str
    dicomweb: str
    port: int
    dicom_port: int
    pid: int
    home: Path
    username: str
    password: str = field(repr=False)

    @property
    def aet(self) -> str:
        return _DEFAULTS[self.name][2]

    def stop(self, timeout: float = 10.0) -> bool:
        return stop(self.home, self.name, timeout=timeout)


@dataclass(frozen=True)
class OrthancStatus:
    name: str
    running: bool
    healthy: bool
    url: str | None
    pid: int | None

    def line(self) -> str:
        label = f"pacs {self.name}"
        return process.status_line(label, self.running, self.healthy, self.url, self.pid)


def _is_our_process(pid: int, config_file: Path) -> bool:
    """True when ``pid`` is an Orthanc run with ``config_file``: a stale pid file must never make
    us signal an unrelated process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if not cmdline or str(config_file).encode() not in cmdline:
        return False
    try:  # a zombie (exited child not yet reaped) is not a server
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        return False
    return b"Orthanc" in cmdline.split(b"\0", 1)[0]


def _read_pid(paths: ServicePaths) -> int | None:
    return process.read_pid(paths.server_files, lambda pid: _is_our_process(pid, paths.config_file))


def _read_state(paths: ServicePaths) -> dict[str, object]:
    try:
        return dict(json.loads(paths.state_file.read_text()))
    except (OSError, ValueError):
        return {}


def orthanc_config(
    paths: ServicePaths,
    port: int,
    dicom_port: int,
    username: str,
    password: str,
    stable_age: int = 2,
) -> dict[str, object]:
    """Orthanc's configuration: own storage, loopback ports, basic auth, DICOMweb."""
    return {
        "Name": f"medcurate-{paths.name}",
        "StorageDirectory": str(paths.storage),
        "IndexDirectory": str(paths.storage),
        "HttpPort": port,
        "DicomPort": dicom_port,
        "DicomServerEnabled": True,
        "DicomAet": _DEFAULTS[paths.name][2],
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {username: password},
        "SslEnabled": False,
        "HttpsVerifyPeers": True,
        "ExecuteLuaEnabled": False,
        "RestApiWriteToFileSystemEnabled": False,
        "DeidentifyLogs": True,
        "StableAge": int(stable_age),
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
    }


def _server(
    paths: ServicePaths, state: Mapping[str, object], pid: int, creds: tuple[str, str]
) -> OrthancServer:
    url = str(state["url"])
    return OrthancServer(
        name=paths.name,
        url=url,
        dicomweb=url + "/dicom-web",
        port=int(str(state["port"])),
        dicom_port=int(str(state["dicom_port"])),
        pid=pid,
        home=paths.home,
        username=creds[0],
        password=creds[1],
    )


def start(
    home: Path | None = None,
    name: str = CLINICAL,
    port: int | None = None,
    dicom_port: int | None = None,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    stable_age: int = 2,
) -> OrthancServer:
    """Start the ``name`` Orthanc of MEDCURATE_HOME (or return the one already running there).

    Storage persists across restarts. Ports default to 8044/4244 (clinical) and 8045/4245
    (research); a busy port is refused, never silently moved.
    """
    home = (home or medcurate_home()).resolve()
    paths = ServicePaths(home, _check_name(name))
    creds = credentials(home, name, env)
    running = _read_pid(paths)
    if running is not None:
        known = _read_state(paths)
        if known.get("url") and http_status(f"{known['url']}/system", *creds) == 200:
            return _server(paths, known, running, creds)
        raise OrthancError(
            f"an Orthanc process (pid {running}) is registered for the {name} PACS but does not "
            f"answer with these credentials: run `medcurate pacs stop --server {name}` first"
        )
    for what, path in (("Orthanc", ORTHANC_BIN), ("DICOMweb plugin", DICOMWEB_PLUGIN)):
        if not path.exists():
            raise OrthancError(
                f"{what} not found at {path}: `make pacs-tools` "
                "(apt-get install orthanc orthanc-dicomweb)"
            )
    port = _DEFAULTS[name][0] if port is None else port
    dicom_port = _DEFAULTS[name][1] if dicom_port is None else dicom_port
    for p in (port, dicom_port):
        if not port_is_free(HOST, p):
            raise OrthancError(f"port {p} on {HOST} is busy: choose another")
    shim = loopback_shim()

    private_dir(paths.storage, root=paths.root)
    Zones(home).check_private([paths.root])  # identified data: refuse a folder others can read
    private_tree(paths.base)
    config = orthanc_config(paths, port, dicom_port, *creds, stable_age=stable_age)
    write_private_bytes(paths.config_file, (json.dumps(config, indent=2) + "\n").encode())
    server_env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TCP_NODELAY": "1",
        "LD_PRELOAD": str(shim),
    }
    url = f"http://{HOST}:{port}"
    state: dict[str, object] = {"url": url, "port": port, "dicom_port": dicom_port}
    cmd = [str(ORTHANC_BIN), str(paths.config_file)]
    proc = process.spawn(paths.server_files, cmd, server_env, paths.base, state)
    process.wait_started(
        proc,
        paths.server_files,
        lambda: http_status(url + "/system", *creds) == 200,
        label=f"Orthanc ({name})",
        url=url,
        timeout=timeout,
        interval=0.05,
        error=OrthancError,
        stop=lambda: stop(home, name),
    )
    return _server(paths, state, proc.pid, creds)


def stop(
    home: Path | None = None, name: str = CLINICAL, timeout: float = 10.0, kill: bool = False
) -> bool:
    """Stop the ``name`` Orthanc of MEDCURATE_HOME: TERM its process group, wait, then KILL.
    True if one was running.

    A clean stop takes ~3.5 s (Orthanc's HTTP and DICOM servers finish their polling loops);
    ``kill`` sends KILL at once, for throwaway homes (test fixtures) only.
    """
    paths = ServicePaths((home or medcurate_home()).resolve(), _check_name(name))
    return process.stop_server(
        paths.server_files,
        lambda pid: _is_our_process(pid, paths.config_file),
        timeout=timeout,
        interval=0.05,
        label=f"Orthanc ({name})",
        kill=kill,
    )


def status(
    home: Path | None = None, name: str = CLINICAL, env: Mapping[str, str] | None = None
) -> OrthancStatus:
    """Whether the ``name`` Orthanc of MEDCURATE_HOME runs and answers /system (logging in
    with the credentials :func:`credentials` gives for ``env``)."""
    home = (home or medcurate_home()).resolve()
    paths = ServicePaths(home, _check_name(name))
    pid = _read_pid(paths)
    if pid is None:
        return OrthancStatus(name, False, False, None, None)
    url = _read_state(paths).get("url")
    healthy = False
    if url:
        creds = credentials(home, name, env)
        healthy = http_status(f"{url}/system", *creds) == 200
    return OrthancStatus(name, True, healthy, str(url) if url else None, pid)


def start_all(home: Path, say: Callable[[str], None] = print) -> list[OrthancServer]:
    """The clinical and the research server of ``home``, those not running already (returned:
    the ones to stop afterwards), on their default ports or, when those are taken, on free ones.
    One that cannot start is said and left out: the inbox, Label Studio and Dagster work without
    a PACS."""
    started = []
    for name in SERVERS:
        state = status(home, name)
        if state.running:
            say(f"PACS ({name}): already running at {state.url} (left running afterwards)")
            continue
        port, dicom_port = _DEFAULTS[name][:2]
        if not (port_is_free(HOST, port) and port_is_free(HOST, dicom_port)):
            port, dicom_port = free_port(), free_port()  # the default ports are someone else's
        try:
            server = start(home, name, port=port, dicom_port=dicom_port)
        except OrthancError as exc:
            say(f"PACS ({name}): not started: {exc}")
            continue
        started.append(server)
        creds = ServicePaths(home, name).credentials_file
        say(f"PACS ({name}) {server.url}   (user {server.username}; password in {creds})")
    return started


def stop_all(servers: list[OrthancServer], say: Callable[[str], None] = print) -> None:
    """Stop ``servers`` side by side (Orthanc takes ~3.5 s to stop cleanly)."""
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        for server, _ in zip(servers, pool.map(lambda s: s.stop(), servers), strict=True):
            say(f"PACS ({server.name}): stopped")
