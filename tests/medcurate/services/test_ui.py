"""``medcurate ui`` (``make ui``) starts Dagster, Label Studio and the figures server, prints
where to log in, and leaves nothing running after Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from medcurate.config import Zones
from medcurate.services import labelstudio as ls
from medcurate.services import orthanc
from medcurate.services.ui import dagster_env, login_lines, wait_for

BIN = Path(sys.executable).parent


def test_dagster_env_and_login_lines(zones_tmp: Zones, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDCURATE_DEID_SALT", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_PASSWORD", raising=False)
    zones_tmp.restricted.mkdir(exist_ok=True)
    zones_tmp.demo_salt.write_text("ab" * 32 + "\n")
    env = dagster_env(zones_tmp, "http://127.0.0.1:4001")
    assert env["MEDCURATE_DEID_SALT"] == "ab" * 32  # after `make demo`: the demo's salt
    assert env["MEDCURATE_FIGURES_URL"] == "http://127.0.0.1:4001"
    assert (env["DO_NOT_TRACK"], env["GX_ANALYTICS_ENABLED"]) == ("1", "false")
    monkeypatch.setenv("MEDCURATE_DEID_SALT", "cd" * 32)
    assert dagster_env(zones_tmp, "x")["MEDCURATE_DEID_SALT"] == "cd" * 32

    lines = "\n".join(login_lines(zones_tmp.home, "http://127.0.0.1:8080"))
    creds, _ = ls.load_credentials(zones_tmp.home)
    assert (
        creds.username in lines and str(ls.ServicePaths(zones_tmp.home).credentials_file) in lines
    )
    assert creds.password not in lines and creds.api_key not in lines


def _answers(url: str) -> bool:
    return ls.http_status(url, timeout=2.0) != 0


@pytest.mark.slow
@pytest.mark.integration
def test_ui_starts_everything_and_ctrl_c_stops_everything(zones_tmp: Zones) -> None:
    ports = {name: ls.free_port() for name in ("dagster", "figures", "labelstudio")}
    (zones_tmp.curated / "figures").mkdir(parents=True, exist_ok=True)
    (zones_tmp.curated / "figures" / "plot.png").write_bytes(b"\x89PNG test")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
    cmd = [str(BIN / "medcurate"), "ui", *(f"--{n}-port={p}" for n, p in ports.items())]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True)
    reader.start()
    dagster = f"http://127.0.0.1:{ports['dagster']}"
    figures = f"http://127.0.0.1:{ports['figures']}"
    labelstudio = f"http://127.0.0.1:{ports['labelstudio']}"
    try:
        assert wait_for(dagster + "/server_info", 300), "".join(out)
        assert wait_for(figures + "/curated/figures/plot.png", 10)
        assert wait_for(labelstudio + "/health", 10)
        assert ls.status(zones_tmp.home).running
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            ls.stop(zones_tmp.home)
    reader.join(timeout=10)
    text = "".join(out)
    creds, _ = ls.load_credentials(zones_tmp.home)
    assert dagster in text and labelstudio in text and creds.username in text
    assert creds.password not in text
    assert "dagster: stopped" in text and "label studio: stopped" in text
    for name in orthanc.SERVERS:  # both PACS were started for this home, and stopped
        assert f"PACS ({name}) http://127.0.0.1:" in text and f"PACS ({name}): stopped" in text
        assert not orthanc.status(zones_tmp.home, name).running
    assert orthanc.credentials(zones_tmp.home, orthanc.CLINICAL, env={})[1] not in text
    match = re.search(r"pid (\d+)", text)
    assert match, text
    with pytest.raises(ProcessLookupError):  # dagster dev, its webserver and daemon are gone
        os.killpg(int(match.group(1)), 0)
    for url in (dagster, figures, labelstudio):
        assert not _answers(url), url
    assert not ls.status(zones_tmp.home).running
