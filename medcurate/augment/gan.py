"""A small class-conditional GAN for 2D patches or slices, as plain functions on numpy arrays.

The networks are MONAI's `Generator` and `Discriminator`, conditioned from outside so that MONAI's
own layers stay untouched:

- the generator's latent vector is noise concatenated with a learned class embedding;
- the discriminator is built with `last_act=None`; its convolutional trunk (`.net`) gives features,
  its linear head (`.final`) the unconditional logit, and a projection term
  <embed(y), sum-pooled features> adds the class (Miyato & Koyama 2018, cGANs with projection
  discriminator; the paper finds it beats feeding labels as extra input channels).

Spectral norm goes on every conv, linear and embedding layer of the discriminator. The generator
ends in a sigmoid, so samples lie in [0, 1] like the normalized inputs. Training is deterministic
on CPU for a seed: weights, noise and batch order all come from the config's seed, under
`torch.use_deterministic_algorithms(True)` and a fixed thread count, both restored afterwards.
Short CPU runs (~100 iterations) still depend on the seed: judge a GAN across seeds.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.nets import Discriminator, Generator
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from medcurate.evaluate.fastcpu import memory_format
from medcurate.torchrun import deterministic

LOSSES = ("hinge", "wgan-gp")


@dataclass(frozen=True)
class GanConfig:
    """Everything that decides a trained GAN; its hash names checkpoints.

    `g_widths[0]` is the generator's start channels at side `size / 2**(len(g_widths) - 1)`; each
    further width is one 2x upsampling. `d_widths` are the discriminator's strided (2x down) convs.
    """

    size: int = 32
    channels: int = 1  # 2: an image and its lesion mask, generated together
    latent: int = 64
    classes: int = 2
    epochs: int = 30
    batch_size: int = 32
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)
    loss: str = "hinge"
    spectral_norm: bool = True
    seed: int = 0
    threads: int = 1
    g_widths: tuple[int, ...] = (64, 32, 16)
    d_widths: tuple[int, ...] = (16, 32, 64)
    embed_dim: int = 16
    d_steps: int = 1
    gp_weight: float = 10.0
    #: > 0: stop after this many iterations (generator updates) even within an epoch; sizes a
    #: run to a time budget rather than to the data (an epoch grows with the train split)
    max_steps: int = 0
    #: NHWC tensors and weights (see :mod:`medcurate.evaluate.fastcpu`): 40 vs 53 ms per
    #: iteration of the small preset on one core
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        ups = len(self.g_widths) - 1
        if ups < 1 or self.size % 2**ups:
            raise ValueError(
                f"size {self.size} must be divisible by 2**{ups} (one 2x upsampling per g_width "
                "after the first); change size or g_widths"
            )
        if self.classes < 1 or self.latent < 1 or self.batch_size < 2 or self.epochs < 1:
            raise ValueError("classes, latent and epochs must be >= 1 and batch_size >= 2")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 (0: no cap), got {self.max_steps}")

    def total_steps(self, n: int) -> int:
        """Iterations a run on ``n`` images makes: whole batches per epoch times epochs, capped
        by ``max_steps``."""
        full = (n // self.batch_size) * self.epochs
        return min(full, self.max_steps) if self.max_steps else full

    @classmethod
    def small(cls, **overrides: Any) -> GanConfig:
        """For tests and a 2-core CPU: 32 px, narrow networks, ~1 s per epoch on ~500 patches.

        lr_g is 5x lr_d: with equal rates the spectrally normed discriminator won early for 2 of 3
        seeds at ~100 iterations (grey backgrounds, no conditioning); a faster generator fixed it
        for 4 of 5 seeds on the disc data of the tests.
        """
        base: dict[str, Any] = dict(
            size=32, epochs=20, lr_g=1e-3, g_widths=(64, 32, 16), d_widths=(16, 32, 64)
        )
        return cls(**{**base, **overrides})

    @classmethod
    def full(cls, **overrides: Any) -> GanConfig:
        """For a GPU: 64 px, wider networks, more epochs."""
        base: dict[str, Any] = dict(
            size=64,
            latent=128,
            epochs=300,
            batch_size=64,
            g_widths=(256, 128, 64, 32),
            d_widths=(32, 64, 128, 256),
            embed_dim=32,
            threads=4,
        )
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (tuples become lists), so it survives JSON and weights_only loads."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GanConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("betas", "g_widths", "d_widths"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)

    def config_hash(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class ConditionalGenerator(nn.Module):
    """MONAI Generator fed [noise, embed(label)]; sigmoid output in [0, 1]."""

    def __init__(self, cfg: GanConfig) -> None:
        super().__init__()
        ups = len(cfg.g_widths) - 1
        side = cfg.size // 2**ups
        self.embed = nn.Embedding(cfg.classes, cfg.embed_dim)
        self.net = Generator(
            latent_shape=(cfg.latent + cfg.embed_dim,),
            start_shape=(cfg.g_widths[0], side, side),
            channels=(*cfg.g_widths[1:], cfg.channels),
            strides=(2,) * ups + (1,),
            num_res_units=0,
            act=("leakyrelu", {"negative_slope": 0.2}),
            norm="BATCH",
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(torch.cat([z, self.embed(y)], dim=1)))


class ProjectionDiscriminator(nn.Module):
    """MONAI Discriminator trunk + linear head, plus the class projection term."""

    def __init__(self, cfg: GanConfig) -> None:
        super().__init__()
        self.net = Discriminator(
            in_shape=(cfg.channels, cfg.size, cfg.size),
            channels=cfg.d_widths,
            strides=(2,) * len(cfg.d_widths),
            num_res_units=0,
            act=("leakyrelu", {"negative_slope": 0.2}),
            norm=None,
            dropout=None,
            last_act=None,
        )
        self.embed = nn.Embedding(cfg.classes, cfg.d_widths[-1])
        if cfg.spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, nn.Conv2d | nn.Linear | nn.Embedding):
                    spectral_norm(module)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Inputs in [0, 1] are centred so the first conv sees zero-mean data.
        feats = self.net.net(x * 2.0 - 1.0)
        logit = self.net.final(feats).view(-1)
        pooled = nn.functional.leaky_relu(feats, 0.2).sum(dim=(2, 3))
        return logit + (self.embed(y) * pooled).sum(dim=1)


@dataclass
class TrainedGan:
    """Both networks (eval mode), the config, per-epoch history and what data it saw."""

    generator: ConditionalGenerator
    discriminator: ProjectionDiscriminator
    cfg: GanConfig
    history: list[dict[str, float]] = field(default_factory=list)
    n_train: int = 0
    data_fingerprint: str = ""
    parent: str = ""  # checkpoint id this run started from ("" when from scratch)

    def checkpoint_id(self) -> str:
        return checkpoint_id(self.cfg, self.data_fingerprint, self.parent)


def data_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 over dtype, shape and bytes of both arrays: names the training data a GAN saw."""
    digest = hashlib.sha256()
    for arr in (np.ascontiguousarray(images), np.ascontiguousarray(labels)):
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def checkpoint_id(cfg: GanConfig, fingerprint: str, parent: str = "") -> str:
    """Deterministic id of (config, training data, seed and the checkpoint a warm start began
    from), not of the checkpoint's bytes."""
    key = f"{cfg.config_hash()}:{fingerprint}:{cfg.seed}" + (f":{parent}" if parent else "")
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _check_inputs(images: np.ndarray, labels: np.ndarray, cfg: GanConfig) -> None:
    if images.ndim != 4 or images.shape[1:] != (cfg.channels, cfg.size, cfg.size):
        raise ValueError(
            f"images must have shape (N, {cfg.channels}, {cfg.size}, {cfg.size}), got "
            f"{images.shape}; "
            "resize patches to cfg.size first"
        )
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
    if images.shape[0] < cfg.batch_size:
        raise ValueError(f"need at least batch_size={cfg.batch_size} images, got {images.shape[0]}")
    if not np.isfinite(images).all() or images.min() < 0.0 or images.max() > 1.0:
        raise ValueError("images must be finite and in [0, 1]; normalize them first")
    if labels.min() < 0 or labels.max() >= cfg.classes:
        raise ValueError(f"labels must be integers in [0, {cfg.classes}), got {np.unique(labels)}")


