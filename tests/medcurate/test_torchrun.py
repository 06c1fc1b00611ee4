"""The deterministic torch block: flags set inside, restored after, and no compiler loaded."""

from __future__ import annotations

import subprocess
import sys

import torch

from medcurate.torchrun import deterministic


def test_block_sets_and_restores_flags_threads_and_random_state() -> None:
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    state = torch.random.get_rng_state()
    with deterministic(seed=3, threads=1):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.get_num_threads() == 1
        a = torch.rand(4)
    with deterministic(seed=3, threads=1):
        assert torch.equal(torch.rand(4), a)  # same seed, same draws
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before
    assert torch.equal(torch.random.get_rng_state(), state)


def test_block_does_not_import_the_compiler() -> None:
    code = (
        "import sys, torch\n"
        "from medcurate.torchrun import deterministic\n"
        "with deterministic(0, 1):\n"
        "    torch.ones(2).sum()\n"
        "print('torch._inductor' in sys.modules, 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"]


def test_nan_fill_is_off_inside_the_block_and_back_after() -> None:
    import torch.utils.deterministic as td

    assert td.fill_uninitialized_memory is True  # type: ignore[attr-defined]
    with deterministic(0, 1):
        assert td.fill_uninitialized_memory is False  # type: ignore[attr-defined]
    assert td.fill_uninitialized_memory is True  # type: ignore[attr-defined]
