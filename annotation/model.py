"""The pre-annotation model: a small MONAI 2D UNet on axial slices, trained on consensus labels.

Small on purpose: it must train on a CPU in minutes on the demo and in seconds in the tests, and
its job is to propose masks a person corrects and to say where it is unsure (which drives active
learning), not to be a finished segmenter. Slices are taken along the volume's third (RAS S-I)
axis and halved in-plane (1.5 mm -> 3 mm, the resolution the lesions are labelled at), which
quarters the cost of training and prediction. CT is shown through a soft-tissue window so the
30 HU contrast of a liver lesion is visible; other modalities are robustly standardized.

Training is deterministic (seeded, a fixed thread count, deterministic algorithms), so the same
labels and config give the same weights. Its length is sized to the labelled slices
(:func:`planned_epochs`), its slices are windowed, downsampled and padded once, and volumes are
read one ahead of the work on them (issue 16). torch and MONAI are imported inside functions:
importing this module costs nothing.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage as ndi

from annotation.proposal import (
    PROPOSAL_TRUST,
    PROPOSAL_VERSION,
    ProposalConfig,
    proposal_probability,
    propose,
    spacing_from_affine,
)
from annotation.rounds import existing_rounds, round_number
from medcurate.config import Zones
from medcurate.io import (
    atomic_write_bytes,
    atomic_write_parquet,
    atomic_write_text,
    read_nifti,
    sha256_text,
    write_nifti,
)
from medcurate.torchrun import set_deterministic_kernels

MODEL_FILE = "model.pt"
ARCH = "unet2d"
# CT volumes are scaled to 0..1 from the HU window -1000..1000: HU = 2000 * v - 1000
CT_WINDOW_HU = (-160.0, 240.0)
#: ModelConfig fields that decide whether a model is offered, not what it predicts: the model
#: version (and the hash load_model checks) leaves them out
NOT_HASHED = ("min_validation_dice",)
#: a warm start trains at least this share of a fresh model's epochs, even when no labelled
#: slice is new (the same set with a different validation split still moves the weights a little)
WARM_FLOOR = 0.1


@dataclass(frozen=True)
class ModelConfig:
    """Everything that changes the weights. Its hash is part of the model version."""

    channels: tuple[int, ...] = (8, 16, 32)
    strides: tuple[int, ...] = (2, 2)
    num_res_units: int = 1
    dropout: float = 0.1
    zoom: int = 2  # in-plane downsampling factor before the network
    patch: int = 48  # training patch side, in downsampled pixels
    batch_size: int = 16
    # at most: the epochs run are sized to the training set (patches_per_slice below)
    epochs: int = 30
    steps_per_epoch: int = 40
    # training budget: about this many patches per training slice, in whole epochs between
    # min_epochs and epochs (0: always ``epochs``). On the demo's round 2 (11 labelled volumes,
    # 80 slices: 15 epochs) the held-out Dice was 0.10 after 6 epochs, 0.19 after 10, 0.209
    # after 15 and 0.214 after 30: the last 15 epochs cost half the stage for 0.005 of Dice
    patches_per_slice: int = 120
    min_epochs: int = 10
    lr: float = 1e-2
    pos_fraction: float = 0.5  # share of patches centred on a labelled lesion
    neg_slices_per_volume: int = 6
    flip: bool = True  # left-right flips of training patches
    norm: str = "batch"  # instance norm sees 48-px patches in training, whole slices after
    threshold: float = 0.5
    min_component_voxels: int = 8
    seed: int = 0
    # torch threads while training and predicting: a fixed number, so a machine gives the same
    # weights whatever else it runs (kernels split their work by the thread count)
    threads: int = 1
    # the floor: a trained model whose held-out Dice is below it (or that has no held-out cases)
    # is not offered as pre-annotation. 0.5 is where a mask overlaps the truth about as much as
    # it misses it: below that, correcting a proposal costs an annotator more than painting, and
    # it anchors them on a wrong outline. 0 offers every model.
    min_validation_dice: float = 0.5

    def config_hash(self) -> str:
        """Hash of the fields that change the weights or the predictions (not the floor)."""
        d = {k: v for k, v in asdict(self).items() if k not in NOT_HASHED}
        text = json.dumps(d, sort_keys=True)
        return sha256_text(f"{ARCH}:{text}")[:12]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        for k in ("channels", "strides"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class TrainExample:
    """One labelled volume: intensities (x, y, z) or (x, y), its modality and its mask
    (None for a volume labelled normal: all its slices are negatives)."""

    volume: NDArray[np.floating]
    modality: str
    mask: NDArray[np.integer] | None = None


@dataclass
class TrainResult:
    model: Any  # the torch module
    config: ModelConfig
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    train_size: int = 0  # labelled volumes
    slices: int = 0
    version: str = ""
    epochs: int = 0
    new_slices: int = 0  # slices of examples not in the parent's training set (all when fresh)
    warm: bool = False  # started from a parent model's weights


@dataclass(frozen=True)
class WarmStart:
    """A parent model to start from: its weights and which examples (by position in the
    ``examples`` given to :func:`train`) it had already seen."""

    state_dict: Mapping[str, Any]
    seen: frozenset[int]
    floor: float = WARM_FLOOR


def model_version(config: ModelConfig, train_ids: Sequence[str], parent: str = "") -> str:
    """``unet2d-<config hash>-<training set hash>``: same config and labels, same version. A
    warm-started model hashes its parent's version in too (other weights, other version)."""
    text = "\n".join(sorted(train_ids)) + (f"\nparent:{parent}" if parent else "")
    return f"{ARCH}-{config.config_hash()[:8]}-{sha256_text(text)[:8]}"


