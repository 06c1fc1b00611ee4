"""Every entry of a drop folder, classified without following links or opening special files.

The inbox is written by other people's tools: besides regular files it may hold symlinks (possibly
pointing out of the inbox), dot-files (full of PHI, or a transfer still in progress), FIFOs,
sockets, device nodes and folders nobody may list. Each is one *entry*: it is counted, moved as
itself (the directory entry, never its target or content) and, unless it is a plain visible file,
quarantined with its kind as the reason code. Nothing here opens a FIFO (reading one blocks).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from medcurate.io import sha256_fileobj

FILE = "file"  # a regular, visible file: validated as DICOM
HIDDEN_FILE = "HIDDEN_FILE"  # a dot-file (or a file below a dot-folder)
PARTIAL_TRANSFER = "PARTIAL_TRANSFER"  # ``.name.part``: a copy that never finished
SYMLINK = "SYMLINK"  # refused, never followed
SPECIAL_FILE = "SPECIAL_FILE"  # FIFO, socket, block or character device
UNREADABLE_FOLDER = "UNREADABLE_FOLDER"  # a folder that cannot be listed
UNREADABLE = "UNREADABLE"  # a file that cannot be read (set by whoever tries to read it)

ENTRY_REASONS = (HIDDEN_FILE, PARTIAL_TRANSFER, SYMLINK, SPECIAL_FILE, UNREADABLE_FOLDER)


@dataclass(frozen=True)
class Entry:
    path: Path
    kind: str  # FILE or one of ENTRY_REASONS
    mtime: float
    size: int


def is_partial(name: str) -> bool:
    """``drop_into_inbox`` copies to ``.<name>.part`` and renames when complete."""
    return name.startswith(".") and name.endswith(".part")


def entries(root: Path) -> list[Entry]:
    """Every entry below ``root`` (not ``root`` itself), sorted by path; folders are descended
    into (dot-folders too) unless they are symlinks or cannot be listed."""
    found: list[Entry] = []
    if not root.is_dir() or root.is_symlink():
        return found
    todo: list[tuple[Path, bool]] = [(root, False)]
    while todo:
        folder, hidden = todo.pop()
        try:
            listed = _list(folder)
        except OSError:
            if folder == root:
                raise
            st = os.lstat(folder)
            found.append(Entry(folder, UNREADABLE_FOLDER, st.st_mtime, 0))
            continue
        for name, st in listed:
            path, dot = folder / name, hidden or name.startswith(".")
            if stat.S_ISDIR(st.st_mode):
                todo.append((path, dot))
            else:
                found.append(Entry(path, _kind(st.st_mode, name, dot), st.st_mtime, st.st_size))
    return sorted(found, key=lambda e: e.path.as_posix())


def _list(folder: Path) -> list[tuple[str, os.stat_result]]:
    """Names and lstat of a folder's entries; raises when the folder cannot be read whole."""
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it)
    listed = []
    for name in names:
        try:
            listed.append((name, os.lstat(folder / name)))
        except FileNotFoundError:  # gone since listed (a sender cleaning up)
            continue
    return listed


def _kind(mode: int, name: str, hidden: bool) -> str:
    if stat.S_ISLNK(mode):
        return SYMLINK
    if not stat.S_ISREG(mode):
        return SPECIAL_FILE
    if is_partial(name):
        return PARTIAL_TRANSFER
    return HIDDEN_FILE if hidden else FILE


def open_regular(path: Path) -> int:
    """A read-only descriptor on a regular file; refuses links and never blocks on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return fd


def sha256_entry(path: Path) -> tuple[str, int]:
    """(content hash, size) of a regular file, read through :func:`open_regular`."""
    with os.fdopen(open_regular(path), "rb") as f:
        return sha256_fileobj(f)


def move_entry(src: Path, dst: Path) -> None:
    """Move the directory entry ``src`` to ``dst`` (the parent must exist): a rename, so a link
    stays a link and a FIFO a FIFO; across file systems, files are copied and links recreated."""
    try:
        os.rename(src, dst)
        return
    except PermissionError:
        st = os.lstat(src)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise
        # Moving a folder to a new parent rewrites its "..": that needs write permission on it.
        os.chmod(src, stat.S_IMODE(st.st_mode) | stat.S_IWUSR | stat.S_IXUSR)
        try:
            os.rename(src, dst)
        except OSError:
            os.chmod(src, stat.S_IMODE(st.st_mode))
            raise
        os.chmod(dst, stat.S_IMODE(st.st_mode))
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    st = os.lstat(src)
    if stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dst, 0o600)
        os.unlink(src)
    elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
        shutil.move(src, dst)  # links are recreated (os.readlink), never followed
    else:
        raise OSError(errno.EXDEV, "cannot move a socket or device across file systems")


def secure(path: Path) -> None:
    """Owner-only, never widening: group and other bits go (and a file's execute bit), so a 0644
    file becomes 0600 but an unreadable file or folder stays unreadable; a link is left alone
    (chmod would follow it)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return
    mode = stat.S_IMODE(st.st_mode)
    want = mode & (0o700 if stat.S_ISDIR(st.st_mode) else 0o600)
    if mode != want:
        os.chmod(path, want)
