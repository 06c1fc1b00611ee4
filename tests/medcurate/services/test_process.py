"""The shared plumbing of the managed servers, driven with harmless ``sh``/``sleep`` children.

A child counts as "ours" when its working directory is the test's folder (what ``spawn`` sets):
the same kind of check the services make on their command lines, and one that neither this test
process nor a stray ``sleep`` passes.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from medcurate.services import process
from medcurate.services.wait import wait_until


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def files(tmp_path: Path) -> process.ServerFiles:
    return process.ServerFiles(tmp_path / "srv.pid", tmp_path / "server.json", tmp_path / "srv.log")


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    yield  # pytest runs the rest whatever the test's outcome
    os.umask(old)


def _ours(folder: Path) -> process.IsOurs:
    def is_ours(pid: int) -> bool:
        try:
            return os.readlink(f"/proc/{pid}/cwd") == str(folder)
        except OSError:  # gone, or a zombie
            return False

    return is_ours


def _group(pgid: int) -> list[int]:
    """The pids of process group ``pgid`` (zombies included)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _sleep_in_group(pgid: int) -> bool:
    """A member of the group has exec'd ``sleep``: a TERM sent between sh's fork and the child's
    exec would be taken by sh's trap in the child and lost, leaving the sleep behind."""
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)
        except OSError:
            continue
        if fields[0].endswith("(sleep") and int(fields[1].split()[2]) == pgid:
            return True
    return False


def _spawn_sh(files: process.ServerFiles, script: str) -> subprocess.Popen[bytes]:
    env = {"PATH": "/usr/bin:/bin"}
    return process.spawn(files, ["sh", "-c", script], env, files.pid_file.parent, {"url": "u"})


def _wait_started(
    proc: subprocess.Popen[bytes],
    files: process.ServerFiles,
    answers: Callable[[], bool],
    timeout: float,
    stop: Callable[[], object] = lambda: None,
    label: str = "Demo",
) -> None:
    process.wait_started(
        proc,
        files,
        answers,
        label=label,
        url="http://h:1",
        timeout=timeout,
        interval=0.01,
        error=ValueError,
        stop=stop,
    )


def test_spawn_writes_private_files_and_runs_in_its_own_session(
    files: process.ServerFiles, umask_000: None
) -> None:
    files.log_file.write_bytes(b"earlier run\n")
    files.log_file.chmod(0o600)
    proc = _spawn_sh(files, "echo started; echo x > written; exec sleep 300")
    try:
        assert files.pid_file.read_text() == f"{proc.pid}\n"
        assert json.loads(files.state_file.read_text()) == {"url": "u", "pid": proc.pid}
        assert list(json.loads(files.state_file.read_text())) == ["url", "pid"]
        for path in (files.pid_file, files.state_file, files.log_file):
            assert _mode(path) == 0o600, path
        assert os.getsid(proc.pid) == proc.pid  # session and group leader: stop reaches its tree
        written = files.pid_file.parent / "written"
        wait_until(lambda: b"started" in files.log_file.read_bytes(), 10, what="child output")
        wait_until(written.exists, 10, what="child file")
        assert _mode(written) == 0o600  # the server's umask, not ours (000)
        assert files.log_file.read_bytes().startswith(b"earlier run\nstarted\n")  # appended
        assert process.read_pid(files, _ours(files.pid_file.parent)) == proc.pid
    finally:
        assert process.stop_server(
            files, _ours(files.pid_file.parent), timeout=10, interval=0.05, label="t"
        )


def test_new_log_is_0600_whatever_the_umask(files: process.ServerFiles, umask_000: None) -> None:
    proc = _spawn_sh(files, "exit 0")
    proc.wait()
    assert _mode(files.log_file) == 0o600


def test_stale_pid_of_another_process_is_never_signalled(
    files: process.ServerFiles, tmp_path: Path
) -> None:
    stranger = subprocess.Popen(["sleep", "300"], cwd="/")  # alive, but not our server
    try:
        for pid in (stranger.pid, os.getpid()):
            files.pid_file.write_text(f"{pid}\n")
            files.state_file.write_text("{}\n")
            is_ours = _ours(tmp_path)
            assert process.read_pid(files, is_ours) is None
            assert process.stop_server(files, is_ours, timeout=5, interval=0.05, label="t") is False
            assert not files.pid_file.exists() and not files.state_file.exists()
        assert stranger.poll() is None  # still running: no signal reached it
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("content", [None, "", "not a pid\n", "-\n"])
def test_missing_or_garbled_pid_file_reads_as_none(
    files: process.ServerFiles, content: str | None
) -> None:
    if content is not None:
        files.pid_file.write_text(content)
    assert process.read_pid(files, lambda pid: True) is None


def test_process_exiting_during_start_raises_with_log_tail(files: process.ServerFiles) -> None:
    proc = _spawn_sh(files, "echo 'fatal: no config' >&2; exit 3")
    stops: list[int] = []
    with pytest.raises(ValueError) as err:
        _wait_started(proc, files, lambda: False, 60, lambda: stops.append(1), "Demo (clinical)")
    message = str(err.value)
    assert message.startswith(f"Demo (clinical) exited with rc=3; log {files.log_file}:\n")
    assert message.endswith("fatal: no config\n")
    assert not files.pid_file.exists() and not files.state_file.exists()
    assert files.log_file.exists() and stops == []  # the log stays; nothing left to stop