def as_3d(volume: NDArray[Any]) -> NDArray[Any]:
    v = np.asarray(volume)
    return v[:, :, None] if v.ndim == 2 else v


def input_window(volume: NDArray[np.floating], modality: str) -> NDArray[np.float32]:
    """What the network sees: CT through a soft-tissue window mapped to 0..1; anything else
    standardized by its median and inter-percentile range and clipped."""
    v = np.asarray(volume, dtype=np.float32)
    if modality.upper() == "CT":
        lo, hi = ((np.array(CT_WINDOW_HU) + 1000.0) / 2000.0).tolist()
        return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    p1, p50, p99 = np.percentile(v, [1, 50, 99])
    scale = float(p99 - p1) or 1.0
    return np.clip((v - p50) / scale, -2.0, 2.0).astype(np.float32)


def _downsample(sl: NDArray[np.float32], zoom: int, reduce: str = "mean") -> NDArray[np.float32]:
    """Block-reduce the first two axes by ``zoom`` (edges padded by replication)."""
    if zoom == 1:
        return sl
    x, y = sl.shape[:2]
    px, py = (-x) % zoom, (-y) % zoom
    if px or py:
        pad = [(0, px), (0, py)] + [(0, 0)] * (sl.ndim - 2)
        sl = np.pad(sl, pad, mode="edge")
    x, y = sl.shape[:2]
    b = sl.reshape(x // zoom, zoom, y // zoom, zoom, *sl.shape[2:])
    out = b.max(axis=(1, 3)) if reduce == "max" else b.mean(axis=(1, 3))
    return np.asarray(out, dtype=np.float32)


def build_network(config: ModelConfig) -> Any:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        dropout=config.dropout,
        norm=config.norm,
    )


class _Deterministic:
    """Seeded, deterministic torch with a fixed thread count for the duration of a block."""

    def __init__(self, seed: int, threads: int = 1) -> None:
        self.seed = seed
        self.want_threads = max(1, int(threads))

    def __enter__(self) -> None:
        import torch

        self.threads = torch.get_num_threads()
        self.det = torch.are_deterministic_algorithms_enabled()
        torch.set_num_threads(self.want_threads)
        set_deterministic_kernels(True, warn_only=False)
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.threads)
        set_deterministic_kernels(self.det, warn_only=False)


def _window_slices(
    volume: NDArray[np.floating], modality: str, ks: Sequence[int]
) -> NDArray[np.float32]:
    """:func:`input_window` of slices ``ks`` only (the same values: CT is windowed voxel by
    voxel; other modalities take their statistics from the whole volume)."""
    v = as_3d(np.asarray(volume))
    if modality.upper() == "CT":
        return as_3d(input_window(v[:, :, list(ks)], modality))
    return as_3d(input_window(v, modality))[:, :, list(ks)]


@dataclass
class _SliceSet:
    """Downsampled training slices, padded once for patch cutting (by half a patch: images by
    edge replication, masks by zeros), with each lesion slice's lesion pixels listed once."""

    imgs: list[NDArray[np.float32]]
    masks: list[NDArray[np.uint8]]  # 0/1: a quarter of float32's memory, the same patches
    shapes: list[tuple[int, int]]
    lesion_px: list[NDArray[np.intp]]
    positives: list[int]
    per_example: list[int] = field(default_factory=list)  # slices taken from each example

    def __len__(self) -> int:
        return len(self.imgs)


def _training_slices(
    examples: Sequence[TrainExample], config: ModelConfig, rng: np.random.Generator
) -> _SliceSet:
    """Downsampled (image, mask) slices: every slice with a lesion plus a few without."""
    half = config.patch // 2
    out = _SliceSet([], [], [], [], [])
    for ex in examples:
        shape = as_3d(np.asarray(ex.volume)).shape
        m = (
            np.zeros(shape, dtype=np.float32)
            if ex.mask is None
            else (as_3d(np.asarray(ex.mask)) > 0).astype(np.float32)
        )
        if m.shape != shape:
            raise ValueError(f"mask shape {m.shape} differs from volume shape {shape}")
        pos = np.flatnonzero(m.reshape(-1, m.shape[2]).any(axis=0))
        neg = np.setdiff1d(np.arange(shape[2]), pos)
        if neg.size:
            neg = rng.choice(neg, size=min(config.neg_slices_per_volume, neg.size), replace=False)
        ks = sorted({*pos.tolist(), *neg.tolist()})
        out.per_example.append(len(ks))
        v = _window_slices(ex.volume, ex.modality, ks)
        for j, k in enumerate(ks):
            img = _downsample(v[:, :, j], config.zoom)
            mask = _downsample(m[:, :, k], config.zoom, reduce="max")
            px = np.argwhere(mask > 0)
            if len(px):
                out.positives.append(len(out.imgs))
            out.imgs.append(np.pad(img, half, mode="edge"))
            out.masks.append(np.pad(mask, half).astype(np.uint8))
            out.shapes.append((int(img.shape[0]), int(img.shape[1])))
            out.lesion_px.append(px)
    return out


