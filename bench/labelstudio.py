"""Label Studio figures: start from the template, import of 1000 tasks with mask predictions,
snapshot export, brush decoding rate. Prints measured numbers; asserts only correctness.

    .venv/bin/python bench/labelstudio.py [--tasks 1000] [--size 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from annotation.client import LabelStudioClient
from annotation.export import union_mask
from annotation.render import CT_SOFT_TISSUE, render_volume
from annotation.tasks import build_task, prediction
from medcurate.services import labelstudio as ls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256, help="slice width and height (pixels)")
    args = ap.parse_args()
    n, size = args.tasks, args.size
    ls.ensure_installed()
    with tempfile.TemporaryDirectory(prefix="ls-bench-") as tmp:
        home = Path(tmp)
        t0 = time.perf_counter()
        server = ls.start(home=home, port=ls.free_port(), env={})
        t_start = time.perf_counter() - t0
        try:
            rng = np.random.default_rng(0)
            slices_per_sample = 20
            volume = rng.normal(40, 150, size=(size, size, slices_per_sample)).astype(np.float32)
            yy, xx = np.indices((size, size))
            root = ls.ServicePaths(home).document_root
            tasks, masks = [], {}
            t0 = time.perf_counter()
            for s in range((n + slices_per_sample - 1) // slices_per_sample):
                sid = f"B-{s:05d}"
                ks = list(range(min(slices_per_sample, n - s * slices_per_sample)))
                for r in render_volume(volume, sid, root, "bench/images", ks, CT_SOFT_TISSUE):
                    cy, cx = rng.integers(20, size - 20, 2).tolist()
                    rad = rng.uniform(3, 18)
                    mask = (yy - cy) ** 2 + (xx - cx) ** 2 < rad * rad
                    masks[f"{sid}:k{r.k:04d}"] = mask
                    pred = prediction("bench-v1", float(rng.uniform()), "abnormal", mask)
                    tasks.append(build_task(sid, r.k, r.relpath, [pred]))
            t_build = time.perf_counter() - t0

            client = LabelStudioClient(server.url, server.api_key, timeout=600)
            project = client.create_project("bench")
            client.add_local_storage(project, root / "bench")
            t0 = time.perf_counter()
            imported = client.import_tasks(project, tasks)
            t_import = time.perf_counter() - t0
            t0 = time.perf_counter()
            exported = client.snapshot_export(project)
            t_export = time.perf_counter() - t0
            t0 = time.perf_counter()
            decoded = {
                t["data"]["task_key"]: union_mask(t["predictions"][0]["result"], size, size)
                for t in exported
            }
            t_decode = time.perf_counter() - t0
            assert imported == len(tasks) == len(exported)
            assert all(np.array_equal(decoded[k], m) for k, m in masks.items())
        finally:
            ls.stop(home)

    print(f"label studio {ls.VERSION}: start from template      {t_start:6.2f} s")
    print(f"render + build {len(tasks)} tasks ({size}x{size}, RLE)  {t_build:6.2f} s")
    print(f"import {len(tasks)} tasks with mask predictions  {t_import:6.2f} s")
    print(f"snapshot export of {len(exported)} tasks          {t_export:6.2f} s")
    print(f"brush masks decoded: {len(decoded) / t_decode:8.0f} /s (exact round trip: yes)")


if __name__ == "__main__":
    main()
