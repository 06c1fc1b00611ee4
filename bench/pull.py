"""Pull benchmark: bytes copied pulling vN+1 next to vN vs bytes that changed (goal <= 1.05),
and verified pull throughput vs a plain copy of the same files.

Run: .venv/bin/python bench/pull.py [--files 80] [--mb 0.5] [--changed 0.1] [--added 0.05]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medcurate.io import sha256_file
from medcurate.store.objects import ObjectStore
from medcurate.store.publish import publish
from medcurate.store.pull import pull


def _write(path: Path, rng: np.random.Generator, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rng.integers(0, 256, size=size, dtype=np.uint8).tobytes())


def _manifest(src: Path, ids: list[str]) -> tuple[pd.DataFrame, dict[str, Path]]:
    rows, sources = [], {}
    for i, sid in enumerate(ids):
        p = src / f"{sid}.nii.gz"
        sha = sha256_file(p)
        sources[sha] = p
        rows.append(
            {
                "sample_id": sid,
                "patient": f"p{i // 2:04d}",
                "split": ["train", "train", "validation", "test"][i % 4],
                "fold": -1,
                "label": "normal",
                "image": f"images/{sid}.nii.gz",
                "image_sha256": sha,
                "image_bytes": p.stat().st_size,
            }
        )
    return pd.DataFrame(rows), sources


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=80)
    ap.add_argument("--mb", type=float, default=0.5, help="size of each file in MB")
    ap.add_argument("--changed", type=float, default=0.10, help="share of files changed in v2")
    ap.add_argument("--added", type=float, default=0.05, help="share of files added in v2")
    args = ap.parse_args()
    size = int(args.mb * (1 << 20))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="medcurate-bench-") as tmp:
        t = Path(tmp)
        src = t / "src"
        ids = [f"s{i:05d}" for i in range(args.files)]
        for sid in ids:
            _write(src / f"{sid}.nii.gz", rng, size)
        store = ObjectStore(t / "releases")
        m1, s1 = _manifest(src, ids)
        publish(store, "bench", m1, s1)

        n_changed = round(args.files * args.changed)
        n_added = round(args.files * args.added)
        src2 = t / "src2"
        shutil.copytree(src, src2)
        for sid in ids[:n_changed]:
            _write(src2 / f"{sid}.nii.gz", rng, size)
        new_ids = [f"n{i:05d}" for i in range(n_added)]
        for sid in new_ids:
            _write(src2 / f"{sid}.nii.gz", rng, size)
        m2, s2 = _manifest(src2, ids + new_ids)
        publish(store, "bench", m2, s2)
        changed_bytes = (n_changed + n_added) * size

        pulls = t / "pulls"
        t0 = time.perf_counter()
        r1 = pull(store, "bench@v1", pulls / "v1")
        pull_s = time.perf_counter() - t0
        r2 = pull(store, "bench@v2", pulls / "v2")

        t0 = time.perf_counter()
        plain = t / "plain"
        plain.mkdir()
        for sha in m1["image_sha256"]:
            shutil.copyfile(store.object_path(sha), plain / sha)
        copy_s = time.perf_counter() - t0

        total_mb = r1.fetched_bytes / (1 << 20)
        ratio = r2.fetched_bytes / changed_bytes if changed_bytes else float("nan")
        print(f"files v1={args.files} x {args.mb} MB; v2: {n_changed} changed, {n_added} added")
        print(
            f"pull v2 next to v1: copied {r2.fetched_bytes} B from the store, "
            f"bytes changed {changed_bytes} B -> ratio {ratio:.3f} (goal <= 1.05); "
            f"{r2.reused_files} files hard-linked from v1 after re-verification"
        )
        print(
            f"fresh pull v1 (sha256 verified): {total_mb:.1f} MB in {pull_s:.2f} s = "
            f"{total_mb / pull_s:.0f} MB/s; plain copy: {copy_s:.2f} s = "
            f"{total_mb / copy_s:.0f} MB/s; pull/copy time = {pull_s / copy_s:.2f}x"
        )


if __name__ == "__main__":
    main()
