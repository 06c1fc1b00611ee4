"""The baseline slice classifier: a small MONAI 2D ResNet that says whether a slice has a lesion.

It is a yardstick for a release, not a product model: small enough to train on one CPU core in
seconds on the tests and in minutes on the demo, and deterministic (seeded weights, seeded
batches, deterministic kernels, fixed threads), so one release and one config give one set of
predictions. Batches are drawn with a numpy generator rather than a DataLoader, whose worker
seeding would be one more thing to get right. Unknown slices (abnormal samples without a mask)
never train it; the positive class is weighted by n_neg / n_pos because lesion slices are rare.

torch and MONAI are imported inside functions: importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcurate.evaluate import lineage
from medcurate.evaluate.cohort import UNKNOWN, SliceSet
from medcurate.evaluate.fastcpu import is_channels_last, memory_format
from medcurate.torchrun import deterministic, load_model_file, save_model_file, untimed

ARCH = "resnet2d-basic-1111"
# Grad-CAM reads this block. The network keeps the stride-1 stem and drops the max-pool
# (no_max_pool=True): with it, a 32 px slice was 4 px after layer3 and 2 px after layer4, too coarse
# to point at a lesion a few pixels wide (measured: no map peak inside a lesion). Without it, a
# 64 px slice is 16 px after layer3 (8 px at 32 px), fine enough to land on a lesion, while layer4
# (8 px, 4 px) is too coarse and layer2 reacted to bright specks more than to lesions.
TARGET_LAYER = "layer3"


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that changes the weights."""

    size: int = 64
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1
    widths: tuple[int, ...] = (8, 16, 32, 64)
    augment: bool = True  # random flips and a small gain jitter, seeded
    #: NHWC (see medcurate.evaluate.fastcpu): ~1.25x faster per step, but its rounding trained
    #: classifiers whose Grad-CAM missed the lesions (share in mask 0.3-0.8x the lesion's area
    #: over seeds 0-2 vs 1.7x NCHW on tests/medcurate/evaluate/test_explain.py's blobs)
    channels_last: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(int(w) for w in d["widths"])
        return cls(**d)


@dataclass
class TrainedClassifier:
    model: Any  # the torch module, in eval mode
    cfg: ClassifierConfig
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch
    parent: str = ""  # the model a warm start began from ("" from scratch)
    model_id: str = ""  # its id in the stage cache ("" when trained without one)