def _gradient_penalty(
    disc: ProjectionDiscriminator, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(mixed, y).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def build_networks(cfg: GanConfig) -> tuple[ConditionalGenerator, ProjectionDiscriminator]:
    return ConditionalGenerator(cfg), ProjectionDiscriminator(cfg)


def train_gan(
    images: np.ndarray,
    labels: np.ndarray,
    cfg: GanConfig,
    device: str = "cpu",
    init: TrainedGan | None = None,
) -> TrainedGan:
    """Train on (N, 1, S, S) float images in [0, 1] with integer class labels.

    Hinge loss (or WGAN-GP), Adam, `d_steps` discriminator updates per generator update. The last
    partial batch of an epoch is dropped so every step sees `batch_size` images; `max_steps` ends
    the run early. `device` (e.g. "cuda") is not part of the config: it changes speed, not what is
    trained; the networks stay on it, and checkpoints are saved on CPU.

    `init` warm-starts both networks from an earlier run of the same architecture (fresh Adam
    state); its checkpoint id becomes the new run's parent and enters its id, so the same parent,
    data and config give the same weights.
    """
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64)
    _check_inputs(images, labels, cfg)
    rng = np.random.default_rng(cfg.seed)
    fmt = memory_format(cfg.channels_last)
    x_all = torch.from_numpy(images).to(device).contiguous(memory_format=fmt)
    y_all = torch.from_numpy(labels).to(device)
    n = images.shape[0]
    steps = n // cfg.batch_size
    budget = cfg.total_steps(n)
    history: list[dict[str, float]] = []
    with deterministic(cfg.seed, cfg.threads, device):
        gen, disc = build_networks(cfg)
        if init is not None:
            if _arch(init.cfg) != _arch(cfg):
                raise ValueError("a warm start needs a generator of the same architecture")
            gen.load_state_dict(init.generator.state_dict())
            disc.load_state_dict(init.discriminator.state_dict())
        gen = gen.to(device, memory_format=fmt)  # type: ignore[call-overload]
        disc = disc.to(device, memory_format=fmt)  # type: ignore[call-overload]
        # foreach: one multi-tensor update per step instead of a Python loop over parameters
        opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=cfg.betas, foreach=True)
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=cfg.betas, foreach=True)
        gen.train()
        disc.train()
        done = 0
        for epoch in range(cfg.epochs):
            if done >= budget:
                break
            start = time.perf_counter()
            order = torch.from_numpy(rng.permutation(n)).to(device)
            d_sum = g_sum = 0.0
            ran = min(steps, budget - done)
            for step in range(ran):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                real, y = x_all[idx], y_all[idx]
                for _ in range(cfg.d_steps):
                    z = torch.randn(cfg.batch_size, cfg.latent, device=device)
                    with torch.no_grad():
                        fake = gen(z, y)
                    d_real, d_fake = disc(real, y), disc(fake, y)
                    if cfg.loss == "hinge":
                        d_loss = torch.relu(1 - d_real).mean() + torch.relu(1 + d_fake).mean()
                    else:
                        d_loss = d_fake.mean() - d_real.mean()
                        d_loss = d_loss + cfg.gp_weight * _gradient_penalty(disc, real, fake, y)
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
                z = torch.randn(cfg.batch_size, cfg.latent, device=device)
                y_fake = torch.randint(0, cfg.classes, (cfg.batch_size,), device=device)
                g_loss = -disc(gen(z, y_fake), y_fake).mean()
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                d_sum += d_loss.item()
                g_sum += g_loss.item()
            done += ran
            seconds = time.perf_counter() - start
            history.append(
                {
                    "epoch": float(epoch),
                    "d_loss": d_sum / ran,
                    "g_loss": g_sum / ran,
                    "seconds": seconds,
                    "seconds_per_iteration": seconds / ran,
                }
            )
    gen.eval()
    disc.eval()
    parent = init.checkpoint_id() if init is not None else ""
    return TrainedGan(gen, disc, cfg, history, n, data_fingerprint(images, labels), parent)


