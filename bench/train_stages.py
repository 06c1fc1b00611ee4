"""Seconds per model-training stage (gan_model, synthetic_samples, baseline_evaluation,
augmentation_report) on a generated blob-CT home, the old settings beside the new ones in the
same process, and the cost of a second batch (10% more train samples) to the GAN and to the
evaluation and augmentation report (their models from scratch vs warm-started from the first
release's, :mod:`medcurate.evaluate.lineage`).

Old: the GAN's 25 epochs without a step budget, the encoder's 6 epochs, no stage cache (every
stage reads its volumes again and the augmentation report trains all its classifiers). New: the
small preset as the demo runs it (a 600-iteration GAN budget, channels_last, patches and
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

import numpy as np
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
from medcurate.evaluate.baseline import SplitData, evaluate, load_splits
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
        second_release(Zones(Path(tmp) / "new"), Path(tmp))


def _without_last_real(d: SplitData, share: float) -> SplitData:
    """Train without its last ``share`` of real samples (the release before a new batch)."""
    real = ~d.rows["synthetic"].astype(bool).to_numpy()
    drop = np.zeros(len(real), bool)
    drop[np.flatnonzero(real)[-max(1, round(share * real.sum())) :]] = True
    keep = ~drop
    index = np.cumsum(keep) - 1
    sub = d.slices.subset(keep[d.slices.sample])
    sub = replace(sub, sample=index[sub.sample])
    return SplitData(d.rows.loc[keep].reset_index(drop=True), sub, d.excluded)


def second_release(z: Zones, tmp: Path) -> None:
    """baseline_evaluation and augmentation_report on a release with 10% more real train
    samples than the one before: from scratch (old) vs warm-started (new)."""
    ds = datasets.load("blobs", "latest", root=str(z.releases), cache_dir=z.home / "pulled")
    cfg = preset("small")
    data = load_splits(ds, cfg.size)
    before = {**data, "train": _without_last_real(data["train"], 0.1)}
    print("second release (10% more real train samples), evaluation + report:")
    totals = {}
    for name in ("old", "new"):
        cache = tmp / f"release2-{name}"
        evaluate(ds, cfg, splits=before, cache=cache)
        compare(ds, cfg, seeds=(0, 1), splits=before, cache=cache)
        if name == "old":  # no line records: every model from scratch, as before
            for f in cache.glob("lineage-*.json"):
                f.unlink()
        _, a = _timed(f"{name} evaluation", evaluate, ds, cfg, splits=data, cache=cache)
        _, b = _timed(f"{name} report", compare, ds, cfg, seeds=(0, 1), splits=data, cache=cache)
        totals[name] = a + b
    print(f"  second release new / old: {totals['new'] / totals['old']:.2f}")


if __name__ == "__main__":
    main()
