"""Seconds per model-training stage (gan_model, synthetic_samples, baseline_evaluation,
augmentation_report) on a generated blob-CT home, the old settings beside the new ones in the
same process, and the cost of a second batch (10% more train samples) to the GAN.

Old: the GAN's 25 epochs without a step budget, the encoder's 6 epochs, no stage cache (every
stage reads its volumes again and the augmentation report trains all its classifiers). New: the
small preset as the demo runs it (a 200-iteration GAN budget, 3 encoder epochs, patches and
slices and the evaluation's classifier cached for the next stage). Nothing is asserted; the
ratios are what to compare across machines.

    .venv/bin/python bench/train_stages.py [--samples 40]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from medcurate import datasets
from medcurate.augment.run import (
    AugmentConfig,
    augment_preset,
    run_gan_model,
    run_synthetic_samples,
)
from medcurate.augment.utility import compare
from medcurate.config import Zones
from medcurate.evaluate.baseline import evaluate
from medcurate.evaluate.config import preset
from medcurate.store.run import ReleaseSettings, release_store, run_release
from tests.medcurate.augment.test_run import _home


def _old() -> AugmentConfig:
    new = augment_preset("small")
    return replace(new, gan=replace(new.gan, max_steps=0), encoder_epochs=6)


def _timed(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    dt = time.perf_counter() - t
    print(f"  {label:<22} {dt:6.1f} s")
    return out, dt


def run(z: Zones, cfg: AugmentConfig, cached: bool) -> float:
    """The four stages on a fresh copy of the home; returns their total seconds."""
    total = 0.0
    _, dt = _timed("gan_model", run_gan_model, z, cfg)
    total += dt
    if not cached:
        for f in z.gan_models.glob("patches-*.npz"):
            f.unlink()
    _, dt = _timed("synthetic_samples", run_synthetic_samples, z, cfg)
    total += dt
    run_release(z, ReleaseSettings("blobs"), release_store(z), f"run-{cached}")
    ds = datasets.load("blobs", "latest", root=str(z.releases), cache_dir=z.home / "pulled")
    ds.local_dir()  # the pull is the release store's cost, not the stages'
    cache = z.home / "cache" / "evaluation" if cached else None
    ecfg = preset("small")
    _, dt = _timed("baseline_evaluation", evaluate, ds, ecfg, cache=cache)
    total += dt
    _, dt = _timed("augmentation_report", compare, ds, ecfg, seeds=(0, 1), cache=cache)
    total += dt
    print(f"  {'total':<22} {total:6.1f} s")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=40)
    args = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        base = Zones(Path(tmp) / "base").ensure()
        os.environ["MEDCURATE_HOME"] = str(base.home)
        _home(base, n=args.samples)
        splits = pd.read_parquet(base.splits_table)
        print(f"{args.samples} blob CT samples, {int((splits['split'] == 'train').sum())} in train")
        totals = {}
        for name, cfg, cached in (("old", _old(), False), ("new", augment_preset("small"), True)):
            home = Path(tmp) / name
            shutil.copytree(base.home, home)
            print(f"{name}:")
            totals[name] = run(Zones(home), cfg, cached)
        print(f"new / old: {totals['new'] / totals['old']:.2f}")

        # a second batch: the first GAN saw 90% of the train samples, the second all of them
        print("second batch (10% more train samples), gan_model:")
        train = splits.index[splits["split"] == "train"]
        k = max(1, round(0.1 * len(train)))
        for name, cfg in (("old", _old()), ("new", augment_preset("small"))):
            z = Zones(Path(tmp) / f"inc-{name}")
            shutil.copytree(base.home, z.home)
            splits.drop(index=train[-k:]).to_parquet(z.splits_table, index=False)
            _, first = _timed(f"{name} first", run_gan_model, z, cfg)
            splits.to_parquet(z.splits_table, index=False)
            if name == "old":  # it retrained from scratch on every release
                (z.gan_models / "latest.json").unlink()
            _, second = _timed(f"{name} second", run_gan_model, z, cfg)
            print(f"  {name}: second / first {second / first:.2f}")


if __name__ == "__main__":
    main()
