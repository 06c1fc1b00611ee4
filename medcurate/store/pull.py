"""Pulling a version into a local folder, verified, in the nifti or nnU-Net raw layout.

Every byte that lands is checked against its sha256 (objects against their address, documents
against version.json, the manifest against its digest); a mismatch raises TamperedObjectError and
leaves nothing at that path. Pulls are incremental: files already in the destination, or in a
sibling pull (``DEST/../*`` with a pull record, e.g. the previous version next to this one), are
re-verified and hard-linked instead of copied from the store, so pulling vN+1 next to vN copies
only what changed. Pulled data files are read-only, because hard links share bytes.

Before anything is written, every target path is checked (relative, no ``..``, resolving inside
the destination even through symlinks already there): a forged manifest cannot write outside.
A pull holds the destination's lock (``DEST/.medcurate-pull.lock``) and first removes the
``.tmp-*`` litter that a killed pull into the same folder left behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from tqdm import tqdm

from medcurate.io import atomic_write_bytes, sha256_file
from medcurate.locks import exclusive
from medcurate.store.litter import clean_pull_litter
from medcurate.store.manifest import UNLABELLED
from medcurate.store.objects import ObjectStore, StoreError
from medcurate.store.paths import RESERVED_TOP, check_targets
from medcurate.store.publish import (
    MANIFEST,
    VERSION_JSON,
    VersionInfo,
    load_manifest,
    read_version_file,
    resolve,
    signature_status,
)

PULL_RECORD = ".medcurate-pull.json"
PULL_LOCK = ".medcurate-pull.lock"
Format = Literal["nifti", "nnunet"]
FORMATS: tuple[str, ...] = ("nifti", "nnunet")


@dataclass
class PullResult:
    """What a pull did, in files and bytes."""

    dest: Path
    ref: str
    version_id: str
    format: str
    files: int = 0
    fetched_files: int = 0
    fetched_bytes: int = 0
    reused_files: int = 0
    reused_bytes: int = 0
    present_files: int = 0
    present_bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    signature: str = ""

    def summary_line(self) -> str:
        return (
            f"pulled {self.ref} ({self.version_id}, {self.format}) to {self.dest}: "
            f"{self.files} files; fetched {self.fetched_files} ({self.fetched_bytes} B), "
            f"reused {self.reused_files} ({self.reused_bytes} B), "
            f"already there {self.present_files} ({self.present_bytes} B)"
            + (f"; {len(self.skipped)} sample(s) without mask left out" if self.skipped else "")
            + (f"; {self.signature}" if self.signature else "")
        )


def _suffix(rel: str) -> str:
    return ".nii.gz" if rel.endswith(".nii.gz") else Path(rel).suffix


#: (manifest row from 1, column, path in DEST, sha256, bytes)
Step = tuple[int, str, str, str, int]


def _size(v: Any) -> int:
    return 0 if v is None or pd.isna(v) else int(v)


def _nifti_steps(manifest: pd.DataFrame) -> list[Step]:
    steps: list[Step] = []
    for row, r in enumerate(manifest.to_dict("records"), 1):
        for kind in ("image", "mask"):
            rel, sha = r.get(kind), r.get(f"{kind}_sha256")
            if rel is None or sha is None or pd.isna(rel) or pd.isna(sha):
                continue
            steps.append((row, kind, str(rel), str(sha), _size(r.get(f"{kind}_bytes"))))
    return steps


def _nnunet_steps(manifest: pd.DataFrame) -> tuple[list[Step], list[str]]:
    steps: list[Step] = []
    skipped: list[str] = []
    for row, r in enumerate(manifest.to_dict("records"), 1):
        sid, img = str(r["sample_id"]), str(r["image"])
        has_mask = r.get("mask") is not None and not pd.isna(r.get("mask"))
        if r.get("label") == UNLABELLED:  # never a label file for a sample without a label
            has_mask = False
        image = (str(r["image_sha256"]), _size(r["image_bytes"]))
        mask = (str(r["mask_sha256"]), _size(r["mask_bytes"])) if has_mask else ("", 0)
        if r["split"] in ("train", "validation"):
            if not has_mask:
                skipped.append(sid)
                continue
            steps.append((row, "image", f"imagesTr/{sid}_0000{_suffix(img)}", *image))
            steps.append((row, "mask", f"labelsTr/{sid}{_suffix(str(r['mask']))}", *mask))
        else:
            steps.append((row, "image", f"imagesTs/{sid}_0000{_suffix(img)}", *image))
            if has_mask:
                steps.append((row, "mask", f"labelsTs/{sid}{_suffix(str(r['mask']))}", *mask))
    return steps, skipped


def nifti_plan(manifest: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(path in DEST, sha256, bytes) of the nifti layout: the manifest's own paths."""
    return [s[2:] for s in _nifti_steps(manifest)]


