"""The samples table, the release manifest, its digest and the MONAI datalist.

The manifest digest is computed over a canonical JSON form of the rows (sorted, fixed columns,
no timestamps), not over Parquet bytes, so it survives a pyarrow upgrade: the same samples, splits,
labels and file hashes always give the same version digest.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medcurate.io import sha256_bytes, sha256_file
from medcurate.splits import age_band

UNLABELLED = "unlabelled"

#: Columns of ``curated/samples.parquet`` (the join of volumes and labels).
SAMPLE_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "patient",
    "label",
    "modality",
    "manufacturer",
    "site",
    "sex",
    "age_years",
    "out_shape",
    "out_spacing",
    "transform_config_hash",
    "nifti_path",
    "nifti_sha256",
    "mask_path",
    "source_round",
    "agreement",
    "synthetic",
    "generator_id",
)

#: Columns of ``manifest.parquet``, in order. ``image``/``mask`` are paths inside a pulled version.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "patient",
    "split",
    "fold",
    "label",
    "image",
    "image_sha256",
    "image_bytes",
    "mask",
    "mask_sha256",
    "mask_bytes",
    "sex",
    "age_years",
    "age_band",
    "site",
    "modality",
    "manufacturer",
    "synthetic",
    "generator_id",
    "source_round",
    "agreement",
    "out_shape",
    "out_spacing",
    "transform_config_hash",
)
FILE_KINDS: tuple[str, ...] = ("image", "mask")

_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("patient", pa.string()),
        ("split", pa.string()),
        ("fold", pa.int64()),
        ("label", pa.string()),
        ("image", pa.string()),
        ("image_sha256", pa.string()),
        ("image_bytes", pa.int64()),
        ("mask", pa.string()),
        ("mask_sha256", pa.string()),
        ("mask_bytes", pa.int64()),
        ("sex", pa.string()),
        ("age_years", pa.float64()),
        ("age_band", pa.string()),
        ("site", pa.string()),
        ("modality", pa.string()),
        ("manufacturer", pa.string()),
        ("synthetic", pa.bool_()),
        ("generator_id", pa.string()),
        ("source_round", pa.string()),
        ("agreement", pa.float64()),
        ("out_shape", pa.string()),
        ("out_spacing", pa.string()),
        ("transform_config_hash", pa.string()),
    ]
)


class ManifestError(ValueError):
    """A samples table or manifest breaks the contract."""


def _dims(v: Any) -> str | None:
    """Shape/spacing as ``64x64x32`` (lists, tuples, arrays or strings accepted)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        return v
    vals = list(np.asarray(v).ravel().tolist())
    return "x".join(f"{x:g}" if isinstance(x, float) else str(x) for x in vals)


