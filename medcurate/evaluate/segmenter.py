"""The segmentation baseline: a small MONAI 2D UNet on a release's slices, scored per volume.

It answers "can a model learn to outline the lesions from this version's labels?", so it is small
and trains on a CPU in seconds to minutes. Training uses only slices whose label is known (samples
with a mask and normal samples); an abnormal sample without a mask says nothing about where its
lesion is. Lesion slices are a minority, so each epoch draws extra lesion slices (seeded) until
they are as many as the slices without a lesion.

Scores are per volume, not per slice: predictions are stacked back into (S, S, Z) volumes by slice
position, Dice compares the stacks, and lesion-wise detection counts 3D connected components.
Training and prediction are deterministic (seeded, fixed thread count, deterministic algorithms),
so the same slices and config give the same weights and the same probabilities. torch and MONAI
are imported inside functions: importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from medcurate.evaluate import lineage
from medcurate.evaluate.cohort import UNKNOWN, SliceSet
from medcurate.evaluate.fastcpu import is_channels_last, memory_format
from medcurate.torchrun import deterministic, load_model_file, save_model_file, untimed

ARCH = "unet2d-segmenter"
# 26-connectivity: voxels touching by a face, an edge or a corner belong to one lesion
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything that changes the weights or the scores."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-2  # 2e-3 underfits small releases (held-out Dice 0.07 in 10 epochs)
    seed: int = 0
    threads: int = 1
    channels: tuple[int, ...] = (8, 16, 32)
    strides: tuple[int, ...] = (2, 2)
    lesion_threshold: float = 0.5
    min_lesion_voxels: int = 3
    channels_last: bool = True  # NHWC (see medcurate.evaluate.fastcpu): faster convs, own rounding

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["strides"] = list(self.strides)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmenterConfig:
        d = dict(d)
        for k in ("channels", "strides"):
            if k in d:
                d[k] = tuple(int(v) for v in d[k])
        return cls(**d)


@dataclass
class TrainedSegmenter:
    model: Any  # the torch module, in eval mode
    cfg: SegmenterConfig
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, seconds
    parent: str = ""  # the model a warm start began from ("" from scratch)
    model_id: str = ""  # its id in the stage cache ("" when trained without one)


@dataclass
class LesionDetection:
    """Lesion-wise counts over the samples that have a mask (or are normal)."""

    samples: int = 0
    true_lesions: int = 0
    detected: int = 0
    false_positive_components: int = 0
    # per sample: true_lesions, detected, false_positive_components
    per_sample: dict[int, dict[str, int]] = field(default_factory=dict)

    @property
    def sensitivity(self) -> float:
        """Share of true lesions touched by a predicted component (NaN when there are none)."""
        return self.detected / self.true_lesions if self.true_lesions else float("nan")

    @property
    def false_positives_per_sample(self) -> float:
        return self.false_positive_components / self.samples if self.samples else float("nan")


def build_unet(cfg: SegmenterConfig) -> Any:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=cfg.channels,
        strides=cfg.strides,
        num_res_units=1,
    )


def _pad_to(images: np.ndarray, div: int) -> tuple[np.ndarray, int, int]:
    """Edge-pad (N, 1, H, W) so H and W divide by the UNet's total stride."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % div, (-w) % div
    if ph or pw:
        images = np.pad(images, [(0, 0), (0, 0), (0, ph), (0, pw)], mode="edge")
    return np.ascontiguousarray(images, dtype=np.float32), h, w