def build_classifier(cfg: ClassifierConfig) -> Any:
    """A MONAI ResNet with one basic block per stage, no max-pool (see :data:`TARGET_LAYER`)
    and one output logit (lesion vs none)."""
    from monai.networks.nets import ResNet

    if len(cfg.widths) != 4:
        raise ValueError("widths must have four entries, one per ResNet stage")
    return ResNet(
        block="basic",
        layers=[1, 1, 1, 1],
        block_inplanes=list(cfg.widths),
        spatial_dims=2,
        n_input_channels=1,
        num_classes=1,
        no_max_pool=True,
    )


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Left-right and up-down flips and a small gain per slice: lesions sit on either side, and
    scanners differ a little in contrast. No offset: it would lift the background off the
    convolutions' zero padding and teach the network edges at the frame (Grad-CAM then lit the
    frame rather than the lesion)."""
    x = x.copy()
    n = len(x)
    lr = rng.random(n) < 0.5
    ud = rng.random(n) < 0.5
    x[lr] = x[lr][..., ::-1, :]
    x[ud] = x[ud][..., :, ::-1]
    gain = rng.uniform(0.9, 1.1, n).astype(np.float32)[:, None, None, None]
    return np.ascontiguousarray(x * gain, dtype=np.float32)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def train_classifier(
    train: SliceSet,
    cfg: ClassifierConfig | None = None,
    validation: SliceSet | None = None,
    init: TrainedClassifier | None = None,
    epochs: int | None = None,
) -> TrainedClassifier:
    """Train a classifier on the known slices of ``train``; with ``validation``, its
    slice-level AUC (known slices) is recorded after each epoch. ``init`` starts from an earlier
    classifier's weights (fresh optimizer), ``epochs`` overrides the config's (a warm start's
    share of them)."""
    import torch

    cfg = cfg or ClassifierConfig()
    # rows of the known slices: batches are gathered from ``train`` itself (no copy of the split)
    rows = np.flatnonzero(train.labels != UNKNOWN)
    if len(rows) == 0:
        raise ValueError("no slices with a known label to train on")
    if train.images.shape[-1] != cfg.size or train.images.shape[-2] != cfg.size:
        raise ValueError(
            f"slices are {train.images.shape[-2]}x{train.images.shape[-1]} px, config says "
            f"{cfg.size}: build the slices with size={cfg.size}"
        )
    y = train.labels[rows].astype(np.float32)
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    pos_weight = n_neg / n_pos if n_pos > 0 and n_neg > 0 else 1.0
    rng = np.random.default_rng(cfg.seed)
    val = validation.known() if validation is not None else None
    history: list[dict[str, float]] = []
    fmt = memory_format(cfg.channels_last)
    with deterministic(cfg.seed, cfg.threads):
        net = build_classifier(cfg)
        if init is not None:
            net.load_state_dict(init.model.state_dict())
        net = net.to(memory_format=fmt)
        opt = torch.optim.AdamW(
            net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True
        )
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight]))
        for _ in range(cfg.epochs if epochs is None else epochs):
            t0 = time.perf_counter()
            net.train()
            order = rng.permutation(len(y))
            total, seen = 0.0, 0
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                if len(idx) < 2:  # batch norm cannot train on a single slice
                    continue
                xb = train.images[rows[idx]]
                if cfg.augment:
                    xb = _augment(xb, rng)
                xt = torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32))
                xt = xt.contiguous(memory_format=fmt)
                yt = torch.from_numpy(y[idx])[:, None]
                opt.zero_grad()
                loss = loss_fn(net(xt), yt)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            row = {"loss": round(total / max(seen, 1), 6)}
            if val is not None and len(val):
                row["val_auc"] = round(_auc(val.labels, _predict(net, val.images, 128)), 6)
            row["seconds"] = round(time.perf_counter() - t0, 3)
            history.append(row)
        net.eval()
    return TrainedClassifier(net, cfg, history, init.model_id if init is not None else "")


def _predict(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    import torch

    model.eval()
    out = []
    fmt = memory_format(is_channels_last(model))
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            xb = xb.float().contiguous(memory_format=fmt)
            out.append(torch.sigmoid(model(xb))[:, 0].numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def predict(model: Any, slices: SliceSet, batch_size: int = 128, threads: int = 1) -> np.ndarray:
    """Lesion probability per slice (sigmoid of the logit), in eval mode without gradients."""
    with deterministic(0, threads):
        return _predict(model, slices.images, batch_size)


def save_model(trained: TrainedClassifier, path: str | Path) -> Path:
    """Weights, config and training history (without times) in one torch file."""
    payload = {
        "config": trained.cfg.to_dict(),
        "history": untimed(trained.history),
        "parent": trained.parent,
        "model_id": trained.model_id,
        "state_dict": trained.model.state_dict(),
    }
    return save_model_file(path, ARCH, payload)


def load_model(path: str | Path) -> TrainedClassifier:
    """The classifier saved by :func:`save_model`, in eval mode."""

    payload = load_model_file(path, ARCH)
    cfg = ClassifierConfig.from_dict(payload["config"])
    net = build_classifier(cfg)
    net.load_state_dict(payload["state_dict"])
    net = net.to(memory_format=memory_format(cfg.channels_last))
    net.eval()
    history = list(payload.get("history", []))
    parent, mid = str(payload.get("parent", "")), str(payload.get("model_id", ""))
    return TrainedClassifier(net, cfg, history, parent, mid)


def training_key(train: SliceSet, cfg: ClassifierConfig, validation: SliceSet | None = None) -> str:
    """What decides a trained classifier and its history: the config and the bytes of the known
    train slices (and of the validation slices whose AUC the history records). Training is
    deterministic, so one key names one set of weights."""
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for part in (train.known(), validation.known() if validation is not None else None):
        arrays = () if part is None else (part.images, part.labels)
        digest.update(b"|")
        for a in arrays:
            digest.update(f"{a.dtype.str}{a.shape}".encode())
            digest.update(np.ascontiguousarray(a).data)  # the bytes, without a copy of them
    return digest.hexdigest()[:24]


def train_or_load(
    train: SliceSet,
    cfg: ClassifierConfig,
    validation: SliceSet | None = None,
    cache: str | Path | None = None,
    train_samples: Sequence[str] | None = None,
    role: str = "train",
) -> tuple[TrainedClassifier, bool]:
    """:func:`train_classifier`, or the classifier an earlier stage trained on the very same
    slices and config, from ``cache`` (a folder; ``None``: always train from scratch). The
    baseline evaluation and the augmentation report's real+synthetic arm of its seed train the
    same classifier; the second reads it.

    With ``train_samples`` (content keys of the real train samples), the classifier is one of a
    line (``role`` and config, see :mod:`medcurate.evaluate.lineage`): when the line's last
    classifier saw a subset of them, this one starts from it for a share of the epochs. Returns
    the classifier and whether it came from the cache."""
    if cache is None:
        return train_classifier(train, cfg, validation=validation), False
    return lineage.train_or_load(
        cache,
        "classifier",
        lineage.line_name(ARCH, role, cfg.to_dict()),
        training_key(train, cfg, validation),
        train_samples,
        cfg.epochs,
        load_model,
        lambda init, epochs: train_classifier(train, cfg, validation, init=init, epochs=epochs),
        save_model,
    )
