"""Owner-only helpers: modes are set explicitly, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from medcurate.perms import (
    PermissionsError,
    open_to_others,
    private_dir,
    private_tree,
    require_private,
    write_private_bytes,
)


@pytest.fixture
def loose_umask():  # type: ignore[no-untyped-def]
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_private_dir_sets_0700_on_path_and_parents_below_root(tmp_path: Path, loose_umask) -> None:  # type: ignore[no-untyped-def]
    outer = tmp_path / "home"
    outer.mkdir()
    os.chmod(outer, 0o755)
    root = outer / "restricted"
    root.mkdir()
    target = private_dir(root / "raw" / "b1" / "Doe^Jane", root=root)
    assert [_mode(p) for p in (target, target.parent, target.parent.parent, root)] == [0o700] * 4
    assert _mode(outer) == 0o755  # above the root: untouched


def test_write_private_bytes_is_0600_and_atomic(tmp_path: Path, loose_umask) -> None:  # type: ignore[no-untyped-def]
    p = write_private_bytes(tmp_path / "crosswalk.csv", b"a,b\n")
    assert p.read_bytes() == b"a,b\n" and _mode(p) == 0o600
    assert [x.name for x in tmp_path.iterdir()] == ["crosswalk.csv"]


def test_private_tree_and_require_private(tmp_path: Path, loose_umask) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "r" / "a").mkdir(parents=True)
    (tmp_path / "r" / "a" / "f").write_text("x")
    assert open_to_others([tmp_path / "r", tmp_path / "r" / "a" / "f"])
    with pytest.raises(PermissionsError, match="chmod -R go-rwx"):
        require_private([tmp_path / "r"])
    private_tree(tmp_path / "r")
    assert open_to_others([tmp_path / "r", tmp_path / "r" / "a", tmp_path / "r" / "a" / "f"]) == []
    require_private([tmp_path / "r", tmp_path / "missing"])


def test_private_tree_skips_a_file_gone_since_the_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running sqlite's -shm file can vanish between os.walk's listing and the chmod."""
    import medcurate.perms as perms

    (tmp_path / "r").mkdir()
    for name in ("db.sqlite3", "db.sqlite3-shm"):
        (tmp_path / "r" / name).write_bytes(b"x")
        os.chmod(tmp_path / "r" / name, 0o644)
    real = perms.make_private

    def vanishing(path: Path) -> Path:
        if Path(path).name.endswith("-shm"):
            Path(path).unlink()
        return real(path)

    monkeypatch.setattr(perms, "make_private", vanishing)
    perms.private_tree(tmp_path / "r")
    assert stat.S_IMODE((tmp_path / "r" / "db.sqlite3").stat().st_mode) == 0o600
