"""Issue 9, services room: configuration, MEDCURATE_HOME and Label Studio under faults and misuse.

One test per row of the issue's table (2, 9, 11, 12, 13); each failed before the fix. Faults are
produced for real (a file-size limit, a home under a regular file, 0755 folders, a real Label Studio
server): root ignores permission bits, so none of them relies on chmod alone.
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from medcurate.config import ConfigError, OpenZoneError, WeakSaltError, Zones, deid_salt
from medcurate.services import labelstudio as ls

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
MEDCURATE = REPO / ".venv" / "bin" / "medcurate"
PHI = ("DOE^JANE", "MRN4471902")
PATIENT_FOLDER = "DOE^JANE_MRN4471902"


def _obey_modes() -> None:
    """preexec_fn: the child obeys file modes even as root (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH dropped from its bounding set before exec)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP


def _fsize_zero() -> None:
    """preexec_fn: writes of even one byte fail (EFBIG), as on a full or read-only disk."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def _cli(
    args: list[str], home: Path, preexec: Callable[[], None] | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    exe = [str(MEDCURATE)] if MEDCURATE.exists() else [sys.executable, "-m", "medcurate.cli"]
    env = {k: v for k, v in os.environ.items() if k != "MEDCURATE_DEID_SALT"}
    env.update(MEDCURATE_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), **extra)

    return subprocess.run(
        [*exe, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=preexec,
    )


def _source_tree(root: Path) -> Path:
    """A source folder whose patient folder name carries a name and an MRN."""
    series = root / "src" / PATIENT_FOLDER / "20200101_CT" / "SE001"
    series.mkdir(parents=True)
    (series / "IM0001.dcm").write_bytes(b"\0" * 256)
    return root / "src"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


# --------------------------------------------------------------------------- row 2


@pytest.mark.parametrize("fault", ["read-only inbox", "writes fail", "home under a regular file"])
def test_row2_unwritable_home_is_one_line_without_source_paths(tmp_path: Path, fault: str) -> None:
    src = _source_tree(tmp_path)
    home = tmp_path / "home"
    if fault == "read-only inbox":  # an existing home whose inbox the user cannot write
        Zones(home).ensure()
        os.chmod(home / "inbox", 0o555)
        res = _cli(["ingest", str(src)], home, preexec=_obey_modes)
    elif fault == "writes fail":  # an existing home: every folder is there, writing fails
        Zones(home).ensure()
        res = _cli(["ingest", str(src)], home, preexec=_fsize_zero)
    else:
        (tmp_path / "not-a-folder").write_text("x")
        home = tmp_path / "not-a-folder" / "home"
        res = _cli(["ingest", str(src)], home)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "Traceback" not in out
    assert not [p for p in PHI if p in out], out
    assert str(src) not in out
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("medcurate: error: MEDCURATE_HOME ") and "not writable" in line
    assert (src / PATIENT_FOLDER).is_dir()  # the source is untouched


def test_row2_file_errors_never_print_their_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any OSError that reaches the console is shown without its file names (the source's)."""
    from medcurate import cli

    def fail() -> None:
        raise PermissionError(13, "Permission denied", f"/data/{PATIENT_FOLDER}/IM1.dcm", None)

    monkeypatch.setattr(cli, "app", fail)
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "Permission denied" in err and "MEDCURATE_HOME" in err
    assert not [p for p in PHI if p in err]


# --------------------------------------------------------------------------- row 9

WEAK = ["aaaaaaaa", " " * 8, " " * 40, "\t\t\t\t\t\t\t\t", "0123456789", "abababababababab",
        "password1234", " medcurate-test-salt-not-a-secret", "x" * 64]  # fmt: skip


@pytest.mark.parametrize("weak", WEAK, ids=range(len(WEAK)))
def test_row9_low_entropy_salts_are_refused(weak: str) -> None:
    with pytest.raises(WeakSaltError) as err:
        deid_salt({"MEDCURATE_DEID_SALT": weak})
    msg = str(err.value)
    assert "secrets.token_urlsafe(32)" in msg
    assert not weak.strip() or weak.strip() not in msg  # never echoed


def test_row9_salts_the_project_uses_pass_and_the_cli_refuses_a_weak_one(tmp_path: Path) -> None:
    import secrets

    from pipelines.demo import demo_salt
    from tests.conftest import TEST_SALT

    used = [TEST_SALT, demo_salt(Zones(tmp_path)), secrets.token_urlsafe(32)]
    for path in [*REPO.glob("tests/**/*.py"), *REPO.glob("bench/*.py")]:
        used += re.findall(r'^SALT = b"([^"]+)"', path.read_text(), flags=re.M)
    assert len(used) >= 6
    for salt in used:
        assert deid_salt({"MEDCURATE_DEID_SALT": salt}) == salt.encode()
    assert _mode(tmp_path / "restricted" / "demo-salt") == 0o600

    src = _source_tree(tmp_path)
    res = _cli(
        ["deid", str(src), str(tmp_path / "dst"), "--restricted", str(tmp_path / "r")],
        tmp_path / "home",
        MEDCURATE_DEID_SALT="aaaaaaaa",
    )
    assert res.returncode == 2 and "repeats one character" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "dst").exists() and not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- row 11