def _arch(cfg: GanConfig) -> tuple[Any, ...]:
    return (cfg.size, cfg.channels, cfg.latent, cfg.classes, cfg.g_widths, cfg.d_widths,
            cfg.embed_dim, cfg.spectral_norm)  # fmt: skip


def generate(trained: TrainedGan, n: int, label: int, seed: int) -> np.ndarray:
    """n samples of class `label`, (n, C, S, S) float32 in [0, 1]; same seed -> same samples.

    Noise comes from a private CPU torch.Generator, so the global RNG is left as it was and a
    seed draws the same noise whichever device the generator sits on.
    """
    if not 0 <= label < trained.cfg.classes:
        raise ValueError(f"label must be in [0, {trained.cfg.classes}), got {label}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    device = next(trained.generator.parameters()).device
    noise_rng = torch.Generator().manual_seed(seed)
    z = torch.randn(n, trained.cfg.latent, generator=noise_rng).to(device)
    y = torch.full((n,), label, dtype=torch.int64, device=device)
    was_training = trained.generator.training
    trained.generator.eval()
    side = trained.cfg.size
    with deterministic(seed, trained.cfg.threads, str(device)), torch.no_grad():
        out = trained.generator(z, y) if n else torch.empty(0, 1, side, side)
    trained.generator.train(was_training)
    return out.cpu().numpy().astype(np.float32).clip(0.0, 1.0)


def save_checkpoint(trained: TrainedGan, path: str | Path, extra: dict[str, Any]) -> str:
    """One torch file with both networks, config, history and `extra`; returns the checkpoint id.

    `extra` must be JSON-like (dict, list, str, int, float, bool, None) so the file loads with
    `weights_only=True`.
    """
    try:
        extra_plain = json.loads(json.dumps(extra))
    except (TypeError, ValueError) as err:
        raise ValueError(f"extra must hold plain JSON types only: {err}") from err
    ckpt_id = trained.checkpoint_id()
    payload = {
        "format": "medcurate-gan/1",
        "checkpoint_id": ckpt_id,
        "cfg": trained.cfg.to_dict(),
        "generator": {k: v.cpu() for k, v in trained.generator.state_dict().items()},
        "discriminator": {k: v.cpu() for k, v in trained.discriminator.state_dict().items()},
        # without wall-clock times: the same data, config and seed give the same bytes
        "history": [
            {k: v for k, v in h.items() if not k.startswith("seconds")} for h in trained.history
        ],
        "n_train": int(trained.n_train),
        "data_fingerprint": trained.data_fingerprint,
        "parent": trained.parent,
        "extra": extra_plain,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return ckpt_id


def load_checkpoint(path: str | Path) -> tuple[TrainedGan, dict[str, Any]]:
    """Rebuild a TrainedGan (in eval mode) and the `extra` dict from `save_checkpoint`'s file."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != "medcurate-gan/1":
        raise ValueError(
            "not a medcurate GAN checkpoint (format medcurate-gan/1); retrain or re-save"
        )
    cfg = GanConfig.from_dict(payload["cfg"])
    gen, disc = build_networks(cfg)
    gen.load_state_dict(payload["generator"])
    disc.load_state_dict(payload["discriminator"])
    # the layout it trained in: the same weights give the same samples, bit for bit
    fmt = memory_format(cfg.channels_last)
    gen = gen.to(memory_format=fmt)  # type: ignore[call-overload]
    disc = disc.to(memory_format=fmt)  # type: ignore[call-overload]
    gen.eval()
    disc.eval()
    trained = TrainedGan(
        gen,
        disc,
        cfg,
        list(payload["history"]),
        int(payload["n_train"]),
        str(payload["data_fingerprint"]),
        str(payload.get("parent", "")),
    )
    return trained, dict(payload["extra"])