def _epoch_order(lesion: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every slice once, plus lesion slices drawn with replacement up to the count without one."""
    pos = np.flatnonzero(lesion)
    neg_count = int(len(lesion) - len(pos))
    extra: np.ndarray = np.zeros(0, dtype=np.int64)
    if 0 < len(pos) < neg_count:
        extra = rng.choice(pos, size=neg_count - len(pos))
    return rng.permutation(np.concatenate([np.arange(len(lesion)), extra]))


def train_segmenter(
    train: SliceSet,
    cfg: SegmenterConfig | None = None,
    init: TrainedSegmenter | None = None,
    epochs: int | None = None,
) -> TrainedSegmenter:
    """Train a UNet on the known slices of ``train`` with DiceCE loss (sigmoid output); ``init``
    starts from an earlier UNet's weights (fresh optimizer), ``epochs`` overrides the config's."""
    import torch
    from monai.losses import DiceCELoss

    cfg = cfg or SegmenterConfig()
    # rows of the known slices: batches are gathered from ``train`` itself, so no padded or
    # float copy of the whole split is made (the same values per batch as before)
    rows = np.flatnonzero(train.labels != UNKNOWN)
    if len(rows) == 0:
        raise ValueError(
            "no slices with a known label to train the segmenter on: it needs samples with a "
            "lesion mask or labelled normal"
        )
    div = int(np.prod(cfg.strides))
    lesion = np.asarray(train.masks.reshape(len(train), -1).any(axis=1))[rows]
    rng = np.random.default_rng(cfg.seed)
    result = TrainedSegmenter(model=None, cfg=cfg, parent=init.model_id if init else "")
    fmt = memory_format(cfg.channels_last)
    with deterministic(cfg.seed, cfg.threads):
        net = build_unet(cfg)
        if init is not None:
            net.load_state_dict(init.model.state_dict())
        net = net.to(memory_format=fmt)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, foreach=True)
        # batch=True: Dice over the whole batch, so batches of lesion-free slices do not get a
        # Dice loss of 1 whatever the network does
        loss_fn = DiceCELoss(sigmoid=True, batch=True, smooth_nr=1e-4, smooth_dr=1e-4)
        net.train()
        for epoch in range(cfg.epochs if epochs is None else epochs):
            start = time.perf_counter()
            order = _epoch_order(lesion, rng)
            total, steps = 0.0, 0
            for b in range(0, len(order), cfg.batch_size):
                pick = rows[order[b : b + cfg.batch_size]]
                xb = _pad_to(train.images[pick], div)[0]
                yb = _pad_to((train.masks[pick] > 0).astype(np.float32), div)[0]
                opt.zero_grad()
                loss = loss_fn(
                    net(torch.from_numpy(xb).contiguous(memory_format=fmt)),
                    torch.from_numpy(yb).contiguous(memory_format=fmt),
                )
                loss.backward()
                opt.step()
                total += float(loss.detach())
                steps += 1
            result.history.append(
                {
                    "epoch": float(epoch + 1),
                    "loss": round(total / steps, 6),
                    "seconds": round(time.perf_counter() - start, 4),
                    "slices": float(len(order)),
                }
            )
        net.eval()
    result.model = net
    return result


def predict_masks(
    model: Any, slices: SliceSet, batch_size: int = 64, cfg: SegmenterConfig | None = None
) -> np.ndarray:
    """Lesion probability per pixel, (N, S, S) float32. Slices are edge-padded to the network's
    total stride and cropped back; ``cfg`` gives the seed and thread count (default config's).
    To score a split without holding this array, use :func:`score_volumes`."""
    h, w = slices.images.shape[-2:]
    out = np.zeros((len(slices), h, w), dtype=np.float32)
    for start, prob in _predict_batches(model, slices, batch_size, cfg):
        out[start : start + len(prob)] = prob
    return out


def _predict_batches(
    model: Any, slices: SliceSet, batch_size: int, cfg: SegmenterConfig | None
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, probabilities) per batch of ``batch_size`` slices in row order; each batch is
    padded on its own (the same values a padded copy of all the images would give)."""
    import torch

    cfg = cfg or SegmenterConfig()
    n = len(slices)
    if n == 0:
        return
    div = int(np.prod(getattr(model, "strides", cfg.strides)))
    fmt = memory_format(is_channels_last(model))
    with deterministic(cfg.seed, cfg.threads), torch.inference_mode():
        model.eval()
        for b in range(0, n, batch_size):
            images, h, w = _pad_to(slices.images[b : b + batch_size], div)
            xb = torch.from_numpy(images).contiguous(memory_format=fmt)
            yield b, torch.sigmoid(model(xb))[:, 0, :h, :w].numpy().astype(np.float32, copy=False)


def score_volumes(
    model: Any,
    slices: SliceSet,
    threshold: float,
    min_voxels: int,
    batch_size: int = 64,
    cfg: SegmenterConfig | None = None,
) -> tuple[dict[int, float], LesionDetection]:
    """:func:`dice_per_sample` and :func:`lesion_detection` of the model's predictions, scored
    batch by batch: a sample's thresholded stack is kept only until its last slice is predicted,
    so memory does not grow with the split (no (N, S, S) probability array)."""
    keep = slices.labels != UNKNOWN
    last: dict[int, int] = {int(s): int(r) for r, s in enumerate(slices.sample) if keep[r]}
    pending: dict[int, list[tuple[int, np.ndarray]]] = {}
    dice: dict[int, float] = {}
    det = LesionDetection()
    for start, prob in _predict_batches(model, slices, batch_size, cfg):
        for j, p in enumerate(prob):
            r = start + j
            if not keep[r]:
                continue
            s = int(slices.sample[r])
            pending.setdefault(s, []).append((r, p >= threshold))
            if last[s] == r:
                rows = pending.pop(s)
                order = np.argsort([slices.position[i] for i, _ in rows], kind="stable")
                t = np.stack([slices.masks[rows[k][0], 0] > 0 for k in order], axis=-1)
                pred = np.stack([rows[k][1] for k in order], axis=-1)
                dice[s] = _dice(t, pred)
                _add_detection(det, s, t, pred, min_voxels)
    det.per_sample = dict(sorted(det.per_sample.items()))
    return dict(sorted(dice.items())), det


def volume_stacks(slices: SliceSet, values: np.ndarray) -> dict[int, np.ndarray]:
    """Per sample, its per-slice 2D arrays (values (N, S, S) or (N, 1, S, S)) stacked into one
    (S, S, Z) volume, slices ordered by position (the order they arrive in does not matter)."""
    v = np.asarray(values)
    if v.ndim == 4:
        v = v[:, 0]
    if len(v) != len(slices):
        raise ValueError(f"{len(v)} arrays for {len(slices)} slices: give one per slice")
    stacks: dict[int, np.ndarray] = {}
    for s in np.unique(slices.sample):
        rows = np.flatnonzero(slices.sample == s)
        rows = rows[np.argsort(slices.position[rows], kind="stable")]
        stacks[int(s)] = np.stack([v[r] for r in rows], axis=-1)
    return stacks


def _scored(slices: SliceSet) -> SliceSet:
    """Slices of the samples whose truth is known (a mask, or labelled normal)."""
    return slices.subset(slices.labels != UNKNOWN)


def dice_per_sample(slices: SliceSet, prob: np.ndarray, threshold: float) -> dict[int, float]:
    """Dice of the thresholded (prob >= threshold) prediction stack against the mask stack, per
    sample with a known truth; samples whose slices are all of unknown label are left out.

    A sample whose truth and prediction are both empty gets NaN, not 1: a perfect score for
    predicting nothing on a normal volume would lift the mean without measuring any outlining.
    Average with ``np.nanmean`` so such samples are not counted. A normal sample with a false
    positive gets 0.
    """
    keep = slices.labels != UNKNOWN
    sub = slices.subset(keep)
    truth = volume_stacks(sub, sub.masks > 0)
    pred = volume_stacks(sub, np.asarray(prob)[keep] >= threshold)
    return {s: _dice(t, pred[s]) for s, t in truth.items()}


def _dice(t: np.ndarray, p: np.ndarray) -> float:
    total = int(t.sum()) + int(p.sum())
    return float("nan") if total == 0 else 2.0 * int((t & p).sum()) / total


def lesion_detection(
    slices: SliceSet, prob: np.ndarray, threshold: float, min_voxels: int
) -> LesionDetection:
    """Lesion-wise counts per sample with a known truth: 3D connected components (26-connectivity)
    of the mask stack and of the thresholded prediction stack, predicted components under
    ``min_voxels`` dropped as noise. A true lesion is detected when any predicted component shares
    a voxel with it; a predicted component that touches no true lesion is a false positive."""
    keep = slices.labels != UNKNOWN
    sub = slices.subset(keep)
    truth = volume_stacks(sub, sub.masks > 0)
    pred = volume_stacks(sub, np.asarray(prob)[keep] >= threshold)
    result = LesionDetection()
    for s, t in truth.items():
        _add_detection(result, s, t, pred[s], min_voxels)
    return result


def _add_detection(
    result: LesionDetection, s: int, t: np.ndarray, pred: np.ndarray, min_voxels: int
) -> None:
    """Count one sample's true, detected and false positive lesions into ``result``."""
    t_lab, n_true = ndi.label(t, structure=CONNECTIVITY)
    p_lab, n_pred = ndi.label(pred, structure=CONNECTIVITY)
    sizes = np.bincount(p_lab.ravel(), minlength=n_pred + 1)
    big = sizes >= min_voxels
    big[0] = False
    p_lab = np.where(big[p_lab], p_lab, 0)
    both = (t_lab > 0) & (p_lab > 0)
    detected = len(np.unique(t_lab[both]))
    kept = int(big.sum())
    false_pos = kept - len(np.unique(p_lab[both]))
    result.per_sample[s] = {
        "true_lesions": int(n_true),
        "detected": int(detected),
        "false_positive_components": int(false_pos),
    }
    result.samples += 1
    result.true_lesions += int(n_true)
    result.detected += int(detected)
    result.false_positive_components += int(false_pos)


def save_model(trained: TrainedSegmenter, path: str | Path) -> Path:
    """Weights, config and training history (without times) in one torch file."""
    payload = {
        "config": trained.cfg.to_dict(),
        "history": untimed(trained.history),
        "parent": trained.parent,
        "model_id": trained.model_id,
        "state_dict": trained.model.state_dict(),
    }
    return save_model_file(path, ARCH, payload)


def load_model(path: str | Path) -> TrainedSegmenter:
    """The saved segmenter, its network in eval mode."""

    payload = load_model_file(path, ARCH)
    cfg = SegmenterConfig.from_dict(payload["config"])
    net = build_unet(cfg)
    net.load_state_dict(payload["state_dict"])
    net = net.to(memory_format=memory_format(cfg.channels_last))
    net.eval()
    history = list(payload.get("history", []))
    parent, mid = str(payload.get("parent", "")), str(payload.get("model_id", ""))
    return TrainedSegmenter(net, cfg, history, parent, mid)


def training_key(train: SliceSet, cfg: SegmenterConfig) -> str:
    """The config and the bytes of the known train slices: one key, one set of weights."""
    known = train.known()
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for a in (known.images, known.masks):
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).data)  # the bytes, without a copy of them
    return digest.hexdigest()[:24]


def train_or_load(
    train: SliceSet,
    cfg: SegmenterConfig,
    cache: str | Path | None = None,
    train_samples: Sequence[str] | None = None,
    role: str = "train",
) -> tuple[TrainedSegmenter, bool]:
    """:func:`train_segmenter`, or the UNet trained before on the same slices and config, from
    ``cache``; with ``train_samples`` (real train samples' content keys) a warm start from the
    line's last UNet when it saw a subset of them (:mod:`medcurate.evaluate.lineage`)."""
    if cache is None:
        return train_segmenter(train, cfg), False
    return lineage.train_or_load(
        cache,
        "segmenter",
        lineage.line_name(ARCH, role, cfg.to_dict()),
        training_key(train, cfg),
        train_samples,
        cfg.epochs,
        load_model,
        lambda init, epochs: train_segmenter(train, cfg, init=init, epochs=epochs),
        save_model,
    )