def nnunet_plan(manifest: pd.DataFrame) -> tuple[list[tuple[str, str, int]], list[str]]:
    """The nnU-Net raw layout: train+validation with a mask -> imagesTr/labelsTr, test and
    external -> imagesTs (labelsTs when masked). A sample released ``unlabelled`` never gets a
    label file (so never enters imagesTr). Returns the plan and the left-out sample ids."""
    steps, skipped = _nnunet_steps(manifest)
    return [s[2:] for s in steps], skipped


def nnunet_documents(manifest: pd.DataFrame, info: VersionInfo) -> dict[str, Any]:
    """nnU-Net's dataset.json and splits_final.json for the layout of :func:`nnunet_plan`.

    splits_final.json: one entry per fold (val = that fold of train), then one more entry with
    all of train as train and the validation split as val.
    """
    m = manifest.loc[manifest["mask"].notna() & manifest["label"].ne(UNLABELLED)]
    tr = m.loc[m["split"] == "train"]
    va = m.loc[m["split"] == "validation"]
    modalities = sorted(set(manifest["modality"].dropna()))
    channel = modalities[0] if len(modalities) == 1 else "mixed"
    endings = {_suffix(str(x)) for x in manifest["image"]}
    dataset_json = {
        "name": info.dataset,
        "description": f"{info.ref} ({info.id}) from medcurate",
        "reference": info.id,
        "channel_names": {"0": channel},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": len(tr) + len(va),
        "file_ending": endings.pop() if len(endings) == 1 else ".nii.gz",
    }
    splits = []
    folds = sorted(int(f) for f in set(tr["fold"]) if int(f) >= 0)
    for k in folds:
        splits.append(
            {
                "train": sorted(tr.loc[tr["fold"] != k, "sample_id"]),
                "val": sorted(tr.loc[tr["fold"] == k, "sample_id"]),
            }
        )
    splits.append({"train": sorted(tr["sample_id"]), "val": sorted(va["sample_id"])})
    return {"dataset.json": dataset_json, "splits_final.json": splits}


def _read_record(folder: Path) -> dict[str, Any] | None:
    p = folder / PULL_RECORD
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("files"), dict) else None


def _local_index(dest: Path) -> dict[str, list[Path]]:
    """sha256 -> candidate local files, from the pull records of DEST and its siblings."""
    index: dict[str, list[Path]] = {}
    folders = [dest]
    if dest.parent.is_dir():
        folders += sorted(p for p in dest.parent.iterdir() if p.is_dir() and p != dest)
    for folder in folders:
        rec = _read_record(folder)
        if rec is None:
            continue
        for rel, sha in sorted(rec["files"].items()):
            index.setdefault(str(sha), []).append(folder / rel)
    return index


def _matches(path: Path, sha: str, size: int) -> bool:
    try:
        if not path.is_file() or (size and path.stat().st_size != size):
            return False
    except OSError:
        return False
    return sha256_file(path) == sha


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".tmp-link-{dst.name}"
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _write_doc(dest: Path, name: str, data: bytes) -> None:
    """A version document, replaced whole (a symlink in its place is replaced, not followed)."""
    atomic_write_bytes(dest / name, data)


