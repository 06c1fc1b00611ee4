"""Quality gates: time to run every suite on 10,000-row tables and on 1,000 volumes' files.

GX's import and context are paid once per process (the first suite), never per suite: the figures
are the import + context time, the first suite's time, and each following suite's time. Tables are
made here from the table contracts (quality/contracts.py), plausible rather than real; a suite may
fail some expectations on them, which costs the same as passing. The volumes suite reads 1,000
small NIfTI files (16^3 voxels, four sites, one drifted): sha256, geometry, integrity and the
intensity fingerprint of each.

    .venv/bin/python bench/quality.py [--rows 10000] [--volumes 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# run as `python bench/quality.py`, this file would shadow the quality package
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
os.environ["GX_ANALYTICS_ENABLED"] = "false"

import numpy as np
import pandas as pd

from medcurate.config import Zones
from medcurate.io import write_nifti
from quality import runner
from quality.contracts import CONTRACTS
from quality.runner import CheckContext, load_config, run_suite
from quality.suites import TABLES, get_suite

SITES = ("S1", "S2", "S3", "S4")
MODALITIES = ("CT", "MR")


def _value(col: str, i: int, rng: np.random.Generator) -> Any:
    """A plausible, PHI-free value of column ``col`` for row ``i``."""
    if col.endswith("_uid"):
        return f"2.25.{10**12 + i}"
    if "sha256" in col:
        return f"{i:064x}"
    if col.endswith("_bytes") or col in ("n_instances", "rows", "columns", "size"):
        return int(1000 + i % 97)
    table = {
        "batch": "b20261202T000000-abc123", "status": "ok", "reason": "", "message": "",
        "modality": MODALITIES[i % 2], "site": SITES[i % 4], "sex": "FM"[i % 2],
        "age_years": float(20 + i % 60), "age_band": ["18-39", "40-64", "65+"][i % 3],
        "patient": f"P{i // 4:06d}", "sample_id": f"s{i:06d}", "split": ["train"] * 7 and
        ["train", "train", "train", "train", "train", "validation", "test"][i % 7],
        "fold": i % 5, "label": ["normal", "abnormal"][i % 3 == 0],
        "choice": ["normal", "abnormal"][i % 3 == 0], "round": "round-1",
        "task_key": f"s{i // 3:06d}-k0", "annotator": f"annotator-{i % 3}",
        "synthetic": False, "profile": "PS3.15 Annex E basic", "patient_identity_removed": "YES",
        "verified": True, "agreement": 0.8, "mean_dice": 0.8, "kappa": 0.7,
        "was_cancelled": False, "has_mask": i % 3 == 0, "mask_voxels": 10 * (i % 3 == 0),
        "adjudicated": False, "pending_adjudication": False, "n_annotators": 3,
    }  # fmt: skip
    if col in table:
        return table[col]
    if col.endswith("_path") or col in ("path", "relpath", "image", "mask"):
        return f"x/s{i:06d}.nii.gz"
    return "x"


def make_table(table: str, rows: int, seed: int = 0) -> pd.DataFrame:
    names = {"deid": "deid", "release": "release_manifest", "splits": "samples"}
    rng = np.random.default_rng(seed)
    columns = list(CONTRACTS[names.get(table, table)].columns)
    if table == "splits":
        columns += [c for c in ("split", "fold", "age_band") if c not in columns]
    return pd.DataFrame({c: [_value(c, i, rng) for i in range(rows)] for c in columns})


def make_volumes(z: Zones, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` small volumes on disk with their volumes.parquet rows; site S4 drifts (+3 SD)."""
    rng = np.random.default_rng(seed)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    rows = []
    for i in range(n):
        site, modality = SITES[i % 4], MODALITIES[i % 2]
        arr = rng.normal(100.0 + (60.0 if site == "S4" else 0.0), 20.0, (16, 16, 16))
        rel = f"{modality}/s{i:06d}.nii.gz"
        (z.volumes / modality).mkdir(parents=True, exist_ok=True)
        sha = write_nifti(z.volumes / rel, arr.astype("float32"), affine)
        row = {c: _value(c, i, rng) for c in CONTRACTS["volumes"].columns}
        row.update(
            sample_id=f"s{i:06d}", modality=modality, site=site, nifti_path=rel, nifti_sha256=sha,
            out_shape=[16, 16, 16], out_spacing=[1.5, 1.5, 3.0], affine=affine.ravel().tolist(),
            orig_shape=[16, 16, 16], orig_spacing=[1.5, 1.5, 3.0], kind="volume", part=0,
            intensity_mean=float(arr.mean()), intensity_std=float(arr.std()),
        )  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--volumes", type=int, default=1_000)
    args = ap.parse_args()
    print(f"# quality bench: {platform.python_version()}, {os.cpu_count()} cpu")

    config = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        z = Zones(Path(tmp) / "home")
        z.volumes.mkdir(parents=True)
        t = time.perf_counter()
        volumes = make_volumes(z, args.volumes)
        print(f"setup: {args.volumes} volumes written in {time.perf_counter() - t:.2f} s")
        tables = {name: make_table(name, args.rows) for name in TABLES if name != "volumes"}
        tables["volumes"] = volumes

        t = time.perf_counter()
        runner.gx_context()  # import great_expectations + ephemeral context, once
        print(f"GX import + ephemeral context (once per process): {time.perf_counter() - t:.2f} s")

        times: list[tuple[str, float]] = []
        for name in TABLES:
            suite = get_suite(name)
            ctx = CheckContext(zones=z if name == "volumes" else None)
            t = time.perf_counter()
            result = run_suite(suite, tables[name], config[name], ctx, docs_dir=z.quality_docs)
            dt = time.perf_counter() - t
            times.append((name, dt))
            c = result.counts()
            print(
                f"{name:12s} {len(tables[name]):6d} rows  {dt:6.2f} s  "
                f"({c['expectations']} expectations, {c['failed_errors']} errors, "
                f"{c['failed_warnings']} warnings on bench data)"
            )
        first, rest = times[0][1], [dt for _, dt in times[1:]]
        total = sum(dt for _, dt in times)
        print(f"first suite: {first:.2f} s; next {len(rest)} suites: {sum(rest):.2f} s "
              f"(mean {np.mean(rest):.2f} s); all suites: {total:.2f} s; "
              f"GX contexts created: {runner.gx_contexts_created()}")  # fmt: skip


if __name__ == "__main__":
    main()