def test_start_that_never_answers_is_stopped(files: process.ServerFiles) -> None:
    proc = _spawn_sh(files, "exec sleep 300")
    is_ours = _ours(files.pid_file.parent)

    def stop() -> bool:
        return process.stop_server(files, is_ours, timeout=10, interval=0.05, label="Demo")

    with pytest.raises(ValueError, match=r"^Demo did not answer on http://h:1 within 0 s$"):
        _wait_started(proc, files, lambda: False, 0.2, stop)
    assert not Path(f"/proc/{proc.pid}").exists()  # stopped and reaped
    assert not files.pid_file.exists() and not files.state_file.exists()


def test_start_returns_once_it_answers(files: process.ServerFiles) -> None:
    proc = _spawn_sh(files, "exec sleep 300")
    calls: list[int] = []
    _wait_started(proc, files, lambda: calls.append(1) is None and len(calls) >= 3, 60)
    assert len(calls) == 3 and files.pid_file.exists()
    assert process.stop_server(
        files, _ours(files.pid_file.parent), timeout=10, interval=0.05, label="t"
    )


def test_stop_terminates_the_whole_group(files: process.ServerFiles) -> None:
    proc = _spawn_sh(files, "sleep 300 & sleep 300 & echo forked; wait")
    wait_until(lambda: b"forked" in files.log_file.read_bytes(), 10, what="children")
    wait_until(lambda: len(_group(proc.pid)) == 3, 10, what="three processes in the group")
    is_ours = _ours(files.pid_file.parent)
    assert process.stop_server(files, is_ours, timeout=10, interval=0.05, label="t") is True
    assert not Path(f"/proc/{proc.pid}").exists()  # the leader is reaped, not a zombie
    # the two sleeps were not our children (init reaps them): they go once TERM reaches them
    wait_until(lambda: _group_gone(proc.pid), 10, what="the whole group gone")
    assert not files.pid_file.exists() and not files.state_file.exists()
    assert process.stop_server(files, is_ours, timeout=10, interval=0.05, label="t") is False


def test_term_ignored_then_kill(files: process.ServerFiles) -> None:
    proc = _spawn_sh(files, "trap '' TERM; echo ready; exec sleep 300")
    wait_until(lambda: b"ready" in files.log_file.read_bytes(), 10, what="trap set")
    is_ours = _ours(files.pid_file.parent)
    assert process.stop_server(files, is_ours, timeout=0.3, interval=0.05, label="t") is True
    assert _group_gone(proc.pid)  # only KILL could end it


@pytest.mark.parametrize("kill", [False, True])
def test_kill_skips_term(files: process.ServerFiles, kill: bool) -> None:
    proc = _spawn_sh(files, "trap 'echo got-term; exit 0' TERM; sleep 300 & echo ready; wait")
    # "ready" once the sleep is forked: a TERM sent earlier would miss it (sh forks, then traps)
    wait_until(lambda: b"ready" in files.log_file.read_bytes(), 10, what="child forked")
    wait_until(lambda: _sleep_in_group(proc.pid), 10, what="sleep exec'd")
    is_ours = _ours(files.pid_file.parent)
    assert process.stop_server(files, is_ours, timeout=10, interval=0.05, label="t", kill=kill)
    wait_until(lambda: _group_gone(proc.pid), 10, what="the whole group gone")
    assert (b"got-term" in files.log_file.read_bytes()) is not kill


def test_gone_reaps_our_exited_child() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    wait_until(lambda: process.gone(proc.pid, lambda pid: True), 10, what="exit")
    assert not Path(f"/proc/{proc.pid}").exists()  # reaped: no zombie left behind
    running = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        assert not process.gone(running.pid, lambda pid: False)  # our running child: not gone
    finally:
        os.killpg(running.pid, signal.SIGKILL)
        running.wait()


def test_log_tail(files: process.ServerFiles) -> None:
    assert process.log_tail(files) == ""
    files.log_file.write_bytes(b"a" * 2000 + b"end\xff")
    tail = process.log_tail(files)
    assert len(tail) == 1500 and tail.endswith("end\ufffd")
    assert process.log_tail(files, 4) == "end\ufffd"


def test_forget_removes_pid_and_state_only(files: process.ServerFiles) -> None:
    process.forget(files)  # nothing there: no error
    for path in (files.pid_file, files.state_file, files.log_file):
        path.write_text("x")
    process.forget(files)
    assert not files.pid_file.exists() and not files.state_file.exists()
    assert files.log_file.exists()


def test_settle_secrets_environment_wins_and_only_generated_values_are_stored() -> None:
    variables = {"user": "T_USER", "password": "T_PASSWORD", "token": "T_TOKEN"}
    generators = {"user": lambda: "gen-user", "password": lambda: "gen-pw", "token": lambda: "t"}
    stored = {"password": "kept-pw"}
    values, changed = process.settle_secrets(
        {"T_USER": "env-user", "T_TOKEN": ""}, stored, variables, generators
    )
    assert values == {"user": "env-user", "password": "kept-pw", "token": "t"}
    assert changed and stored == {"password": "kept-pw", "token": "t"}  # no env value stored
    again, changed = process.settle_secrets({}, stored, variables, generators)
    assert again == {"user": "gen-user", "password": "kept-pw", "token": "t"} and changed
    third, changed = process.settle_secrets({}, stored, variables, generators)
    assert third == again and not changed


def test_status_line() -> None:
    assert (
        process.status_line("pacs research", False, False, None, None) == "pacs research: stopped"
    )
    line = process.status_line("label studio", True, False, "http://127.0.0.1:8080", 42)
    assert line == "label studio: running (pid 42) at http://127.0.0.1:8080, not answering"
    assert process.status_line("x", True, True, "u", 1) == "x: running (pid 1) at u, healthy"
