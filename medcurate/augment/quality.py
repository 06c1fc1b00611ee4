"""Quality of synthetic images, measured against the real ones they are meant to resemble.

Every number comes with the same number computed real-vs-real (two halves of the real set), because
an MS-SSIM of 0.3 or a precision of 0.7 means nothing until one sees what real data scores.

Images are (N, 1, S, S) float32 in [0, 1]. Features for precision/recall/density/coverage come
from a small classifier trained here (no pretrained weights are reachable) or, as a cheap fallback,
from a fixed random projection of downsampled pixels.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from monai.metrics import MMDMetric, MultiScaleSSIMMetric
from prdc import compute_prdc
from torch import nn

from medcurate.torchrun import deterministic

# Three scales, 7-pixel kernel: MONAI requires S // (scales - 1)**2 > kernel - 1, so this works from
# 28 px up (32 and 64 px alike); the five standard scales with an 11-pixel kernel need 161 px.
# The weights are the first three of Wang et al. 2003, renormalised to sum to 1.
MS_SSIM_WEIGHTS = (0.0711, 0.4530, 0.4760)
MS_SSIM_KERNEL = 7
MIN_SIZE = 28


def _check_images(images: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[1] != 1 or arr.shape[2] != arr.shape[3]:
        raise ValueError(f"{name} must be images shaped (N, 1, S, S); got shape {arr.shape}")
    return arr


def mmd(real: np.ndarray, synth: np.ndarray, seed: int = 0) -> float:
    """MONAI's unbiased linear-kernel MMD, per value: ~ mean((mean(real) - mean(synth))**2).

    Divided by the number of values per sample (pixels or features), so 32 and 64 px compare and a
    uniform brightness shift of 0.05 reads about 0.0025. A linear kernel sees only the mean image:
    pair it with MS-SSIM and precision/recall. MONAI needs equal sample counts, so the larger set
    is subsampled (seeded). Being unbiased it dips slightly below 0 for equal sets (about
    -2 * mean variance / n when both sets are the very same samples).
    """
    a, b = np.asarray(real, dtype=np.float32), np.asarray(synth, dtype=np.float32)
    n = min(len(a), len(b))
    if n < 2:
        raise ValueError("MMD needs at least two real and two synthetic samples")
    rng = np.random.default_rng(seed)
    if len(a) > n:
        a = a[np.sort(rng.choice(len(a), n, replace=False))]
    if len(b) > n:
        b = b[np.sort(rng.choice(len(b), n, replace=False))]
    ta = torch.from_numpy(a.reshape(n, -1).astype(np.float64))
    tb = torch.from_numpy(b.reshape(n, -1).astype(np.float64))
    scale = float(np.sqrt(ta.shape[1]))
    return float(MMDMetric(y_mapping=lambda t: t / scale)(ta, tb))


def _ms_ssim_pairs(x: np.ndarray, y: np.ndarray, batch: int = 256) -> np.ndarray:
    if x.shape[-1] < MIN_SIZE:
        raise ValueError(f"MS-SSIM needs images of at least {MIN_SIZE} px; got {x.shape[-1]}")
    metric = MultiScaleSSIMMetric(
        spatial_dims=2,
        data_range=1.0,
        kernel_size=MS_SSIM_KERNEL,
        weights=MS_SSIM_WEIGHTS,
        reduction="none",
    )
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xs = torch.from_numpy(x[start : start + batch])
            ys = torch.from_numpy(y[start : start + batch])
            values = metric(xs, ys)
            assert isinstance(values, torch.Tensor)
            out.append(values.reshape(-1).numpy())
            metric.reset()  # per-pair values are read directly; drop MONAI's running buffer
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def ms_ssim(real: np.ndarray, synth: np.ndarray, pairs: int = 500, seed: int = 0) -> float:
    """Mean MS-SSIM over `pairs` random (real, synthetic) pairs, drawn with replacement; over
    every pair when there are no more than `pairs` of them (the exact mean the draw estimates,
    at less cost: small sets drew each pair several times)."""
    a, b = _check_images(real, "real"), _check_images(synth, "synth")
    if len(a) * len(b) <= pairs:
        every = np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij")
        return float(_ms_ssim_pairs(a[every[0].ravel()], b[every[1].ravel()]).mean())
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(a), pairs)
    j = rng.integers(0, len(b), pairs)
    return float(_ms_ssim_pairs(a[i], b[j]).mean())


def diversity(synth: np.ndarray, pairs: int = 500, seed: int = 0) -> float:
    """Mean MS-SSIM between random pairs of distinct samples: near 1 means mode collapse. Over
    every unordered pair when there are no more than `pairs` (MS-SSIM is symmetric)."""
    x = _check_images(synth, "synth")
    if len(x) < 2:
        raise ValueError("diversity needs at least two samples")
    if len(x) * (len(x) - 1) // 2 <= pairs:
        upper = np.triu_indices(len(x), k=1)
        return float(_ms_ssim_pairs(x[upper[0]], x[upper[1]]).mean())
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(x), pairs)
    j = (i + rng.integers(1, len(x), pairs)) % len(x)  # never pairs a sample with itself
    return float(_ms_ssim_pairs(x[i], x[j]).mean())


PRDC_METRICS = ("precision", "recall", "density", "coverage")


def prdc_scores(
    real_features: np.ndarray, synth_features: np.ndarray, nearest_k: int = 5
) -> dict[str, float]:
    """Precision, recall, density, coverage (Naeem et al. 2020) via the `prdc` package.

    For two draws from one distribution, density is about 1 and coverage about 1 - 2**-k (0.97 at
    k=5); precision and recall depend on N and the dimension (about 0.71 at N=2000, d=64).
    """
    real = np.asarray(real_features, dtype=np.float32)
    fake = np.asarray(synth_features, dtype=np.float32)
    if min(len(real), len(fake)) <= nearest_k:
        raise ValueError(f"precision/recall need more than nearest_k={nearest_k} samples per set")
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
        scores = compute_prdc(real, fake, nearest_k=nearest_k)
    return {k: float(v) for k, v in scores.items()}


class _Net(nn.Module):
    """Three conv blocks and global pooling: size-agnostic, small enough to train on a CPU."""

    def __init__(self, n_classes: int, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class Encoder:
    """A trained classifier; its penultimate layer is the feature space."""

    net: _Net
    classes: np.ndarray
    threads: int = 1

    def _run(self, images: np.ndarray, part: str, batch: int = 256) -> np.ndarray:
        x = _check_images(images, "images")
        out = []
        with deterministic(0, self.threads), torch.no_grad():
            self.net.eval()
            module = self.net.body if part == "features" else self.net
            for start in range(0, len(x), batch):
                out.append(module(torch.from_numpy(x[start : start + batch])).numpy())
        return np.concatenate(out).astype(np.float32)

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, D) penultimate-layer features."""
        return self._run(images, "features")

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted labels, in the label values the encoder was trained on."""
        return np.asarray(self.classes[self._run(images, "logits").argmax(axis=1)])


def train_encoder(
    images: np.ndarray,
    labels: np.ndarray,
    seed: int = 0,
    epochs: int = 5,
    threads: int = 1,
    dim: int = 32,
    batch_size: int = 32,
    lr: float = 3e-3,
) -> Encoder:
    """Train the feature encoder as a classifier of `labels`; same inputs and seed, same weights.

    Runs on `threads` CPU threads with deterministic algorithms; the caller's torch settings and
    random stream are restored afterwards. (The first optimizer built in a process imports
    torch._dynamo, which takes seconds once.)
    """
    x = _check_images(images, "images")
    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    if len(classes) < 2:
        raise ValueError("the encoder is trained as a classifier and needs at least two labels")
    if len(y) != len(x):
        raise ValueError(f"got {len(x)} images but {len(y)} labels")
    with deterministic(seed, threads):
        net = _Net(len(classes), dim)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
        net.train()
        for _ in range(epochs):
            order = torch.randperm(len(tx), generator=gen)
            for start in range(0, len(tx), batch_size):
                idx = order[start : start + batch_size]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(net(tx[idx]), ty[idx])
                loss.backward()
                opt.step()
        net.eval()
    return Encoder(net=net, classes=classes, threads=threads)


def pixel_features(images: np.ndarray, dim: int = 64, seed: int = 0) -> np.ndarray:
    """A fixed random projection of 16x16-downsampled pixels: weak, but needs no training."""
    x = _check_images(images, "images")
    small = nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), 16).reshape(len(x), -1)
    proj = np.random.default_rng(seed).standard_normal((small.shape[1], dim)) / np.sqrt(dim)
    return (small.numpy().astype(np.float64) @ proj).astype(np.float32)


METRICS = ("mmd", "ms_ssim", "diversity", "precision", "recall", "density", "coverage")


@dataclass
class QualityReport:
    """Synthetic-vs-real numbers beside the same numbers for real-vs-real.

    The real set is split into halves A and B (by group when groups are given, so one patient's
    slices do not sit on both sides). Synthetic samples are compared with A exactly as B is, at the
    same sample count, so each synthetic figure has a real yardstick beside it.
    """

    synthetic: dict[str, float]
    reference: dict[str, float]
    n_compared: int
    features: str
    label_agreement: float | None = None
    reference_label_agreement: float | None = None
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per metric: synthetic, real-vs-real reference."""
        rows = [
            {"metric": m, "synthetic": self.synthetic[m], "reference": self.reference[m]}
            for m in METRICS
        ]
        if self.label_agreement is not None:
            rows.append(
                {
                    "metric": "label_agreement",
                    "synthetic": self.label_agreement,
                    "reference": self.reference_label_agreement,
                }
            )
        return pd.DataFrame(rows)


