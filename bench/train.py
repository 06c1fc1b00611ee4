"""Training costs of the model stages on this machine: seconds per epoch of the evaluation's
slice classifier and UNet, and seconds per iteration of the augmentation GAN, at the small
(demo, CI) settings, on generated slices and patches.

The figure that matters is the ratio to a baseline run in the same process: one epoch of a
plain logistic regression on the same slices (scikit-learn), so a slower or busier machine
changes both alike.

    .venv/bin/python bench/train.py [--slices 1000] [--size 48] [--patches 512]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from medcurate.augment.gan import GanConfig, train_gan
from medcurate.evaluate.classifier import ClassifierConfig, train_classifier
from medcurate.evaluate.cohort import SliceSet
from medcurate.evaluate.segmenter import SegmenterConfig, train_segmenter


def slices(n: int, size: int, seed: int = 0) -> SliceSet:
    """Noisy discs, half with a bright blob and its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.normal(0.4, 0.05, (n, 1, size, size)).astype(np.float32)
    masks = np.zeros((n, 1, size, size), np.uint8)
    labels = (rng.random(n) < 0.5).astype(np.int8)
    for i in np.flatnonzero(labels):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size * 0.08) ** 2
        images[i, 0][blob] += 0.3
        masks[i, 0][blob] = 1
    images = np.clip(images, 0, 1)
    return SliceSet(images, masks, labels, np.arange(n), np.zeros(n, dtype=np.int64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", type=int, default=1000)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--patches", type=int, default=512)
    args = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")

    from sklearn.linear_model import SGDClassifier

    data = slices(args.slices, args.size)
    flat = data.images.reshape(len(data), -1)
    t = time.perf_counter()
    SGDClassifier(max_iter=1, tol=None, random_state=0).fit(flat, data.labels)
    base = time.perf_counter() - t
    print(f"baseline: one SGD logistic-regression epoch on {len(data)} slices: {base:.3f} s")

    clf = train_classifier(data, ClassifierConfig(size=args.size, epochs=2, threads=2))
    per_epoch = float(np.mean([h["seconds"] for h in clf.history]))
    print(
        f"classifier (ResNet 2D, {args.size} px): {per_epoch:.2f} s/epoch ({per_epoch / base:.0f}x)"
    )

    seg = train_segmenter(data, SegmenterConfig(epochs=2, threads=2))
    per_epoch = float(np.mean([h["seconds"] for h in seg.history]))
    print(f"segmenter (UNet 2D, {args.size} px): {per_epoch:.2f} s/epoch ({per_epoch / base:.0f}x)")

    p = slices(args.patches, 32, seed=1)
    images = np.concatenate([p.images, p.masks.astype(np.float32)], axis=1)
    gan = train_gan(
        images, p.labels.astype(np.int64), GanConfig.small(channels=2, epochs=2, threads=2)
    )
    it = float(np.mean([h["seconds_per_iteration"] for h in gan.history]))
    epoch = float(np.mean([h["seconds"] for h in gan.history]))
    print(
        f"GAN (32 px image+mask, batch 32): {it:.3f} s/iteration ({it / base:.1f}x), "
        f"{epoch:.2f} s/epoch on {args.patches} patches"
    )


if __name__ == "__main__":
    main()
