"""Litter of killed runs: temporary files whose writer is gone, removed by the next run.

Every temporary output is named after the process that writes it (``*.tmp<pid>``,
``*.tmp<pid>-<n>``, ``.*.tmp-<pid>``), so a run can tell the litter of a killed run from the
files of a batch running side by side: only those of processes that no longer exist are removed.
``*.dcm.tmpN`` (from before pids were in the name) is always litter.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

_LEGACY_TMP = re.compile(r"\.dcm\.tmp\d+$")  # before pids were in the name: always litter
_PID_TMP = re.compile(r"\.tmp(\d+)(?:-\d+)?$|\.tmp-(\d+)$|^\.write-probe-(\d+)$")


def clean_litter(folder: Path, recursive: bool = True) -> int:
    """Remove temporary files left by killed runs under ``folder``: old-style ``*.dcm.tmpN``,
    and files named after a process that is gone (``*.tmp<pid>[-n]``, ``.*.tmp-<pid>``, write
    probes). Those of live processes (a batch running side by side) are left alone."""
    removed = 0
    for dirpath, dirs, names in os.walk(folder):
        if not recursive:
            dirs.clear()
        for name in names:
            if ".tmp" not in name and not name.startswith(".write-probe-"):
                continue
            m = None if _LEGACY_TMP.search(name) else _PID_TMP.search(name)
            if m is not None and alive(int(next(g for g in m.groups() if g))):
                continue
            if m is not None or _LEGACY_TMP.search(name):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
    return removed


def alive(pid: int) -> bool:
    """Is process ``pid`` running (ours counts as running)?"""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True