def curate_samples(volumes: pd.DataFrame, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """Join volumes (one row per series) with consensus labels into the samples table.

    Samples without a label row are ``unlabelled``, and so are samples whose annotators disagreed
    and that still wait for adjudication (``pending_adjudication``): a release never ships a label
    the reviewer has not settled. Real samples get ``synthetic=False``.
    """
    missing = {"sample_id", "patient", "nifti_path"} - set(volumes.columns)
    if missing:
        raise ManifestError(f"volumes table lacks columns {sorted(missing)}")
    if volumes["sample_id"].duplicated().any():
        raise ManifestError("volumes table has duplicate sample_id values")
    df = volumes.copy()
    lab_cols = ["label", "mask_path", "source_round", "agreement"]
    if labels is not None and len(labels):
        if labels["sample_id"].duplicated().any():
            raise ManifestError("labels table has duplicate sample_id values")
        lab = labels[["sample_id", *[c for c in lab_cols if c in labels.columns]]]
        if "pending_adjudication" in labels.columns:
            lab = lab.loc[~labels["pending_adjudication"].fillna(False).astype(bool)]
        df = df.drop(columns=[c for c in lab_cols if c in df.columns]).merge(
            lab, on="sample_id", how="left"
        )
    for c in lab_cols:
        if c not in df.columns:
            df[c] = None
    df["label"] = df["label"].astype(object).where(df["label"].notna(), UNLABELLED)
    df["synthetic"] = False
    df["generator_id"] = None
    for c in SAMPLE_COLUMNS:
        if c not in df.columns:
            df[c] = None
    out = df[list(SAMPLE_COLUMNS)].copy()
    out["out_shape"] = [_dims(v) for v in out["out_shape"]]
    out["out_spacing"] = [_dims(v) for v in out["out_spacing"]]
    out["source_round"] = [None if _isna(v) else str(v) for v in out["source_round"]]
    return out.sort_values("sample_id", kind="stable").reset_index(drop=True)


def _isna(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _suffix(path: str) -> str:
    name = Path(path).name
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def build_manifest(
    assigned: pd.DataFrame,
    volumes_root: str | Path,
    labels_root: str | Path | None = None,
    synthetic_root: str | Path | None = None,
) -> tuple[pd.DataFrame, dict[str, Path]]:
    """The manifest of a split samples table, and the local source file of every sha256.

    ``nifti_path`` is relative to ``volumes_root`` and ``mask_path`` to ``labels_root``; both are
    relative to ``synthetic_root`` for synthetic rows (a generator writes images and masks). The
    images' sha256 are taken from ``nifti_sha256`` when present (the store re-checks them while
    copying) and computed otherwise.
    """
    rows: list[dict[str, Any]] = []
    sources: dict[str, Path] = {}
    for rec in assigned.to_dict("records"):
        syn = bool(rec.get("synthetic") or False)
        root = Path(synthetic_root if syn and synthetic_root is not None else volumes_root)
        sid = str(rec["sample_id"])
        if "/" in sid or sid.startswith("."):
            raise ManifestError(f"sample_id {sid!r} cannot name a file")
        img_src = root / str(rec["nifti_path"])
        if not img_src.is_file():
            raise ManifestError(f"{img_src}: image file missing for sample {sid}")
        img_sha = rec.get("nifti_sha256")
        img_sha = sha256_file(img_src) if _isna(img_sha) else str(img_sha)
        sources[img_sha] = img_src
        row: dict[str, Any] = {c: rec.get(c) for c in MANIFEST_COLUMNS}
        row["image"] = f"images/{sid}{_suffix(str(rec['nifti_path']))}"
        row["image_sha256"] = img_sha
        row["image_bytes"] = img_src.stat().st_size
        mask = rec.get("mask_path")
        mask_root = synthetic_root if syn and synthetic_root is not None else labels_root
        if _isna(mask) or mask_root is None:
            row["mask"] = row["mask_sha256"] = row["mask_bytes"] = None
        else:
            m_src = Path(mask_root) / str(mask)
            if not m_src.is_file():
                raise ManifestError(f"{m_src}: mask file missing for sample {sid}")
            m_sha = sha256_file(m_src)
            sources[m_sha] = m_src
            row["mask"] = f"masks/{sid}{_suffix(str(mask))}"
            row["mask_sha256"] = m_sha
            row["mask_bytes"] = m_src.stat().st_size
        if _isna(row.get("age_band")):
            row["age_band"] = age_band(rec.get("age_years"))
        row["synthetic"] = syn
        rows.append(row)
    return normalise_manifest(pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))), sources


def normalise_manifest(df: pd.DataFrame) -> pd.DataFrame:
    """Fixed columns, dtypes and row order (by sample_id)."""
    missing = {"sample_id", "patient", "split", "image", "image_sha256"} - set(df.columns)
    if missing:
        raise ManifestError(f"manifest lacks columns {sorted(missing)}")
    table = pa.Table.from_pylist(
        [_clean_row(r) for r in df.to_dict("records")], schema=_SCHEMA
    ).sort_by("sample_id")
    out = table.to_pandas()
    if out["sample_id"].duplicated().any():
        raise ManifestError("manifest has duplicate sample_id values")
    return out


