"""A local S3 endpoint (moto's server mode) as a managed process: start/stop/status.

Why it exists: the dataset store also runs on object storage (``MEDCURATE_STORE=s3://bucket/
prefix``, through s3fs). Tests and ``make cluster-demo`` need a real S3 endpoint without the
internet, so this starts moto's S3 server the same way Orthanc and Label Studio are managed
(``process``): its own session, pid/state/log files 0600 in a 0700 folder, a pid acted on only
after checking it is still this server.

Why it looks like this:

- It binds 127.0.0.1 on a free port (werkzeug binds exactly the host it is given), never every
  interface; the port is in the state file for other processes.
- moto accepts any credentials; clients must still sign with some. The server and its clients
  use moto's documented dummy ones (``testing``), set in the environment here, never real keys.
- Clients find the endpoint through ``AWS_ENDPOINT_URL`` (read by botocore at every client
  creation, so by s3fs), which is why the store itself needs no S3-specific setting:
  :meth:`S3Server.client_env` gives the variables, :meth:`S3Server.storage_options` the same as
  fsspec options.
- The bucket is created on start. moto keeps everything in memory: a stop empties the store,
  which is right for tests and the demo, and the reason this is no place for data to keep.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from medcurate.config import ConfigError, medcurate_home
from medcurate.perms import private_dir, private_tree
from medcurate.services import process
from medcurate.services.labelstudio import free_port, port_is_free

__all__ = [
    "BUCKET",
    "S3LocalError",
    "S3Server",
    "S3Status",
    "ServicePaths",
    "check_bucket",
    "client_env",
    "start",
    "status",
    "stop",
]

HOST = "127.0.0.1"
BUCKET = "medcurate"
REGION = "us-east-1"
DUMMY_KEY_ID = "testing"  # moto's documented dummy credentials: not a secret
DUMMY_SECRET = "testing"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MODULE = b"moto.server"


class S3LocalError(RuntimeError):
    """The local S3 endpoint could not be started or reached."""


def check_bucket(name: str) -> str:
    """``name`` when it is a valid S3 bucket name, else ConfigError."""
    if not _BUCKET_NAME.match(name) or ".." in name:
        raise ConfigError(f"invalid S3 bucket name {name!r} (3-63 of a-z, 0-9, '.', '-')")
    return name


@dataclass(frozen=True)
class ServicePaths(process.ServerPaths):
    """Files of the local S3 endpoint under a MEDCURATE_HOME (its data lives in memory)."""

    STEM: ClassVar[str] = "moto"

    home: Path

    @property
    def base(self) -> Path:
        return self.home / "s3local"


def client_env(url: str) -> dict[str, str]:
    """The environment a client (s3fs, boto3, the ``medcurate`` CLI) needs for ``url``."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": DUMMY_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET,
        "AWS_DEFAULT_REGION": REGION,
    }


@dataclass(frozen=True)
class S3Server:
    """A running local S3 endpoint: where it answers and its bucket."""

    url: str
    port: int
    bucket: str
    pid: int
    home: Path

    def store_url(self, prefix: str = "releases") -> str:
        """An fsspec URL for the dataset store in this server's bucket."""
        prefix = prefix.strip("/")
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def client_env(self) -> dict[str, str]:
        return client_env(self.url)

    def storage_options(self) -> dict[str, object]:
        """The same settings as s3fs options (``ObjectStore(url, **options)``)."""
        return {
            "endpoint_url": self.url,
            "key": DUMMY_KEY_ID,
            "secret": DUMMY_SECRET,
            "client_kwargs": {"region_name": REGION},
        }

    def stop(self, timeout: float = 10.0) -> bool:
        return stop(self.home, timeout=timeout)


@dataclass(frozen=True)
class S3Status:
    running: bool
    healthy: bool
    url: str | None
    pid: int | None

    def line(self) -> str:
        return process.status_line("s3 (local)", self.running, self.healthy, self.url, self.pid)