@pytest.fixture
def loose_umask():  # type: ignore[no-untyped-def]
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("loose_umask")
def test_row11_restricted_is_owner_only_and_an_open_home_is_refused(tmp_path: Path) -> None:
    from assets.resources import MedcurateHome
    from medcurate.home import init_home

    home = tmp_path / "home"
    z = Zones(home)
    init_home(z)
    for p in (z.restricted, z.raw, z.quarantine, z.duplicates, z.catalog, z.dagster_home):
        assert _mode(p) == 0o700, p
    assert _mode(z.dagster_home / "dagster.yaml") == 0o600

    # a home made by the old code: 0755 folders, a 0644 crosswalk and Label Studio database
    z.crosswalk("b1").parent.mkdir()
    z.crosswalk("b1").write_text("P-0001,DOE^JANE\n")
    (z.labelstudio / "data").mkdir(parents=True)
    (z.labelstudio / "data" / "label_studio.sqlite3").write_bytes(b"token")
    for p in (z.restricted, z.raw, z.dagster_home, z.labelstudio, z.labelstudio / "data"):
        os.chmod(p, 0o755)
    for p in (
        z.crosswalk("b1"),
        z.labelstudio / "data" / "label_studio.sqlite3",
    ):
        os.chmod(p, 0o644)

    with pytest.raises(OpenZoneError, match="chmod -R go-rwx") as err:
        z.ensure()
    assert isinstance(err.value, ConfigError)
    with pytest.raises(OpenZoneError):
        MedcurateHome(home=str(home)).zones()  # every asset and sensor starts here
    with pytest.raises(OpenZoneError):
        ls.start(home=home, port=ls.free_port(), env={})  # refused before anything starts
    with pytest.raises(OpenZoneError):
        ls.connection(home=home, env={})
    res = _cli(["ingest"], home)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    [line] = res.stderr.strip().splitlines()
    assert "readable by other users" in line and "chmod -R go-rwx" in line and "init-home" in line

    # init-home (what `make setup` runs) repairs it, says so, and the check passes again
    res = _cli(["init-home", "--quiet"], home)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and "fixed permissions" in res.stderr
    z.ensure()
    for root in (z.restricted, z.dagster_home, z.labelstudio):
        for p in [root, *root.rglob("*")]:
            assert not _mode(p) & 0o077, p


# --------------------------------------------------------------------------- rows 12 and 13


def _users(server: ls.LabelStudioServer) -> list[str]:
    import requests

    resp = requests.get(
        f"{server.url}/api/users/", headers={"Authorization": f"Token {server.api_key}"}, timeout=30
    )
    resp.raise_for_status()
    body = resp.json()
    rows = body["results"] if isinstance(body, dict) else body
    return sorted(str(u["email"]) for u in rows)


@pytest.mark.integration
def test_row12_label_studio_files_are_owner_only(labelstudio: ls.LabelStudioServer) -> None:
    from label_studio_sdk import LabelStudio

    # make the server write: a project (database, its journal) and an export folder
    client = LabelStudio(base_url=labelstudio.url, api_key=labelstudio.api_key)
    client.projects.create(title="row-12 modes")
    status = Path(f"/proc/{labelstudio.pid}/status").read_text()
    assert re.search(r"^Umask:\s+0077$", status, flags=re.M), status
    paths = ls.ServicePaths(labelstudio.home)
    checked = []
    # Django saves uploads and exports (media/) 0644 whatever the umask (FILE_UPLOAD_PERMISSIONS):
    # those hold no secret and sit below 0700 folders; every folder and every other file is
    # owner-only.
    for root in (paths.base, paths.secrets_dir, ls.template_dir()):
        for p in [root, *root.rglob("*")]:
            if p.is_symlink() or (p.is_file() and "media" in p.relative_to(root).parts):
                continue
            try:
                mode = _mode(p)
            except FileNotFoundError:  # sqlite's -wal/-shm files come and go with connections
                continue
            checked.append(p)
            assert not mode & 0o077, f"{p} is {oct(mode)}"
    media = [p for p in paths.data.rglob("*") if "media" in p.relative_to(paths.data).parts]
    assert all(_mode(p) == 0o700 for p in media if p.is_dir())
    assert paths.data / "label_studio.sqlite3" in checked
    assert paths.credentials_file in checked
    assert _mode(paths.data) == 0o700 and _mode(paths.data / "label_studio.sqlite3") == 0o600


@pytest.mark.integration
def test_row13_sign_up_only_through_the_invite_link(labelstudio: ls.LabelStudioServer) -> None:
    import requests

    from annotation.client import LabelStudioClient, csrf_token

    before = _users(labelstudio)
    signup = f"{labelstudio.url}/user/signup/"
    for url in (signup, signup + "?token=not-the-invite-token"):
        with requests.Session() as s:
            form = {
                "email": "intruder@example.org",
                "password": "Intruder-pass-123",
                "csrfmiddlewaretoken": csrf_token(s, url),
            }
            resp = s.post(url, data=form, headers={"Referer": url}, timeout=30)
            assert resp.status_code == 403, resp.status_code
            assert s.get(f"{labelstudio.url}/api/projects/", timeout=30).status_code in (401, 403)
    assert _users(labelstudio) == before

    # the pipeline's own invitation still works (the simulated annotators use it)
    email = "invited-annotator@medcurate.local"
    admin = LabelStudioClient(labelstudio.url, labelstudio.api_key)
    token = admin.signup(email, "Invited-pass-123").token
    assert _users(labelstudio) == sorted([*before, email])
    who = requests.get(
        f"{labelstudio.url}/api/current-user/whoami",
        headers={"Authorization": f"Token {token}"},
        timeout=30,
    )
    assert who.status_code == 200 and who.json()["email"] == email
