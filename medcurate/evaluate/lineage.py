"""Warm starts of the evaluation's models from one release to the next (the GAN's design).

A new release of a growing dataset adds a few patients; training the classifier, the UNet and each
arm of the augmentation report from scratch on all of them again made the second release cost as
much as the first. Like ``gan_model`` (:func:`medcurate.augment.run._previous`, ``latest.json``),
each model line keeps a record of its last model: the config, the content keys of the real train
samples it saw, its id and its parent. The next training of the same line

- on the very same data (same training key): reuses that model (the rerun of a version);
- when the last model's real train samples are a subset of this train split's (a new batch
  arrived; :mod:`medcurate.splits` never moves a patient out of train): starts from its weights
  for ``ceil(epochs * max(new share of train, MIN_SHARE))`` epochs;
- otherwise (a sample it saw is now in validation or test, or was relabelled, so its content key
  changed; or no record): trains from scratch, so no held-out sample ever reached the weights.

Synthetic train samples are left out of the subset test: each release brings a new generator's
samples, and they derive from the real train split only (the GAN never sees a held-out patient).
The line's name is a hash of the model kind, the role (which train rows) and the whole config, so a
changed config starts a new line. The same history of releases gives the same models.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from medcurate.io import atomic_write_bytes

M = TypeVar("M")

#: a warm start trains at least this share of a from-scratch run's epochs
MIN_SHARE = 0.1


@dataclass(frozen=True)
class Plan:
    """How to get the model for this training: its id, epochs and where to start from."""

    model_id: str
    epochs: int
    parent: str = ""  # model id of the parent ("" from scratch)
    parent_file: Path | None = None
    new_share: float = 1.0  # share of real train samples the parent had not seen


def line_name(kind: str, role: str, config: dict[str, Any]) -> str:
    key = json.dumps([kind, role, config], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def model_id(key: str, parent: str) -> str:
    """A model's id: its training key from scratch, or that key with its parent's id."""
    return key if not parent else hashlib.sha256(f"{key}:{parent}".encode()).hexdigest()[:24]


def _record_path(cache: Path, line: str) -> Path:
    return cache / f"lineage-{line}.json"


def plan(
    cache: str | Path,
    line: str,
    key: str,
    train_samples: Iterable[str],
    epochs: int,
    prefix: str,
) -> Plan:
    """What the line's last model offers a training on ``train_samples`` (real samples' content
    keys) with training key ``key``; model files are ``<prefix>-<model id>.pt`` in ``cache``."""
    scratch = Plan(model_id(key, ""), epochs)
    path = _record_path(Path(cache), line)
    if not path.is_file():
        return scratch
    try:
        rec = json.loads(path.read_text())
        seen = set(rec["train_samples"])
        last_key, last_id = str(rec["key"]), str(rec["model_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return scratch
    last_file = Path(cache) / f"{prefix}-{last_id}.pt"
    if not last_file.is_file():
        return scratch
    if last_key == key:  # this very training ran before: the same model
        return Plan(last_id, epochs, str(rec.get("parent", "")), None, 0.0)
    current = set(train_samples)
    if not current or not seen <= current:
        return scratch
    share = len(current - seen) / len(current)
    warm = max(1, math.ceil(epochs * max(share, MIN_SHARE)))
    return Plan(model_id(key, last_id), warm, last_id, last_file, share)


def record(
    cache: str | Path,
    line: str,
    key: str,
    train_samples: Iterable[str],
    chosen: Plan,
) -> None:
    """The line's last model is now ``chosen`` (trained on ``train_samples``)."""
    rec = {
        "key": key,
        "model_id": chosen.model_id,
        "parent": chosen.parent,
        "train_samples": sorted(set(train_samples)),
    }
    data = (json.dumps(rec, sort_keys=True, indent=2) + "\n").encode()
    atomic_write_bytes(_record_path(Path(cache), line), data)


def train_or_load(
    cache: str | Path,
    prefix: str,
    line: str,
    key: str,
    train_samples: Sequence[str] | None,
    epochs: int,
    load: Callable[[Path], M],
    train: Callable[[M | None, int], M],
    save: Callable[[M, Path], object],
) -> tuple[M, bool]:
    """The model of training ``key`` from ``cache`` (``<prefix>-<model id>.pt``), else
    ``train(init, epochs)``, warm from the line's last model when :func:`plan` allows (with
    ``train_samples``; without them always from scratch); saves it and records the line. The
    classifier's and the UNet's ``train_or_load`` both go through here. Returns the model and
    whether it came from the cache."""
    samples = list(train_samples) if train_samples is not None else None
    if samples is None:
        chosen = Plan(key, epochs)
    else:
        chosen = plan(cache, line, key, samples, epochs, prefix)
    path = Path(cache) / f"{prefix}-{chosen.model_id}.pt"
    if path.is_file():
        try:
            found = load(path)
            if samples is not None:
                record(cache, line, key, samples, chosen)
            return found, True
        except (ValueError, RuntimeError, OSError, KeyError):
            pass  # a damaged or older file: train again and replace it
    init = load(chosen.parent_file) if chosen.parent_file is not None else None
    trained = train(init, chosen.epochs)
    trained.model_id = chosen.model_id  # type: ignore[attr-defined]
    save(trained, path)
    if samples is not None:
        record(cache, line, key, samples, chosen)
    return trained, False