def _cut(
    slices: _SliceSet,
    i: int,
    size: int,
    rng: np.random.Generator,
    positive: bool,
    flip: bool,
    img_out: NDArray[np.float32],
    mask_out: NDArray[np.float32],
) -> None:
    """Cut a ``size`` patch of slice ``i`` into ``img_out`` / ``mask_out``: centred near a lesion
    pixel when ``positive``, anywhere otherwise; left-right flipped half the time."""
    px = slices.lesion_px[i]
    nx, ny = slices.shapes[i]
    if positive and len(px):
        cx, cy = px[int(rng.integers(len(px)))] + rng.integers(-size // 4, size // 4 + 1, 2)
    else:
        cx, cy = int(rng.integers(nx)), int(rng.integers(ny))
    cx = int(np.clip(cx, 0, nx - 1))
    cy = int(np.clip(cy, 0, ny - 1))
    sl = (slice(cx, cx + size), slice(cy, cy + size))
    img_c, mask_c = slices.imgs[i][sl], slices.masks[i][sl]
    if flip and rng.random() < 0.5:  # left-right flip: lesions sit in both kidneys and lungs
        img_c, mask_c = img_c[::-1], mask_c[::-1]
    img_out[...] = img_c
    mask_out[...] = mask_c


def planned_epochs(config: ModelConfig, n_slices: int) -> int:
    """Epochs to run on ``n_slices`` training slices: about ``patches_per_slice`` patches a
    slice, at least ``min_epochs`` and at most ``epochs``. A few labelled volumes need far fewer
    steps than the cap; every patch past that is time spent memorizing them."""
    if config.patches_per_slice <= 0:
        return config.epochs
    per_epoch = config.steps_per_epoch * config.batch_size
    want = -(-config.patches_per_slice * n_slices // per_epoch)
    return max(min(config.min_epochs, config.epochs), min(config.epochs, want))


def warm_epochs(config: ModelConfig, n_slices: int, new_slices: int, floor: float) -> int:
    """Epochs of a warm start: a fresh model's :func:`planned_epochs` times the share of new
    labelled slices, at least ``floor`` of them and at least one. The parent has already
    learnt the rest; sweeping all slices again at full length would make a second batch cost
    as much as the first."""
    full = planned_epochs(config, n_slices)
    share = max(new_slices / max(n_slices, 1), floor)
    return max(1, min(full, int(np.ceil(full * share))))


def train(
    examples: Sequence[TrainExample],
    config: ModelConfig | None = None,
    warm: WarmStart | None = None,
) -> TrainResult:
    """Train a UNet on labelled volumes (deterministic for the same inputs, config and parent)
    for :func:`planned_epochs` epochs, the learning rate on a cosine from ``lr`` to 2% of it.
    With ``warm``, start from the parent's weights and run :func:`warm_epochs` (patches are
    still drawn from every slice, old and new, so the model does not forget the old ones)."""
    import torch
    from monai.losses import DiceCELoss

    cfg = config or ModelConfig()
    if not examples:
        raise ValueError("no labelled volumes to train on")
    rng = np.random.default_rng(cfg.seed)
    slices = _training_slices(examples, cfg, rng)
    pos_idx = slices.positives
    new = sum(n for i, n in enumerate(slices.per_example) if warm is None or i not in warm.seen)
    if warm is None:
        epochs = planned_epochs(cfg, len(slices))
    else:
        epochs = warm_epochs(cfg, len(slices), new, warm.floor)
    result = TrainResult(model=None, config=cfg, train_size=len(examples), slices=len(slices),
                         epochs=epochs, new_slices=new, warm=warm is not None)  # fmt: skip
    # batches are filled in place in torch's own (64-byte aligned) memory, allocated once: no
    # copy per step, and no input whose alignment (hence a kernel's SIMD head and tail) could
    # change from one run to the next
    xb = torch.empty((cfg.batch_size, 1, cfg.patch, cfg.patch), dtype=torch.float32)
    yb = torch.empty_like(xb)
    xs, ys = xb.numpy(), yb.numpy()
    with _Deterministic(cfg.seed, cfg.threads):
        net = build_network(cfg)
        if warm is not None:
            net.load_state_dict(dict(warm.state_dict))
        # channels-last weights: oneDNN's direct convolutions skip a layout conversion per call
        # (a fifth of a training step, a sixth of a prediction, on this small net); with one
        # channel in, the (N, 1, H, W) batch is already channels-last
        net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        # cosine decay: the last weights are not a snapshot of a noisy high-rate walk
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=epochs * cfg.steps_per_epoch, eta_min=cfg.lr * 0.02
        )
        loss_fn = DiceCELoss(sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4, batch=True)
        net.train()
        for _ in range(epochs):
            total = 0.0
            for _ in range(cfg.steps_per_epoch):
                for b in range(cfg.batch_size):
                    positive = bool(pos_idx) and rng.random() < cfg.pos_fraction
                    i = int(rng.choice(pos_idx)) if positive else int(rng.integers(len(slices)))
                    _cut(slices, i, cfg.patch, rng, positive, cfg.flip, xs[b, 0], ys[b, 0])
                opt.zero_grad()
                loss = loss_fn(net(xb), yb)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach())
            result.losses.append(round(total / cfg.steps_per_epoch, 6))
        net.eval()
    result.model = net
    return result