def _clean_row(rec: Mapping[Any, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for field in _SCHEMA:
        v: Any = rec.get(field.name)
        if _isna(v):
            v = None
        elif field.name in ("out_shape", "out_spacing"):
            v = _dims(v)
        elif pa.types.is_string(field.type):
            v = str(v)
        elif pa.types.is_integer(field.type):
            v = int(v)
        elif pa.types.is_floating(field.type):
            v = float(v)
        elif pa.types.is_boolean(field.type):
            v = bool(v)
        row[field.name] = v
    if row["fold"] is None:
        row["fold"] = -1
    if row["synthetic"] is None:
        row["synthetic"] = False
    return row


def canonical_json(df: pd.DataFrame) -> bytes:
    """The rows of a manifest as canonical JSON bytes (the input of the digest)."""
    norm = normalise_manifest(df)
    table = pa.Table.from_pandas(norm, schema=_SCHEMA, preserve_index=False)
    rows = table.to_pylist()
    return json.dumps(
        {"columns": list(MANIFEST_COLUMNS), "rows": rows},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    ).encode("ascii")


def manifest_digest(df: pd.DataFrame) -> str:
    """sha256 of the canonical JSON of the manifest."""
    return sha256_bytes(canonical_json(df))


def manifest_bytes(df: pd.DataFrame) -> bytes:
    """The manifest as Parquet bytes (fixed schema, sorted rows, no pandas index)."""
    norm = normalise_manifest(df)
    table = pa.Table.from_pandas(norm, schema=_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata(None)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_manifest(data: bytes | str | Path) -> pd.DataFrame:
    """A manifest from Parquet bytes or a path."""
    src = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    return pq.read_table(src).to_pandas()


def file_entries(manifest: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(relative path, sha256, bytes) of every file a manifest lists, in a stable order."""
    out: list[tuple[str, str, int]] = []
    for rec in manifest.to_dict("records"):
        for kind in FILE_KINDS:
            rel, sha = rec.get(kind), rec.get(f"{kind}_sha256")
            if _isna(rel) or _isna(sha):
                continue
            size: Any = rec.get(f"{kind}_bytes")
            out.append((str(rel), str(sha), 0 if _isna(size) else int(size)))
    return out


MONAI_KEYS: dict[str, str] = {
    "train": "training",
    "validation": "validation",
    "test": "test",
    "external": "external_test",
}


def data_dict(rec: Mapping[Any, Any], base: str | Path | None = None) -> dict[str, Any]:
    """One MONAI data dict: image, label (mask) when present, class label, ids, fold."""

    def where(rel: str) -> str:
        return rel if base is None else str(Path(base) / rel)

    d: dict[str, Any] = {"image": where(str(rec["image"]))}
    if not _isna(rec.get("mask")):
        d["label"] = where(str(rec["mask"]))
    d["class"] = str(rec.get("label"))
    d["sample_id"] = str(rec["sample_id"])
    fold: Any = rec.get("fold")
    d["fold"] = -1 if _isna(fold) else int(fold)
    return d


def datalist(manifest: pd.DataFrame, name: str, version_id: str) -> dict[str, Any]:
    """A MONAI/Decathlon-style datalist (``training``/``validation``/``test``) for the manifest.

    Only labelled samples enter those lists (and ``numTraining``/``numTest``, ``classes``);
    samples released without a label are listed apart under ``unlabelled`` (with their split),
    so training code never reads them as labelled.
    """
    unlabelled = manifest["label"].astype(object).eq(UNLABELLED) | manifest["label"].isna()
    labelled = manifest.loc[~unlabelled]
    out: dict[str, Any] = {
        "name": name,
        "version": version_id,
        "description": f"{name} {version_id}: de-identified, labelled volumes (medcurate)",
        "tensorImageSize": "3D",
        "modality": {str(i): m for i, m in enumerate(sorted(set(manifest["modality"].dropna())))},
        "classes": sorted(set(labelled["label"].dropna())),
        "labels": {"0": "background", "1": "lesion"},
        "numTraining": int((labelled["split"] == "train").sum()),
        "numTest": int((labelled["split"] == "test").sum()),
    }
    for split, key in MONAI_KEYS.items():
        part = labelled.loc[labelled["split"] == split]
        if split != "external" or len(part):
            out[key] = [data_dict(r) for r in part.to_dict("records")]
    rest = manifest.loc[unlabelled]
    if len(rest):
        out[UNLABELLED] = [
            {**data_dict(r), "split": str(r["split"])} for r in rest.to_dict("records")
        ]
    return out