def _split_halves(
    labels: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Half A / half B of the real set, stratified by label, or split whole groups when given."""
    if groups is not None:
        uniq = np.unique(groups)
        if len(uniq) < 2:
            raise ValueError("the real-vs-real reference needs real images from at least 2 groups")
        picked = rng.permutation(uniq)[: len(uniq) // 2]
        in_a = np.isin(groups, picked)
    else:
        in_a = np.zeros(len(labels), dtype=bool)
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            in_a[idx[: (len(idx) + 1) // 2]] = True
    return np.flatnonzero(in_a), np.flatnonzero(~in_a)


def _scores(
    a_img: np.ndarray,
    a_feat: np.ndarray,
    b_img: np.ndarray,
    b_feat: np.ndarray,
    seed: int,
    pairs: int,
    nearest_k: int,
) -> dict[str, float]:
    out = {
        "mmd": mmd(a_img, b_img, seed),
        "ms_ssim": ms_ssim(a_img, b_img, pairs, seed),
        "diversity": diversity(b_img, pairs, seed),
    }
    # small cohorts (a few lesion patients, split in halves by patient) can leave a half with no
    # more than k samples: both comparisons then use the largest k the sets allow (prdc's
    # neighbour search counts each sample itself, so k + 2 samples a set), and the metrics are
    # n/a when even k=1 does not fit (they were a crash)
    k = min(nearest_k, min(len(a_feat), len(b_feat)) - 2)
    if k >= 1:
        out.update(prdc_scores(a_feat, b_feat, k))
    else:
        out.update(dict.fromkeys(PRDC_METRICS, math.nan))
    return out


def quality_report(
    real: np.ndarray,
    synth: np.ndarray,
    real_labels: np.ndarray,
    synth_labels: np.ndarray,
    encoder: Encoder | None = None,
    seed: int = 0,
    real_groups: np.ndarray | None = None,
    pairs: int = 500,
    nearest_k: int = 5,
) -> QualityReport:
    """Every quality metric for `synth`, with the real-vs-real reference beside it.

    Without an encoder, features are `pixel_features`. Per-class precision/recall/density/coverage
    are included for classes with more than 2 * nearest_k samples on both sides; label agreement is
    the share of samples the encoder assigns to their own label (real half B as the reference).
    """
    real_x, synth_x = _check_images(real, "real"), _check_images(synth, "synth")
    real_y, synth_y = np.asarray(real_labels), np.asarray(synth_labels)
    if len(real_y) != len(real_x) or len(synth_y) != len(synth_x):
        raise ValueError("each image needs exactly one label")
    rng = np.random.default_rng(seed)
    a, b = _split_halves(real_y, None if real_groups is None else np.asarray(real_groups), rng)
    n = min(len(b), len(synth_x))
    b = np.sort(rng.choice(b, n, replace=False))
    s = np.sort(rng.choice(len(synth_x), n, replace=False))

    def feats(x: np.ndarray) -> np.ndarray:
        return encoder.features(x) if encoder is not None else pixel_features(x, seed=seed)

    real_f, synth_f = feats(real_x), feats(synth_x[s])
    args = (seed, pairs, nearest_k)
    reference = _scores(real_x[a], real_f[a], real_x[b], real_f[b], *args)
    synthetic = _scores(real_x[a], real_f[a], synth_x[s], synth_f, *args)

    per_class: dict[str, dict[str, float]] = {}
    for c in np.unique(real_y):
        ra, ss = real_y[a] == c, synth_y[s] == c
        if min(ra.sum(), ss.sum()) > 2 * nearest_k:
            per_class[str(c)] = prdc_scores(real_f[a][ra], synth_f[ss], nearest_k)

    agree = ref_agree = None
    if encoder is not None:
        agree = float((encoder.predict(synth_x[s]) == synth_y[s]).mean())
        ref_agree = float((encoder.predict(real_x[b]) == real_y[b]).mean())
    return QualityReport(
        synthetic=synthetic,
        reference=reference,
        n_compared=n,
        features="encoder" if encoder is not None else "pixel",
        label_agreement=agree,
        reference_label_agreement=ref_agree,
        per_class=per_class,
    )