def predict(
    model: Any,
    volume: NDArray[np.floating],
    modality: str = "CT",
    config: ModelConfig | None = None,
    mc_samples: int = 0,
    batch: int = 16,
) -> NDArray[np.float32]:
    """Lesion probability per voxel, in the volume's own grid and shape. With ``mc_samples`` > 0
    dropout stays on and the probabilities of that many passes are averaged (MC dropout)."""
    import torch
    import torch.nn.functional as F

    cfg = config or ModelConfig()
    v0 = np.asarray(volume)
    v = as_3d(input_window(v0, modality))
    x, y, nz = v.shape
    div = int(np.prod(cfg.strides))
    # every slice at once: (x', y', z) -> (z, x', y')
    small = np.ascontiguousarray(np.moveaxis(_downsample(v, cfg.zoom), 2, 0))
    del v  # a full-size float32 copy, not needed past here (peak memory per volume)
    sx, sy = small.shape[1:]
    px, py = (-sx) % div, (-sy) % div
    small = np.pad(small, [(0, 0), (0, px), (0, py)], mode="edge")
    passes = max(1, mc_samples)
    # written in (x, y, z) order directly: no second full-size array for a transposed copy
    out = np.zeros((x, y, nz), dtype=np.float32)
    with _Deterministic(cfg.seed, cfg.threads), torch.inference_mode():
        model = model.to(memory_format=torch.channels_last)
        model.eval()
        if mc_samples > 0:  # dropout on, normalization still on its running statistics
            for m in model.modules():
                if isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d):
                    m.train()
        for start in range(0, nz, batch):
            xb = torch.tensor(small[start : start + batch, None])  # a copy in aligned memory
            acc = torch.zeros_like(xb)
            for _ in range(passes):
                acc += torch.sigmoid(model(xb))
            prob = (acc / passes)[:, :, :sx, :sy]
            up = F.interpolate(prob, scale_factor=cfg.zoom, mode="bilinear", align_corners=False)
            out[:, :, start : start + batch] = np.moveaxis(up[:, 0, :x, :y].numpy(), 0, 2)
        model.eval()
    return out.reshape(v0.shape) if v0.ndim == 2 else out


def binary_entropy(p: NDArray[np.floating]) -> NDArray[np.float32]:
    """Entropy in bits of a Bernoulli(p), elementwise (0 at p = 0 or 1, 1 at p = 0.5)."""
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.asarray(-(q * np.log2(q) + (1 - q) * np.log2(1 - q)), dtype=np.float32)


def sample_scores(
    prob: NDArray[np.floating], threshold: float = 0.5, top_k: int = 200
) -> tuple[float, float]:
    """(uncertainty, p_abnormal) of one sample.

    Uncertainty is the mean binary entropy over the region that matters: the voxels predicted
    positive plus the ``top_k`` most probable voxels. Averaging over the whole body would drown a
    lesion's doubt in millions of confident background voxels; adding the top-k voxels makes a
    volume where the model almost fires (p near 0.5, no voxel over the threshold) uncertain too.
    p_abnormal is the mean of the ``top_k`` highest probabilities (robust to a stray voxel).
    """
    p = np.asarray(prob, dtype=np.float32).ravel()
    if p.size == 0:
        return 0.0, 0.0
    k = min(top_k, p.size)
    top = np.partition(p, p.size - k)[p.size - k :]
    region = np.concatenate([top, p[p >= threshold]])
    unc = float(binary_entropy(region).mean())
    return round(unc, 6), round(float(top.mean()), 6)


def to_mask(prob: NDArray[np.floating], config: ModelConfig | None = None) -> NDArray[np.uint8]:
    """Threshold and drop components smaller than ``min_component_voxels``."""
    cfg = config or ModelConfig()
    m = np.asarray(prob) >= cfg.threshold
    if not m.any():
        return m.astype(np.uint8)
    lab, _n = ndi.label(m)
    sizes = np.bincount(lab.ravel())
    keep = sizes >= cfg.min_component_voxels
    keep[0] = False
    return keep[lab].astype(np.uint8)


