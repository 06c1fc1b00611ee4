"""NHWC (channels_last) tensors and weights for the project's small conv nets (classifier, UNet,
GAN): oneDNN's convolutions on this CPU ran 1.2-2.6x faster per layer for the small presets'
32-48 px batches than NCHW. It changes rounding, so the model configs that use it carry a
``channels_last`` flag. (The other CPU cost of deterministic mode, torch's NaN fill of new
tensors, is switched off in :func:`medcurate.torchrun.set_deterministic_kernels`.)
"""

from __future__ import annotations

from typing import Any


def memory_format(channels_last: bool) -> Any:
    import torch

    return torch.channels_last if channels_last else torch.contiguous_format


def is_channels_last(model: Any) -> bool:
    """Whether the model's first 4D weight is stored NHWC (then inputs are made NHWC too)."""
    import torch

    w = next((p for p in model.parameters() if p.ndim == 4), None)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last)
