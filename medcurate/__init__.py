"""medcurate: the domain core (io, ingest, deid, normalize, synth, splits, store, services, cli).

It imports none of the rooms above it (annotation, quality, assets, pipelines) and never dagster:
tests/test_layout.py checks it. Rooms above add CLI commands through the ``medcurate.commands``
entry point group (see :mod:`medcurate.cli`)."""

import os as _os

# One instruction set for torch's CPU kernels (ATen, oneDNN, MKL) on every machine. Left to
# themselves they pick AVX-512 where the CPU has it and AVX2 elsewhere, and the two round
# differently: the same seed then trains different weights (measured: three model tests passed on
# an AVX2 machine and failed on an AVX-512 one). Set before torch is first imported (torch is only
# imported inside functions); a value the caller exported wins.
CPU_ISA_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "MKL_CBWR": "AVX2",
}
# OpenMP threads that wait for work spin only briefly (10,000 spins, libgomp's default 300,000),
# then sleep. Long spinning pays only with cores to spare: two torch processes of two threads on two
# cores (pytest -n 2, a Dagster step beside the webserver) ran 2.68 s spinning vs 1.36-1.48 s; a
# lone 2-thread evaluation took 18.3 s (16.9 s spinning, 29.0 s with OMP_WAIT_POLICY=PASSIVE).
THREAD_ENV = {"GOMP_SPINCOUNT": "10000"}
for _name, _value in {**CPU_ISA_ENV, **THREAD_ENV}.items():
    _os.environ.setdefault(_name, _value)