def dice(pred: NDArray[Any], truth: NDArray[Any]) -> float:
    """Dice of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(pred) > 0, np.asarray(truth) > 0
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


# --- calibration: P(abnormal) an annotator can read as a probability ---------------------------

#: Platt scaling needs this many held-out samples, both classes among them
MIN_PLATT_CASES = 10
#: pseudo-cases of "no skill" the shrinkage adds to the held-out cases
SHRINK_PSEUDO_CASES = 10


def _logit(p: NDArray[np.floating]) -> NDArray[np.float64]:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


@dataclass(frozen=True)
class Calibration:
    """Maps the network's raw sample score (the mean of its top-k voxel probabilities) to a
    calibrated P(abnormal).

    Why: the raw score of a small UNet trained with Dice+CE is overconfident (about 0 or 1), so
    a slice's pre-annotation showed "Prediction Score 100%" (1 - 0.0 on normal slices, 1.0 on
    predicted ones) whatever the model's held-out Dice. Two ways, chosen by what was held out:

    ``platt``: with at least :data:`MIN_PLATT_CASES` held-out samples of both classes,
    ``p = sigmoid(a * logit(raw) + b)`` fitted by maximum likelihood on them, with Platt's
    smoothed targets ((N+ + 1) / (N+ + 2) and 1 / (N- + 2)), so no output reaches 0 or 1.

    ``shrinkage``: otherwise ``p = prior + w * (raw - prior)``, where ``prior`` is the share of
    abnormal samples among the training labels (Laplace-smoothed) and ``w`` the model's skill
    above chance on the held-out samples, shrunk toward none by
    :data:`SHRINK_PSEUDO_CASES`: ``w = max(0, 2 * (right + K/2) / (n + K) - 1)``, ``right`` the
    held-out samples whose sample-level call (any voxel in the mask) was right. Without
    held-out samples ``w = 0``: every sample gets the prior, the honest answer of a model
    nobody has checked. ``w < 1`` always, so p stays strictly inside (0, 1).
    """

    method: str  # "platt" or "shrinkage"
    prior: float
    cases: int = 0  # held-out samples it was fitted on
    weight: float = 0.0  # shrinkage
    a: float = 1.0  # platt
    b: float = 0.0

    def __call__(self, raw: float) -> float:
        if self.method == "platt":
            z = self.a * float(_logit(np.array([raw]))[0]) + self.b
            lo = 1.0 / (self.cases + 2)
            p = float(np.clip(0.5 * (1.0 + np.tanh(0.5 * z)), lo, 1.0 - lo))
        else:
            p = self.prior + self.weight * (float(np.clip(raw, 0.0, 1.0)) - self.prior)
        return round(p, 6)

    def describe(self) -> str:
        if self.method == "platt":
            return f"platt on {self.cases} held-out samples (a={self.a:.3f}, b={self.b:.3f})"
        return (
            f"shrinkage toward prior {self.prior:.3f} with weight {self.weight:.3f} "
            f"({self.cases} held-out samples)"
        )


def _platt(x: NDArray[np.float64], y: NDArray[np.bool_]) -> tuple[float, float]:
    """Platt's (a, b): Newton's method with step halving on the cross-entropy with smoothed
    targets (and a tiny ridge that keeps it finite when the classes separate). Deterministic."""
    npos, nneg = int(y.sum()), int((~y).sum())
    t = np.where(y, (npos + 1.0) / (npos + 2.0), 1.0 / (nneg + 2.0))
    ridge = 1e-3

    def loss(ab: NDArray[np.float64]) -> float:
        z = ab[0] * x + ab[1]
        # cross-entropy of sigmoid(z) against t, written stably: log(1 + e^z) - t z
        return float(np.sum(np.logaddexp(0.0, z) - t * z) + 0.5 * ridge * ab @ ab)

    ab = np.array([1.0, 0.0])
    current = loss(ab)
    for _ in range(200):
        p = 0.5 * (1.0 + np.tanh(0.5 * (ab[0] * x + ab[1])))  # sigmoid without overflow
        g = np.array([np.sum((p - t) * x), np.sum(p - t)]) + ridge * ab
        w = p * (1 - p)
        h = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
        step = np.linalg.solve(h + ridge * np.eye(2), g)
        scale = 1.0
        while scale > 1e-8 and loss(ab - scale * step) > current:
            scale /= 2
        ab = ab - scale * step
        new = loss(ab)
        if current - new < 1e-12:
            break
        current = new
    return round(float(ab[0]), 6), round(float(ab[1]), 6)


def fit_calibration(
    raw: Sequence[float], truth: Sequence[bool], called: Sequence[bool], prior: float
) -> Calibration:
    """A :class:`Calibration` from held-out samples: their raw scores, whether each is truly
    abnormal, and whether the model called it abnormal (its mask is not empty)."""
    y = np.asarray(truth, dtype=bool)
    n = int(y.size)
    if n >= MIN_PLATT_CASES and 0 < int(y.sum()) < n:
        a, b = _platt(_logit(np.asarray(raw, dtype=np.float64)), y)
        return Calibration("platt", round(prior, 6), n, a=a, b=b)
    right = int(np.sum(np.asarray(called, dtype=bool) == y))
    k = SHRINK_PSEUDO_CASES
    weight = max(0.0, 2.0 * (right + k / 2) / (n + k) - 1.0)
    return Calibration("shrinkage", round(prior, 6), n, weight=round(weight, 6))


def label_prior(abnormal: int, total: int) -> float:
    """Share of abnormal samples, Laplace-smoothed (never 0 or 1)."""
    return (abnormal + 1.0) / (total + 2.0)


def offer_decision(val_dice: float | None, floor: float, val_note: str = "") -> tuple[bool, str]:
    """Whether a trained model's masks go to the annotators, and the sentence that says why."""
    if floor <= 0:
        return True, "offered: no floor (min_validation_dice 0)"
    if val_dice is None:
        why = f" ({val_note})" if val_note else ""
        return False, f"withheld: no validation{why}, floor {floor:.2f}"
    if val_dice < floor:
        return False, f"withheld: validation Dice {val_dice:.2f} < floor {floor:.2f}"
    return True, f"offered: validation Dice {val_dice:.2f} >= floor {floor:.2f}"


