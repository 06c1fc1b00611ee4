"""Paths a manifest lists must stay inside the folder a pull writes to.

A version's manifest is data from the store, and a store can be forged: ``image =
"../../escaped/x.nii.gz"`` with a matching ``version.json`` passes every hash check. So every
path (and every sample id, which names nnU-Net files) is checked as text before anything is
written (absolute, ``..``, backslash, NUL, control characters, hidden names, duplicates), and
again against the resolved destination, so that a symlink already inside it cannot lead out.
Errors name the version and the manifest row, never the path or a sample value: those may carry
whatever the forger put there.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from pathlib import Path, PureWindowsPath
from typing import Any

from medcurate.store.objects import StoreError

#: Names a pull writes itself at the top of the destination: no manifest path may take them.
RESERVED_TOP = frozenset(
    {"manifest.parquet", "version.json", "version.sig", "dataset.json", "card.md"}
    | {"splits_final.json"}
)
_MAX_PART = 255
_MAX_PATH = 1024


class UnsafeManifestError(StoreError):
    """A manifest lists a path that would land outside (or on top of) the pulled folder."""


def unsafe_reason(rel: object, single: bool = False) -> str | None:
    """Why ``rel`` is not a safe relative path (``single``: one name, no ``/``), else None."""
    if not isinstance(rel, str) or rel == "":
        return "an empty or non-text path"
    if "\x00" in rel:
        return "a NUL byte"
    if "\\" in rel:
        return "a backslash"
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return "a control character"
    if rel.startswith(("/", "~")) or PureWindowsPath(rel).drive:
        return "an absolute path"
    if len(rel) > _MAX_PATH:
        return "an over-long path"
    parts = rel.split("/")
    if single and len(parts) > 1:
        return "a '/' in a name"
    for part in parts:
        if part == "..":
            return "a '..' component"
        if part in ("", "."):
            return "an empty or '.' component"
        if part.startswith("."):
            return "a hidden name (leading '.')"
        if len(part) > _MAX_PART:
            return "an over-long name"
    return None


def check_rows(ref: str, rows: Iterable[tuple[int, str, object]], single: bool = False) -> None:
    """Refuse the first unsafe value of ``rows`` = (manifest row number, column, value)."""
    for row, column, value in rows:
        reason = unsafe_reason(value, single=single)
        if reason is not None:
            raise UnsafeManifestError(
                f"{ref}: manifest row {row}, column {column}: refusing {reason}; nothing "
                "was written (the version is forged or corrupt)"
            )


def check_targets(
    ref: str,
    plan: Iterable[tuple[int, str, object]],
    dest: Path | None,
    reserved: AbstractSet[str] = RESERVED_TOP,
) -> None:
    """Each (row, column, relative path) of a pull plan: safe text, no duplicate or file/folder
    clash, not under a ``reserved`` top-level name (the version's documents), and (with
    ``dest``) resolving inside ``dest``."""
    plan = list(plan)
    check_rows(ref, plan)
    root = dest.resolve() if dest is not None else None
    seen: set[str] = set()
    folders: set[str] = set()
    resolved: dict[str, Path] = {}
    for row, column, value in plan:
        rel = str(value)
        where = f"{ref}: manifest row {row}, column {column}"
        parents = rel.split("/")[:-1]
        prefixes = {"/".join(parents[: i + 1]) for i in range(len(parents))}
        if rel in seen or rel in folders or prefixes & seen:
            raise UnsafeManifestError(f"{where}: the path clashes with another row's file")
        if rel.split("/")[0] in reserved:
            raise UnsafeManifestError(f"{where}: the path would overwrite a version document")
        seen.add(rel)
        folders |= prefixes
        if root is not None:
            parent, _, name = rel.rpartition("/")
            try:
                if parent not in resolved:  # each folder resolved once: 10k files stay cheap
                    resolved[parent] = (root / parent).resolve() if parent else root
                target = resolved[parent] / name
                if target.is_symlink():
                    target = target.resolve()
            except (OSError, RuntimeError):  # a symlink loop
                target = Path("/")
            if root not in target.parents:
                raise UnsafeManifestError(
                    f"{where}: the path resolves outside the destination (a symlink inside it "
                    "leads out); nothing was written"
                )


def check_manifest(ref: str, manifest: Any) -> None:
    """Refuse a manifest with an unsafe ``image``/``mask`` path or ``sample_id`` (one name:
    nnU-Net file names are built from it). Rows are numbered from 1 in manifest order."""
    records = manifest.to_dict("records")
    check_rows(ref, ((i, "sample_id", r.get("sample_id")) for i, r in enumerate(records, 1)), True)
    paths = []
    for i, r in enumerate(records, 1):
        for column in ("image", "mask"):
            value = r.get(column)
            if column == "image" or not _missing(value):
                paths.append((i, column, value))
    check_targets(ref, paths, dest=None)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)
