import os
import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
import typer
from typer.main import get_command

import medcurate.cli as cli


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medcurate.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
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


@pytest.mark.slow
def test_synth_then_ingest_from_the_command_line(tmp_path: Path) -> None:
    env = dict(os.environ, MEDCURATE_HOME=str(tmp_path / "home"))
    res = _run(["synth", str(tmp_path / "s"), "--patients", "2", "--seed", "3"], env)
    assert res.returncode == 0, res.stderr
    assert "2 patients" in res.stdout
    res = _run(["ingest", str(tmp_path / "s")], env)
    assert res.returncode == 0, res.stderr
    files = sum(1 for p in (tmp_path / "s").rglob("*") if p.is_file())
    assert f"received {files}" in res.stdout or f"{files} received" in res.stdout


def test_synth_writes_the_truth_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    env = dict(os.environ, MEDCURATE_HOME=str(tmp_path / "home"))
    truth = tmp_path / "truth"
    old = os.umask(0)
    try:
        res = _run(["synth", str(tmp_path / "s"), "-n", "1", "--truth", str(truth)], env)
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stderr
    modes = {p: p.stat().st_mode & 0o777 for p in [truth, *truth.rglob("*")]}
    assert len(modes) > 2
    assert all(m == (0o700 if p.is_dir() else 0o600) for p, m in modes.items()), modes


def test_the_cli_starts_without_heavy_modules() -> None:
    """`medcurate --help` stays fast: the heavy libraries load inside the commands that use them."""
    heavy = ["numpy", "pandas", "pyarrow", "pydicom", "nibabel", "SimpleITK", "torch", "monai"]
    heavy += [
        "dagster",
        "label_studio_sdk",
        "matplotlib",
        "scipy",
        "sklearn",
        "annotation.simulate",
    ]
    code = f"import sys, medcurate.cli; print([m for m in {heavy!r} if m in sys.modules])"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# ------------------------------------------------------------------------ commands of other rooms


def test_annotate_sim_comes_from_the_annotation_room_through_its_entry_point() -> None:
    [ep] = [e for e in entry_points(group=cli.COMMANDS_GROUP) if e.name == "annotate-sim"]
    assert ep.value == "annotation.cli:annotate_sim"
    command = get_command(cli.app).commands["annotate-sim"]  # type: ignore[attr-defined]
    assert {p.name for p in command.params} >= {"round_number", "annotators", "noise", "truth"}


def test_annotate_sim_help_from_the_console_script() -> None:
    res = subprocess.run(
        [str(Path(sys.executable).parent / "medcurate"), "annotate-sim", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "--round" in res.stdout and "--annotators" in res.stdout
    assert "warning" not in res.stderr


def test_a_plugin_that_fails_to_load_is_left_out_with_a_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    group = cli.COMMANDS_GROUP
    fake = [
        EntryPoint("hello", f"{__name__}:_hello", group),
        EntryPoint("tools", f"{__name__}:_tools", group),
        EntryPoint("broken", "medcurate_no_such_module:command", group),
        EntryPoint("hello", f"{__name__}:_hello", group),  # the same dist twice on sys.path
    ]
    monkeypatch.setattr(cli, "entry_points", lambda group: [e for e in fake if e.group == group])
    target = typer.Typer()
    target.command("core")(lambda: None)
    assert cli.register_plugins(target) == ["hello", "tools"]
    assert "command broken not loaded" in capsys.readouterr().err
    assert set(get_command(target).commands) == {"core", "hello", "tools"}  # type: ignore[attr-defined]


def _hello() -> None:
    print("hello")


_tools = typer.Typer()


@_tools.command()
def _tool() -> None:
    print("tool")


@pytest.mark.slow
def test_evaluate_names_what_is_wrong_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from medcurate.store.objects import ObjectStore
    from tests.evaluate_helpers import release_blobs

    monkeypatch.setenv("MEDCURATE_HOME", str(tmp_path / "home"))

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["medcurate", *args])
        with pytest.raises(SystemExit) as exit_:
            cli.main()
        return int(exit_.value.code or 0), capsys.readouterr().err

    code, err = run("evaluate", "nothing@v1", "--store", str(tmp_path / "none"))
    assert code == 2 and "no dataset store" in err
    release_blobs(tmp_path / "v", ObjectStore(str(tmp_path / "store")), n=12)
    code, err = run("evaluate", "blobs@v1", "--store", str(tmp_path / "store"), "--preset", "huge")
    assert code == 2 and "unknown evaluation preset 'huge'" in err and "Traceback" not in err