def _http(method: str, url: str) -> int:
    """The HTTP status of an unsigned request (moto does not check signatures); 0: no answer."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "PUT" else None)
    try:
        with urllib.request.urlopen(req, timeout=2.0) as resp:  # a loopback URL we built
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, urllib.error.URLError):
        return 0


def _is_our_process(pid: int, paths: ServicePaths) -> bool:
    """True when ``pid`` runs ``moto.server`` in this home's service folder (its cwd): a stale
    pid file must never make us signal an unrelated process."""
    proc = Path(f"/proc/{pid}")
    try:
        cmdline = (proc / "cmdline").read_bytes()
        cwd = os.readlink(proc / "cwd")
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":  # an exited child not yet reaped is not a server
        return False
    return _MODULE in cmdline.split(b"\0") and Path(cwd) == paths.base.resolve()


def _read_pid(paths: ServicePaths) -> int | None:
    return process.read_pid(paths.server_files, lambda pid: _is_our_process(pid, paths))


def _read_state(paths: ServicePaths) -> dict[str, object]:
    try:
        return dict(json.loads(paths.state_file.read_text()))
    except (OSError, ValueError):
        return {}


def _make_bucket(url: str, bucket: str) -> None:
    code = _http("PUT", f"{url}/{bucket}")
    if code != 200:
        raise S3LocalError(f"creating bucket {bucket!r} on {url} failed (HTTP {code})")


def start(
    home: Path | None = None,
    port: int | None = None,
    bucket: str = BUCKET,
    timeout: float = 30.0,
) -> S3Server:
    """Start the local S3 endpoint of MEDCURATE_HOME with ``bucket`` (or return the one running
    there, the bucket added). ``port`` None: a free one; a busy port is refused."""
    home = (home or medcurate_home()).resolve()
    paths = ServicePaths(home)
    check_bucket(bucket)
    running = _read_pid(paths)
    if running is not None:
        known = _read_state(paths)
        url = str(known.get("url", ""))
        if url and _http("GET", url + "/") == 200:
            _make_bucket(url, bucket)
            return S3Server(url, int(str(known["port"])), bucket, running, home)
        raise S3LocalError(
            f"a moto server (pid {running}) is registered in {paths.base} but does not answer: "
            "stop it first"
        )
    if importlib.util.find_spec("moto") is None:
        raise S3LocalError("moto is not installed: pip install 'moto[server]' (the dev extra)")
    port = free_port(HOST) if port is None else port
    if not port_is_free(HOST, port):
        raise S3LocalError(f"port {port} on {HOST} is busy: choose another")
    private_dir(paths.base)
    private_tree(paths.base)
    server_env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(paths.base),
        "PYTHONUNBUFFERED": "1",
        "AWS_ACCESS_KEY_ID": DUMMY_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET,
        "AWS_DEFAULT_REGION": REGION,
    }
    url = f"http://{HOST}:{port}"
    cmd = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    state: dict[str, object] = {"url": url, "port": port}
    proc = process.spawn(paths.server_files, cmd, server_env, paths.base, state)
    process.wait_started(
        proc,
        paths.server_files,
        lambda: _http("GET", url + "/") == 200,
        label="moto S3 server",
        url=url,
        timeout=timeout,
        interval=0.05,
        error=S3LocalError,
        stop=lambda: stop(home),
    )
    _make_bucket(url, bucket)
    return S3Server(url, port, bucket, proc.pid, home)


def stop(home: Path | None = None, timeout: float = 10.0, kill: bool = False) -> bool:
    """Stop the local S3 endpoint of MEDCURATE_HOME (TERM its group, then KILL); its data goes
    with it. True if one was running."""
    paths = ServicePaths((home or medcurate_home()).resolve())
    return process.stop_server(
        paths.server_files,
        lambda pid: _is_our_process(pid, paths),
        timeout=timeout,
        interval=0.05,
        label="moto S3 server",
        kill=kill,
    )


def status(home: Path | None = None) -> S3Status:
    """Whether the local S3 endpoint of MEDCURATE_HOME runs and answers (ListBuckets)."""
    paths = ServicePaths((home or medcurate_home()).resolve())
    pid = _read_pid(paths)
    if pid is None:
        return S3Status(False, False, None, None)
    url = _read_state(paths).get("url")
    healthy = bool(url) and _http("GET", f"{url}/") == 200
    return S3Status(True, healthy, str(url) if url else None, pid)
