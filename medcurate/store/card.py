"""The datasheet (``card.md``) of a version, after Gebru et al., "Datasheets for Datasets".

The card is documentation, not identity: it carries run ids and lineage, so it is not part of the
manifest digest (a re-run after a crash keeps the version digest even though its run id differs).
Everything in it comes from the manifest and configuration: nothing patient-identifying.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medcurate.config import Zones
from medcurate.io import sha256_file
from medcurate.splits import ALL_SPLITS, balance_markdown, balance_report, markdown_table

DEID_POLICY = (
    "DICOM was de-identified before it left `restricted/`, following the PS3.15 Annex E Basic "
    "Application Level Confidentiality Profile: patient names and IDs are replaced by salted "
    "pseudonyms, and UIDs and dates are remapped with keys derived from a secret salt that never "
    "enters a release. The pseudonym crosswalk stays in `restricted/`. Sample and patient ids in "
    "this version are pseudonyms; no original UID is included."
)


def code_version() -> str:
    """The installed medcurate version plus the git commit of the checkout, for lineage."""
    try:
        version = importlib.metadata.version("medcurate")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version}+{commit}" if commit else version


def lineage(zones: Zones, run_id: str) -> dict[str, Any]:
    """The card's lineage: code version, the orchestrator's run id and the sha256 of each
    upstream table that exists (volumes, labels, splits). Card only: never in the digest."""
    tables = (
        ("volumes.parquet", zones.volumes_table),
        ("labels.parquet", zones.labels_table),
        ("splits.parquet", zones.splits_table),
    )
    upstream = {name: "sha256:" + sha256_file(p) for name, p in tables if p.exists()}
    return {"code_version": code_version(), "dagster_run_id": run_id, "upstream": upstream}


def _counts_table(manifest: pd.DataFrame) -> str:
    rows = []
    for split in [s for s in ALL_SPLITS if s in set(manifest["split"])]:
        part = manifest.loc[manifest["split"] == split]
        row: dict[str, Any] = {
            "split": split,
            "samples": len(part),
            "patients": int(part.loc[~part["synthetic"], "patient"].nunique()),
            "synthetic": int(part["synthetic"].sum()),
            "with mask": int(part["mask"].notna().sum()),
        }
        for label, n in part["label"].value_counts().sort_index().items():
            row[f"label={label}"] = int(n)
        rows.append(row)
    table = pd.DataFrame(rows)
    counts = [c for c in table.columns if c != "split"]
    table[counts] = table[counts].fillna(0).astype(int)
    return markdown_table(table)


def _rounds_table(manifest: pd.DataFrame) -> str:
    real = manifest.loc[manifest["source_round"].notna()]
    if real.empty:
        return "No labelling rounds: the samples of this version are unlabelled."
    g = real.groupby("source_round", sort=True).agg(
        samples=("sample_id", "size"), mean_agreement=("agreement", "mean")
    )
    g["mean_agreement"] = g["mean_agreement"].round(3)
    return markdown_table(g.reset_index())


def _preprocessing(manifest: pd.DataFrame) -> str:
    cols = ["modality", "out_spacing", "out_shape", "transform_config_hash"]
    g = manifest.groupby(cols, dropna=False, sort=True).size().rename("samples").reset_index()
    return markdown_table(g.fillna("n/a"))


def render_card(
    manifest: pd.DataFrame,
    version_id: str,
    dataset: str,
    config: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
    description: str = "",
    deid_policy: str = DEID_POLICY,
) -> str:
    """The datasheet as markdown."""
    config = dict(config or {})
    lineage = dict(lineage or {})
    strata = [c for c in ("label", "sex", "age_band", "site", "modality") if c in manifest]
    report = balance_report(manifest, strata)
    sites = sorted(set(manifest["site"].dropna()))
    modalities = sorted(set(manifest["modality"].dropna()))
    lines = [
        f"# {dataset} {version_id}",
        "",
        "## Motivation",
        "",
        description
        or (
            "Curated, de-identified and labelled imaging volumes for training and evaluating "
            "normal/abnormal classification and lesion segmentation models, with patient-level "
            "splits that never leak across train, validation and test."
        ),
        "",
        "## Composition",
        "",
        f"{len(manifest)} samples (one normalized volume per series) from "
        f"{manifest.loc[~manifest['synthetic'], 'patient'].nunique()} pseudonymous patients, "
        f"{len(sites)} site(s), modalities {', '.join(modalities) or 'n/a'}. "
        "Labels: `normal`, `abnormal`, `unreadable` (consensus of annotators) or `unlabelled`.",
        "",
        _counts_table(manifest),
        "",
        "### Balance (proportion of samples per stratum; `all` is train+validation+test)",
        "",
        balance_markdown(report),
        "",
        "Splits are assigned per patient (iterative stratification on label, sex, age band, site "
        "and modality); a patient assigned in an earlier version keeps its split. Folds (0..k-1) "
        "partition the train split for cross-validation; -1 means no fold. Synthetic samples, "
        "if any, are only ever in train (fold -1).",
        "",
        "## Collection",
        "",
        "Studies arrive as DICOM batches from a PACS or a drop folder, are validated on ingest "
        "(quarantine with reasons), de-identified, and normalized into NIfTI volumes.",
        "",
        "## De-identification",
        "",
        deid_policy,
        "",
        "## Preprocessing",
        "",
        _preprocessing(manifest),
        "",
        "## Labelling",
        "",
        _rounds_table(manifest),
        "",
        "## Intended uses",
        "",
        "Research on model development and evaluation. Report results on `test` (and "
        "`external`, when present) only once; tune on `validation` or the folds. Not for clinical "
        "use, and not for any attempt to re-identify patients.",
        "",
        "## Lineage",
        "",
        "```json",
        json.dumps({"config": config, **lineage}, sort_keys=True, indent=2, default=str),
        "```",
        "",
        "Pull it with `medcurate datasets pull "
        f"{dataset}@{version_id.split('-')[0]} DEST`; every file is verified by its sha256.",
        "",
    ]
    return "\n".join(lines)