def pull(
    store: ObjectStore,
    ref: str,
    dest: str | os.PathLike[str],
    fmt: str = "nifti",
    progress: bool = False,
) -> PullResult:
    """Pull ``NAME@vN`` (or ``NAME`` for the newest) into ``dest`` in the ``fmt`` layout."""
    if fmt not in FORMATS:
        raise StoreError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    info = resolve(store, ref)
    manifest = load_manifest(store, info)  # signature, hashes and paths checked
    signature = signature_status(store, info)
    dest = Path(dest).resolve()
    skipped: list[str] = []
    if fmt == "nifti":
        steps = _nifti_steps(manifest)
    else:
        steps, skipped = _nnunet_steps(manifest)
    reserved = RESERVED_TOP | set(info.files) | {PULL_LOCK}
    check_targets(f"{info.ref} ({info.id})", [s[:3] for s in steps], dest, reserved)
    for row, column, _, sha, _ in steps:
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise StoreError(f"{info.ref}: manifest row {row}, column {column}: bad sha256")
    plan = [s[2:] for s in steps]
    dest.mkdir(parents=True, exist_ok=True)
    with exclusive(dest / PULL_LOCK):
        clean_pull_litter(dest)
        result = PullResult(dest, info.ref, info.id, fmt, files=len(plan), skipped=skipped)
        result.signature = signature
        _pull_locked(store, info, manifest, dest, fmt, plan, result, progress)
    return result


def _pull_locked(
    store: ObjectStore,
    info: VersionInfo,
    manifest: pd.DataFrame,
    dest: Path,
    fmt: str,
    plan: list[tuple[str, str, int]],
    result: PullResult,
    progress: bool,
) -> None:
    """The writing half of :func:`pull`, once every path was checked and the lock is held."""
    old = _read_record(dest)
    index = _local_index(dest)
    to_fetch: list[tuple[str, str, int]] = []
    for rel, sha, size in plan:
        target = dest / rel
        if _matches(target, sha, size):
            result.present_files += 1
            result.present_bytes += size
            continue
        for cand in index.get(sha, []):
            if cand != target and _matches(cand, sha, size):
                _link_or_copy(cand, target)
                result.reused_files += 1
                result.reused_bytes += size
                break
        else:
            to_fetch.append((rel, sha, size))

    bar = _progress(sum(s for _, _, s in to_fetch), info.ref, enabled=progress)
    try:
        for rel, sha, _ in to_fetch:
            n = store.fetch(sha, dest / rel, on_bytes=bar.update if bar else None)
            (dest / rel).chmod(0o444)
            result.fetched_files += 1
            result.fetched_bytes += n
    finally:
        if bar is not None:
            bar.close()

    docs: dict[str, bytes] = {
        MANIFEST: read_version_file(store, info, MANIFEST),
        VERSION_JSON: info.to_json(),
    }
    for name in sorted(info.files):
        if name not in docs and (fmt == "nifti" or name != "dataset.json"):
            docs[name] = read_version_file(store, info, name)
    if fmt == "nnunet":
        for name, obj in nnunet_documents(manifest, info).items():
            docs[name] = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    for name, data in docs.items():
        _write_doc(dest, name, data)

    planned = {rel for rel, _, _ in plan}
    if old is not None:  # files of an earlier pull into this folder that this version lacks
        for rel in sorted(set(old["files"]) - planned):
            p = dest / rel
            if p.is_file() and dest in p.resolve().parents:
                p.unlink()
    record = {
        "dataset": info.dataset,
        "version": info.version,
        "id": info.id,
        "digest": info.digest,
        "format": fmt,
        "files": {rel: sha for rel, sha, _ in plan},
    }
    _write_doc(dest, PULL_RECORD, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())


def _progress(total: int, label: str, enabled: bool) -> Any:
    if not enabled or total <= 0:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=f"pull {label}", leave=False)


def pull_record(folder: str | os.PathLike[str]) -> Mapping[str, Any] | None:
    """The pull record of a folder (dataset, version, id, digest, format, files), if any."""
    return _read_record(Path(folder))
