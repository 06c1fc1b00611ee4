"""Owner-only files and folders, whatever the umask.

``restricted/`` holds patient names (in folder names, the crosswalk, the catalog) and secrets: every
local user must be kept out of it. A umask of 022 would make what we create readable by all, so
everything written there goes through these helpers, which set the mode explicitly.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

OWNER_DIR = 0o700
OWNER_FILE = 0o600
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


class PermissionsError(RuntimeError):
    """A folder that must be owner-only is open to other users."""


def private_dir(path: Path, root: Path | None = None) -> Path:
    """Create ``path`` (and its missing parents) as 0700 and return it.

    With ``root``, every folder from ``root`` down to ``path`` is made 0700 too (the parents
    matter: a 0755 parent lets others list patient-named folders below it).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chain = [path]
    if root is not None:
        root = Path(root)
        p = path
        while p != root and root in p.parents:
            p = p.parent
            chain.append(p)
    for p in chain:
        if stat.S_IMODE(p.stat().st_mode) != OWNER_DIR:
            os.chmod(p, OWNER_DIR)
    return path


def make_private(path: Path) -> Path:
    """chmod a file to 0600 or a folder to 0700 (no-op when it already is)."""
    path = Path(path)
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return path
    want = OWNER_DIR if stat.S_ISDIR(st.st_mode) else OWNER_FILE
    if stat.S_IMODE(st.st_mode) != want:
        os.chmod(path, want)
    return path


def private_tree(root: Path) -> None:
    """Make every folder and file below ``root`` owner-only (symlinks are left alone)."""
    root = Path(root)
    if not root.exists():
        return
    make_private(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            try:
                make_private(Path(dirpath) / name)
            except FileNotFoundError:  # gone since the listing (a running sqlite's -wal/-shm)
                continue


def write_private_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, created 0600 from the start (never briefly 0644)."""
    from medcurate.io import atomic_write_bytes  # io imports this module's modes

    return atomic_write_bytes(path, data, private=True)


def open_to_others(paths: Iterable[Path]) -> list[Path]:
    """The paths (existing ones only) that group or others can read, write or enter."""
    bad = []
    for p in paths:
        try:
            st = Path(p).lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & _OTHERS:
            bad.append(Path(p))
    return bad


def require_private(paths: Iterable[Path], what: str = "restricted data") -> None:
    """Refuse to go on when any of ``paths`` is open to other users; the message says the fix."""
    bad = open_to_others(paths)
    if bad:
        listed = ", ".join(str(p) for p in bad[:3]) + (" ..." if len(bad) > 3 else "")
        fix = " && ".join(f"chmod -R go-rwx '{p}'" for p in bad[:3])
        raise PermissionsError(
            f"{what} is readable by other users ({listed}); refusing to run. Fix: {fix}"
        )