def save_model(path: Path, result: TrainResult, extra: dict[str, Any] | None = None) -> Path:
    """Weights, config, config hash and version in one torch file (e.g. round-N/model/model.pt)."""
    import torch

    payload = {
        "arch": ARCH,
        "config": asdict(result.config),
        "config_hash": result.config.config_hash(),
        "version": result.version,
        "train_size": result.train_size,
        "losses": result.losses,
        "state_dict": result.model.state_dict(),
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_model(path: Path) -> tuple[Any, ModelConfig, dict[str, Any]]:
    """(network in eval mode, its config, the saved metadata). Refuses a file whose config does
    not hash to the recorded hash (it was edited or written by other code)."""
    import torch

    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    cfg = ModelConfig.from_dict(payload["config"])
    if cfg.config_hash() != payload.get("config_hash"):
        raise ValueError(f"{path}: the config does not match its recorded hash")
    net = build_network(cfg)
    net.load_state_dict(payload["state_dict"])
    net.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return net, cfg, meta


# --- one annotation round: proposals (round 1) or a model trained on earlier rounds' labels ---

SCORE_COLUMNS = ["sample_id", "uncertainty", "p_abnormal", "p_abnormal_raw", "model_version"]
TRAINABLE = ("normal", "abnormal")


@dataclass
class ModelOutcome:
    """What a round's model did, PHI-free (counts, hashes, metrics): a StageResult.

    ``pre_annotations`` says whether the round's masks go to the annotators and why (it starts
    with ``offered`` or ``withheld``); ``calibration`` how p_abnormal was made a probability."""

    round_number: int
    method: str  # "proposal" or "unet"
    model_version: str
    train_size: int = 0
    train_positives: int = 0
    val_size: int = 0
    val_positives: int = 0
    val_dice: float | None = None
    predictions: int = 0  # pre-annotation masks written (none when withheld)
    scored: int = 0  # samples with a row in scores.parquet
    final_loss: float | None = None
    pre_annotations: str = ""
    min_validation_dice: float | None = None
    calibration: str = ""
    epochs: int | None = None
    new_slices: int | None = None  # training slices the parent had not seen (all when fresh)
    warm_start_from: str = "none"  # the parent model's version when warm-started
    warm_start: str = ""  # why it was (or was not) warm-started

    @property
    def offered(self) -> bool:
        return self.pre_annotations.startswith("offered")

    @property
    def problems(self) -> list[str]:
        return []

    def metadata(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if v is not None and v != ""}

    def summary_line(self) -> str:
        if self.method == "proposal":
            line = f"round {self.round_number}: proposals for {self.scored} samples"
        else:
            line = (
                f"round {self.round_number}: trained on {self.train_size} labelled samples, "
                f"scored {self.scored}"
            )
        return f"{line}; pre-annotations {self.pre_annotations}" if self.pre_annotations else line

    def outcome_json(self) -> str:
        """``round-N/model/outcome.json``: what annotation_tasks reports about the round's
        pre-annotations (read by :func:`read_outcome`)."""
        doc = {
            "round_number": self.round_number,
            "method": self.method,
            "model_version": self.model_version,
            "offered": self.offered,
            "pre_annotations": self.pre_annotations,
            "val_dice": self.val_dice,
            "val_size": self.val_size,
            "predictions": self.predictions,
            "min_validation_dice": self.min_validation_dice,
            "calibration": self.calibration,
            "warm_start_from": self.warm_start_from,
        }
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def read_outcome(z: Zones, round: str) -> dict[str, Any] | None:
    """The round's ``model/outcome.json`` (None when the model stage has not run for it)."""
    path = z.round_model_outcome(round)
    return dict(json.loads(path.read_text())) if path.exists() else None


def earlier_labels(labels: Any, number: int) -> Any:
    """Rows of labels.parquet from rounds before round ``number``. A row whose source_round is
    not ``round-N`` (missing, or e.g. an import) counts as earlier: a label is a label."""

    def num(r: object) -> int:
        try:
            return round_number(r) if isinstance(r, str | int) else 0
        except ValueError:
            return 0

    if labels is None or labels.empty or "source_round" not in labels.columns:
        return labels
    return labels[labels["source_round"].map(num) < number]


def _load(path: Path) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    return read_nifti(path)


def _read_ahead(paths: Sequence[Path]) -> Iterator[tuple[NDArray[np.float32], NDArray[np.float64]]]:
    """The volumes at ``paths``, in order, the next one read by a thread while the caller works
    on the current one (gzip inflation releases the GIL, so reading overlaps the proposal or
    the network on a two-core machine). At most two volumes are held at a time."""
    if not paths:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_load, paths[0])
        for nxt in [*paths[1:], None]:
            current = pending.result()
            if nxt is not None:
                pending = pool.submit(_load, nxt)
            yield current


def write_mask(path: Path, mask: NDArray[Any], affine: NDArray[np.floating]) -> None:
    """A uint8 NIfTI with exactly the volume's affine (qform and sform)."""
    write_nifti(path, np.asarray(mask, dtype=np.uint8), np.asarray(affine, np.float64), "uint8")


def label_key(label: str, mask: NDArray[Any] | None, volume_sha: str = "") -> str:
    """Content key of one training label: its class, its mask's voxels and the volume it is on.
    A parent model whose training labels all keep their key may be warm-started from."""
    h = sha256_text(f"{label}|{volume_sha}")
    if mask is not None:
        m = np.asarray(mask) > 0
        h = sha256_text(f"{h}|{m.shape}|{np.packbits(m).tobytes().hex()}")
    return h[:16]


def find_parent(
    z: Zones, number: int, cfg: ModelConfig, label_keys: Mapping[str, str]
) -> tuple[dict[str, Any] | None, str]:
    """The latest earlier round's saved model, if it may be warm-started from, and why (not).

    It may when its config hashes the same and every label it was trained on is still among
    the current labels (``label_keys``: sample -> :func:`label_key`) with the same content key:
    a label that was removed or changed forces a fresh start, so no stale label lingers in the
    weights. (The caller keeps the parent's training patients out of the held-out set.)"""
    import torch

    earlier = [r for r in existing_rounds(z) if round_number(r) < number]
    path = next(
        (z.round_model_file(r) for r in reversed(earlier) if z.round_model_file(r).exists()), None
    )
    if path is None:
        return None, "fresh: no earlier model"
    payload = torch.load(path, map_location="cpu", weights_only=True)
    version = str(payload.get("version", ""))
    if payload.get("config_hash") != cfg.config_hash():
        return None, f"fresh: {version} has another config"
    seen = (payload.get("extra") or {}).get("train_labels")
    if not isinstance(seen, dict) or not seen:
        return None, f"fresh: {version} records no training labels"
    gone = [sid for sid, key in seen.items() if label_keys.get(sid) != key]
    if gone:
        return None, f"fresh: {len(gone)} of {version}'s training labels removed or changed"
    return payload, f"warm: from {version}"


@dataclass(frozen=True)
class _Item:
    """A labelled sample before its volume is read."""

    patient: str
    sid: str
    modality: str
    volume_file: Path
    mask_file: Path | None  # None: labelled normal


