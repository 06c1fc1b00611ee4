"""The package pins torch's CPU instruction set before torch loads (see medcurate/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import medcurate


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return False


def _capability(env: dict[str, str]) -> str:
    code = "import medcurate, torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@pytest.mark.skipif(not _has_avx2(), reason="the CPU has no AVX2: torch keeps its own choice")
def test_torch_runs_avx2_kernels_on_every_machine() -> None:
    env = {k: v for k, v in os.environ.items() if k not in medcurate.CPU_ISA_ENV}
    assert _capability(env) == "AVX2"


def test_a_value_the_caller_exported_wins() -> None:
    env = {k: v for k, v in os.environ.items() if k not in medcurate.CPU_ISA_ENV}
    env["ATEN_CPU_CAPABILITY"] = "default"
    assert _capability(env) == "DEFAULT"


def test_openmp_threads_spin_briefly() -> None:
    env = {k: v for k, v in os.environ.items() if k not in medcurate.THREAD_ENV}
    code = "import medcurate, os; print(os.environ['GOMP_SPINCOUNT'])"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == "10000"
