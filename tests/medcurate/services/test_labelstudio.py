from __future__ import annotations

import json
import socket
import sqlite3
import stat
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

from medcurate.config import ConfigError
from medcurate.services import labelstudio as ls


def test_credentials_generated_once_private(tmp_path: Path) -> None:
    creds, secret = ls.load_credentials(tmp_path, env={})
    path = ls.ServicePaths(tmp_path).credentials_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.is_relative_to(tmp_path / "restricted")
    assert creds.username == ls.DEFAULT_USERNAME and len(creds.api_key) == 40
    again, secret2 = ls.load_credentials(tmp_path, env={})
    assert (again, secret2) == (creds, secret)
    assert creds.password not in repr(creds) and creds.api_key not in repr(creds)


def test_environment_wins_and_is_not_written(tmp_path: Path) -> None:
    env = {
        "LABEL_STUDIO_USERNAME": "ops@example.org",
        "LABEL_STUDIO_PASSWORD": "pw-from-env",
        "LABEL_STUDIO_API_KEY": "k" * 40,
    }
    creds, _ = ls.load_credentials(tmp_path, env=env)
    assert (creds.username, creds.password, creds.api_key) == (
        "ops@example.org",
        "pw-from-env",
        "k" * 40,
    )
    stored = ls.ServicePaths(tmp_path).credentials_file.read_text()
    assert "pw-from-env" not in stored and "k" * 40 not in stored
    with pytest.raises(ConfigError):
        ls.load_credentials(tmp_path, env={**env, "LABEL_STUDIO_API_KEY": "x" * 41})
    with pytest.raises(ConfigError):
        ls.load_credentials(tmp_path, env={**env, "LABEL_STUDIO_USERNAME": "admin"})


def test_server_env_is_clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("USERNAME", "PASSWORD", "HOST", "PORT", "DEBUG", "LABEL_STUDIO_URL"):
        monkeypatch.setenv(name, "leak")
    env = ls._server_env(tmp_path / "venv", tmp_path / "data", {"SECRET_KEY": "s"})
    assert not {"USERNAME", "PASSWORD", "HOST", "PORT", "DEBUG", "LABEL_STUDIO_URL"} & set(env)
    assert env["SENTRY_DSN"] == "" and env["FRONTEND_SENTRY_DSN"] == ""
    assert env["COLLECT_ANALYTICS"] == "false" and env["LATEST_VERSION_CHECK"] == "false"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"  # invite link only
    assert env["PATH"].startswith(str(tmp_path / "venv" / "bin"))


def test_busy_port_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not ls.port_is_free("127.0.0.1", port)
        with pytest.raises(ls.LabelStudioError, match="busy"):
            ls.start(home=tmp_path / "home", port=port, env={})
    assert not (tmp_path / "home").exists()
    assert ls.port_is_free("127.0.0.1", ls.free_port())


def test_resource_reads_environment_at_use_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from assets.resources import LabelStudioResource

    resource = LabelStudioResource()
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "tok-from-env")
    assert resource.connection() == ("http://127.0.0.1:9", "tok-from-env")
    assert LabelStudioResource(url="http://other:1").connection()[0] == "http://other:1"
    client = resource.client()  # the one client; the SDK's client behind it for the SDK calls
    assert type(client).__name__ == "LabelStudioClient" and client.url == "http://127.0.0.1:9"
    assert type(client.sdk()).__name__ == "LabelStudio"
    assert "tok-from-env" not in repr(client)


def test_connection_from_env_or_running_server(tmp_path: Path) -> None:
    assert ls.connection(env={"LABEL_STUDIO_URL": "http://h:1/", "LABEL_STUDIO_API_KEY": "t"}) == (
        "http://h:1",
        "t",
    )
    with pytest.raises(ConfigError):
        ls.connection(home=tmp_path, env={})
    creds, _ = ls.load_credentials(tmp_path, env={})
    paths = ls.ServicePaths(tmp_path)
    paths.base.mkdir(parents=True)
    paths.state_file.write_text(json.dumps({"url": "http://127.0.0.1:9", "port": 9, "pid": 1}))
    assert ls.connection(home=tmp_path, env={}) == ("http://127.0.0.1:9", creds.api_key)


def test_stopped_status_and_stop_without_server(tmp_path: Path) -> None:
    assert ls.status(tmp_path).running is False
    assert ls.stop(tmp_path) is False


def _get(url: str, token: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@pytest.mark.integration
def test_running_server(labelstudio: ls.LabelStudioServer) -> None:
    st = ls.status(labelstudio.home)
    assert st.running and st.healthy and st.url == labelstudio.url
    assert labelstudio.url.startswith("http://127.0.0.1:")
    assert _get(labelstudio.url + "/api/current-user/whoami", labelstudio.api_key) == 200
    assert _get(labelstudio.url + "/api/current-user/whoami", "0" * 40) == 401
    # the clean environment reached the process, and no SECRET_KEY was written into the data dir
    environ = Path(f"/proc/{labelstudio.pid}/environ").read_bytes().split(b"\0")
    assert b"SENTRY_DSN=" in environ and b"COLLECT_ANALYTICS=false" in environ
    assert not [e for e in environ if e.startswith((b"USERNAME=", b"DEBUG=", b"PORT="))]
    assert not (ls.ServicePaths(labelstudio.home).data / ".env").exists()
    # its database runs in WAL mode (a file property, set by the server's first connection)
    db = ls.ServicePaths(labelstudio.home).data / "label_studio.sqlite3"
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.integration
@pytest.mark.slow
def test_restart_keeps_projects_and_token(tmp_path: Path) -> None:
    from label_studio_sdk import LabelStudio

    server = ls.start(home=tmp_path, port=ls.free_port(), env={})
    try:
        client = LabelStudio(base_url=server.url, api_key=server.api_key)
        pid = client.projects.create(title="restart-check").id
        assert ls.stop(tmp_path) is True
        assert ls.status(tmp_path).running is False
        server = ls.start(home=tmp_path, port=ls.free_port(), env={})
        client = LabelStudio(base_url=server.url, api_key=server.api_key)
        assert client.projects.get(id=pid).title == "restart-check"
    finally:
        ls.stop(tmp_path)
