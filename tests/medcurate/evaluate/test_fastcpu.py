"""Layouts: NHWC on request, and detected from a model's weights."""

from __future__ import annotations

import torch

from medcurate.evaluate.fastcpu import is_channels_last, memory_format


def test_memory_format_and_detection() -> None:
    conv = torch.nn.Conv2d(2, 4, 3)
    assert not is_channels_last(conv)
    conv = conv.to(memory_format=memory_format(True))  # type: ignore[call-overload]
    assert is_channels_last(conv)
    assert memory_format(False) == torch.contiguous_format
    assert not is_channels_last(torch.nn.Linear(2, 2))