def _example(item: _Item) -> TrainExample:
    vol, _ = _load(item.volume_file)
    mask = None
    if item.mask_file is not None:
        raw, _ = _load(item.mask_file)
        mask = (raw.reshape(vol.shape) > 0).astype(np.uint8)
    return TrainExample(vol, item.modality, mask)


class _LazyExamples(Sequence[TrainExample]):
    """Training examples read when iterated (the next one by a thread, as :func:`_read_ahead`
    does), so :func:`train` sees a sequence while at most two volumes are in memory."""

    def __init__(self, items: Sequence[_Item]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return _LazyExamples(self.items[i])
        return _example(self.items[i])

    def __iter__(self) -> Iterator[TrainExample]:
        if not self.items:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(_example, self.items[0])
            for nxt in [*self.items[1:], None]:
                current = pending.result()
                if nxt is not None:
                    pending = pool.submit(_example, nxt)
                yield current


def _validation_patients(patients: Sequence[str], fraction: float = 0.2) -> set[str]:
    """A fixed share of patients, chosen by a hash of the pseudonym (no RNG state to keep)."""
    uniq = sorted(set(patients))
    ranked = sorted(uniq, key=lambda p: sha256_text(f"val:{p}"))
    return set(ranked[: max(1, round(len(uniq) * fraction))])


def run_annotation_model(
    z: Zones,
    round: str,
    config: ModelConfig | None = None,
    min_val_positives: int = 3,
) -> ModelOutcome:
    """The ``annotation_model[round]`` stage: pre-annotations and uncertainty for the round.

    Writes ``round-N/model/scores.parquet`` (uncertainty, calibrated ``p_abnormal``, the raw
    score, model_version) for every sample without an earlier label, ``outcome.json``, and,
    when the round's pre-annotations are offered, ``pred/<sample_id>.nii.gz``; with labels
    from earlier rounds also ``model.pt``. Round 1 (or no usable labels yet) uses the intensity
    proposal of :mod:`annotation.proposal` (offered: there is nothing to validate it against;
    its score is shrunk toward 0.5, see :func:`annotation.proposal.proposal_probability`).
    Otherwise a UNet is trained on the earlier rounds' normal/abnormal labels; when more than
    ``min_val_positives`` abnormal patients exist, a fifth of the abnormal and of the normal
    patients is held out, the pooled Dice on them reported and the score calibrated on them
    (:class:`Calibration`); the model trained without them is the one used (the metric then
    describes the model that makes the predictions). A model below
    ``config.min_validation_dice``, or without held-out cases, writes no masks: the round goes
    without pre-annotations, but its uncertainty still drives sample selection.

    Incremental: the UNet starts from the latest earlier round's ``model.pt`` when
    :func:`find_parent` allows it (same config; every label the parent learnt unchanged), for
    :func:`warm_epochs` (sized to the share of new labelled slices), keeping the parent's
    training patients out of the held-out set; ``warm_start_from`` (metadata and
    outcome.json) and ``extra.parent`` (model.pt) name the parent.
    """
    return _build_round(z, round, round_number(round), config or ModelConfig(),
                        min_val_positives)  # fmt: skip


def _build_round(
    z: Zones, key: str, number: int, cfg: ModelConfig, min_val_positives: int
) -> ModelOutcome:
    volumes = pd.read_parquet(z.volumes_table)
    if "status" in volumes.columns:
        volumes = volumes[volumes["status"].fillna("ok") == "ok"]
    volumes = volumes.drop_duplicates("sample_id").sort_values("sample_id", kind="stable")
    labels_file = z.labels_table
    labels = pd.read_parquet(labels_file) if labels_file.exists() else pd.DataFrame()
    labels = earlier_labels(labels, number)
    labelled = set(labels["sample_id"]) if not labels.empty else set()
    usable = (
        labels[labels["label"].isin(TRAINABLE) & labels["sample_id"].isin(set(volumes.sample_id))]
        if not labels.empty
        else labels
    )
    pred_dir = z.round_predictions(key)
    if pred_dir.exists():
        shutil.rmtree(pred_dir)  # a re-run replaces the round's predictions, never mixes them
    rows: list[dict[str, Any]] = []
    todo = volumes[~volumes["sample_id"].isin(labelled)]

    if number == 1 or usable.empty:
        pcfg = ProposalConfig()
        phash = sha256_text(json.dumps(pcfg.as_dict(), sort_keys=True))
        version = f"{PROPOSAL_VERSION}-{phash[:8]}"
        outcome = ModelOutcome(
            number, "proposal", version,
            pre_annotations="offered: intensity proposal, no labels to validate it against",
            calibration=f"proposal score shrunk toward 0.5 (trust {PROPOSAL_TRUST})",
        )  # fmt: skip
        atomic_write_text(
            z.round_proposal(key),
            json.dumps({"version": version, "config": pcfg.as_dict()}, indent=1, sort_keys=True)
            + "\n",
        )
        z.round_model_file(key).unlink(missing_ok=True)
        pred_dir.mkdir(parents=True, exist_ok=True)
        rows_todo = list(todo.itertuples())
        reads = _read_ahead([z.volume_file(str(r.nifti_path)) for r in rows_todo])
        for r, (vol, aff) in zip(rows_todo, reads, strict=True):
            prop = propose(vol, spacing_from_affine(aff), pcfg, modality=str(r.modality))
            write_mask(z.round_prediction(key, str(r.sample_id)), prop.mask.reshape(vol.shape), aff)
            # the proposal has no calibrated doubt: its score sits nearest 0.5 when it is unsure
            unc = float(binary_entropy(np.array([prop.score]))[0])
            rows.append(dict(sample_id=r.sample_id, uncertainty=round(unc, 6),
                             p_abnormal=proposal_probability(prop.score),
                             p_abnormal_raw=prop.score, model_version=version))  # fmt: skip
    else:
        by_id = volumes.set_index("sample_id")
        items: list[_Item] = []
        keys: dict[str, str] = {}
        for lr in usable.sort_values("sample_id", kind="stable").itertuples():
            mp = getattr(lr, "mask_path", None)
            has_mask = isinstance(mp, str) and bool(mp)
            if lr.label == "abnormal" and not has_mask:
                continue  # abnormal without a mask teaches the segmenter nothing
            v = by_id.loc[lr.sample_id]
            item = _Item(str(v["patient"]), str(lr.sample_id), str(v["modality"]),
                         z.volume_file(str(v["nifti_path"])),
                         z.label_file(str(mp)) if lr.label == "abnormal" else None)  # fmt: skip
            items.append(item)
            vsha = str(v["nifti_sha256"]) if "nifti_sha256" in v.index else ""
            mask = _load(item.mask_file)[0] > 0 if item.mask_file is not None else None
            keys[item.sid] = label_key(str(lr.label), mask, vsha)
        # (patient, sample, example) with the volumes read only when iterated: a round holds
        # two volumes at a time, not every labelled one (peak memory flat in the labels)
        examples = [(it.patient, it.sid, it) for it in items]
        positives = {p for p, _, it in examples if it.mask_file is not None}
        negatives = {p for p, _, _ in examples} - positives  # patients with normal labels only
        held: set[str] = set()
        if len(positives) > min_val_positives:
            held = _validation_patients(sorted(positives))
            if len(negatives) > min_val_positives:  # normals too, so calibration sees both
                held |= _validation_patients(sorted(negatives))
        parent, why = find_parent(z, number, cfg, keys)
        if parent is not None and held:
            # a patient the parent learnt from stays in training: held out now, it would flatter
            # the validation Dice (the hash-ranked fifth shifts as patients are added)
            learnt = {p for p, sid, _ in examples if sid in parent["extra"]["train_labels"]}
            if held - learnt:
                held -= learnt
            else:
                parent, why = None, "fresh: every held-out patient was in the parent's training"
        val = [e for e in examples if e[0] in held]
        train_set = [e for e in examples if e not in val] if val else examples
        train_keys = {sid: keys[sid] for _, sid, _ in train_set}
        warm = None
        if parent is not None:
            old = (parent.get("extra") or {})["train_labels"]
            seen = frozenset(i for i, (_, sid, _) in enumerate(train_set) if sid in old)
            warm = WarmStart(parent["state_dict"], seen)
        result = train(_LazyExamples([e[2] for e in train_set]), cfg, warm)
        parent_version = str(parent["version"]) if parent is not None else ""
        result.version = model_version(cfg, list(train_keys), parent_version)
        n_pos = sum(e[2].mask_file is not None for e in train_set)
        outcome = ModelOutcome(
            number, "unet", result.version, train_size=len(train_set), train_positives=n_pos,
            final_loss=result.losses[-1] if result.losses else None,
            min_validation_dice=cfg.min_validation_dice, epochs=result.epochs,
            new_slices=result.new_slices, warm_start_from=parent_version or "none",
            warm_start=why,
        )  # fmt: skip
        raws: list[float] = []
        truth: list[bool] = []
        called: list[bool] = []
        if val:
            inter = total = 0
            for ex in _LazyExamples([e[2] for e in val]):
                prob = predict(result.model, ex.volume, ex.modality, cfg)
                pm = to_mask(prob, cfg) > 0
                tm = np.zeros(pm.shape, bool) if ex.mask is None else ex.mask > 0
                inter += int((pm & tm).sum())
                total += int(pm.sum() + tm.sum())
                raws.append(sample_scores(prob, cfg.threshold)[1])
                truth.append(ex.mask is not None)
                called.append(bool(pm.any()))
            outcome.val_size = len(val)
            outcome.val_positives = sum(truth)
            outcome.val_dice = round(2 * inter / total, 4) if total else 1.0
        calib = fit_calibration(raws, truth, called, label_prior(n_pos, len(train_set)))
        outcome.calibration = calib.describe()
        note = f"{len(positives)} abnormal patients labelled, more than {min_val_positives} needed"
        offered, outcome.pre_annotations = offer_decision(
            outcome.val_dice, cfg.min_validation_dice, "" if val else note
        )
        extra = {"round": number, "parent": parent_version, "train_labels": train_keys}
        save_model(z.round_model_file(key), result, extra=extra)
        if offered:
            pred_dir.mkdir(parents=True, exist_ok=True)
        rows_todo = list(todo.itertuples())
        reads = _read_ahead([z.volume_file(str(r.nifti_path)) for r in rows_todo])
        for r, (vol, aff) in zip(rows_todo, reads, strict=True):
            prob = predict(result.model, vol, str(r.modality), cfg)
            if offered:
                write_mask(z.round_prediction(key, str(r.sample_id)), to_mask(prob, cfg), aff)
            unc, pab = sample_scores(prob, cfg.threshold)
            rows.append(dict(sample_id=r.sample_id, uncertainty=unc, p_abnormal=calib(pab),
                             p_abnormal_raw=pab, model_version=result.version))  # fmt: skip
    atomic_write_parquet(pd.DataFrame(rows, columns=SCORE_COLUMNS), z.round_scores(key))
    outcome.scored = len(rows)
    outcome.predictions = len(list(pred_dir.glob("*.nii.gz"))) if pred_dir.exists() else 0
    atomic_write_text(z.round_model_outcome(key), outcome.outcome_json())
    return outcome
