"""Litter of killed publishes and pulls, removed by the next one.

A ``kill -9`` skips every ``finally``: a publish can leave ``<dataset>/.staging/v*-<uuid>/``
folders and ``.tmp-<uuid>`` files (object fan-out folders, version folders on object stores); a
pull leaves ``.tmp-*`` files in its destination. None of them is ever read (a version exists only
with its version.json, objects only at their address), so they are only garbage.

Who may delete what:
- ``.staging`` of a dataset: every entry, because the caller holds that dataset's publish lock
  and only lock holders stage (local stores; object stores never stage).
- ``.tmp-*`` in the object fan-out and in version folders: only when older than ``GRACE_S``,
  because another dataset's publish (another lock) may be streaming one right now.
- ``.tmp-*`` under a pull destination: every one, under the destination's pull lock, and the
  ``.<name>.tmp-<pid>`` files of :func:`medcurate.io.temp_path` (the pull's documents are written
  through it; a manifest path can never be a hidden name, so nothing else matches).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from medcurate.store.objects import OBJECTS, ObjectStore

GRACE_S = 600.0
TMP_PREFIX = ".tmp-"
STAGING = ".staging"
_IO_TMP = re.compile(r"^\..+\.tmp-[0-9]+$")  # medcurate.io.temp_path


def _age_s(store: ObjectStore, path: str, now: float) -> float:
    try:
        return now - store.fs.modified(path).timestamp()
    except (NotImplementedError, OSError, AttributeError, ValueError):
        return -1.0  # age unknown: keep it


def _remove_tree(path: Path) -> None:
    def writable(func, p, _exc):  # type: ignore[no-untyped-def]
        os.chmod(Path(p).parent, 0o700)
        func(p)

    shutil.rmtree(path, onerror=writable)


def clean_publish_litter(store: ObjectStore, dataset: str, now: float | None = None) -> int:
    """Remove a dataset's staging litter and stale temporary files; returns how many."""
    now = time.time() if now is None else now
    removed = 0
    if store.is_local:
        staging = Path(store.path(dataset, STAGING))
        if staging.is_dir() and not staging.is_symlink():
            for child in sorted(staging.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    _remove_tree(child)
                else:
                    child.unlink()
                removed += 1
            staging.rmdir()
    patterns = (
        store.path(dataset, "*", f"{TMP_PREFIX}*"),
        store.path(OBJECTS, "sha256", "*", f"{TMP_PREFIX}*"),
    )
    for pattern in patterns:
        for path in sorted(store.fs.glob(pattern)):
            if _age_s(store, str(path), now) > GRACE_S:
                store.fs.rm(str(path))
                removed += 1
    return removed


def clean_pull_litter(dest: Path) -> int:
    """Remove every temporary file under a pull destination (symlinks are not followed)."""
    removed = 0
    for folder, dirs, files in os.walk(dest):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for name in files:
            if name.startswith(TMP_PREFIX) or _IO_TMP.match(name):
                os.unlink(os.path.join(folder, name))
                removed += 1
    return removed
