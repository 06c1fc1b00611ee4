"""What every model the project trains shares: a deterministic torch block and one file format.

Models (the evaluation's classifier and UNet, the augmentation GAN and encoder) train on CPU in
tests and the demo, where the same inputs, config and seed must give the same weights and the
same file bytes; wall-clock times therefore never enter a saved file.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medcurate.io import atomic_write_bytes


@contextmanager
def deterministic(seed: int, threads: int, device: str = "cpu") -> Iterator[None]:
    """Seed torch, force deterministic kernels and a thread count for the block; the caller's
    flags, thread count and global random state come back afterwards.

    Off the CPU the deterministic flag only warns (cuBLAS needs CUBLAS_WORKSPACE_CONFIG set before
    start-up for strict mode), so bitwise reproducibility is promised on CPU only.
    """
    import torch

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    old_threads = torch.get_num_threads()
    dev = torch.device(device)
    forked = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        set_deterministic_kernels(True, warn_only=dev.type != "cpu")
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            set_deterministic_kernels(was_deterministic, warn_only=was_warn_only)
            torch.set_num_threads(old_threads)


def set_deterministic_kernels(mode: bool, warn_only: bool) -> None:
    """torch's deterministic-kernels flag alone. ``torch.use_deterministic_algorithms`` also sets
    inductor's flag, which imports torch._inductor and torch._dynamo: 2-10 s once per process
    (each Dagster step, each test worker) for a compiler nothing here uses.

    With the flag on, torch also fills every new tensor with NaN to expose reads of uninitialized
    memory: ~450 fills per GAN iteration, 8% of its time. Every kernel our models run writes its
    outputs in full, so the fill is off while the flag is on (results are the same bytes)."""
    import torch
    import torch.utils.deterministic as td

    torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)
    td.fill_uninitialized_memory = not mode  # type: ignore[attr-defined]


def untimed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """A training history without its wall-clock entries (``seconds...``)."""
    return [{k: v for k, v in h.items() if not k.startswith("seconds")} for h in history]


def save_model_file(path: str | Path, arch: str, payload: Mapping[str, Any]) -> Path:
    """One torch file: ``arch`` (what may load it) and plain-typed ``payload`` (config, history,
    state dicts), so it loads with ``weights_only=True``; written atomically."""
    import torch

    buf = io.BytesIO()
    torch.save({"arch": arch, **payload}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_model_file(path: str | Path, arch: str) -> dict[str, Any]:
    """The payload of a file :func:`save_model_file` wrote for ``arch``; ValueError otherwise."""
    import torch

    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("arch") != arch:
        raise ValueError(f"not a {arch} model file: save it with medcurate's save_model")
    return payload
