import os
import subprocess
import sys
from pathlib import Path


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medcurate.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deid_without_salt_fails_clearly_before_touching_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.dcm").write_bytes(b"not really dicom")
    env = {k: v for k, v in os.environ.items() if k != "MEDCURATE_DEID_SALT"}
    res = _run(["deid", str(src), str(tmp_path / "dst"), "--restricted", str(tmp_path / "r")], env)
    assert res.returncode == 2
    assert "MEDCURATE_DEID_SALT is not set" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "dst").exists() and not (tmp_path / "r").exists()
    assert (src / "a.dcm").exists()


def test_synth_then_ingest_from_the_command_line(tmp_path: Path) -> None:
    env = dict(os.environ, MEDCURATE_HOME=str(tmp_path / "home"))
    res = _run(["synth", str(tmp_path / "s"), "--patients", "2", "--seed", "3"], env)
    assert res.returncode == 0, res.stderr
    assert "2 patients" in res.stdout
    res = _run(["ingest", str(tmp_path / "s")], env)
    assert res.returncode == 0, res.stderr
    files = sum(1 for p in (tmp_path / "s").rglob("*") if p.is_file())
    assert f"received {files}" in res.stdout or f"{files} received" in res.stdout
