"""De-identification throughput: medcurate vs dicognito alone vs plain pydicom read+write.

Same files for all three, in one run; then medcurate with 2 workers. medcurate's figure includes
everything a production run does: the keyed table-driven de-identification, the independent
verifier (which parses the source a second time and searches the output), the manifest and the
crosswalk. Goals (issue 3): >= 1.5x dicognito alone, >= 0.5x plain read+write.

    .venv/bin/python bench/deid.py [--patients N]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import pydicom
from dicognito.anonymizer import Anonymizer

from medcurate.deid import deidentify_files
from medcurate.io import sha256_file
from medcurate.synth import generate_studies

SALT = b"bench-salt-not-a-secret"


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def plain(files: list[Path], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.save_as(out / f"{i}.dcm", enforce_file_format=True)
    return time.perf_counter() - t


def dicognito_alone(files: list[Path], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    anon = Anonymizer(seed="bench")
    t = time.perf_counter()
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        anon.anonymize(ds)
        ds.save_as(out / f"{i}.dcm", enforce_file_format=True)
    return time.perf_counter() - t


_OUTCOMES: dict[int, str] = {}


_BUSY: dict[int, float] = {}


def medcurate(files: list[Path], out: Path, workers: int) -> float:
    c0 = os.times()
    t = time.perf_counter()
    res = deidentify_files(files, out / "dst", out / "restricted", SALT, workers=workers)
    elapsed = time.perf_counter() - t
    c1 = os.times()
    cpu = sum(getattr(c1, k) - getattr(c0, k) for k in ("user", "system"))
    cpu += sum(getattr(c1, k) - getattr(c0, k) for k in ("children_user", "children_system"))
    _BUSY[workers] = cpu / elapsed
    assert res.received == res.written + res.quarantined_total
    _OUTCOMES[workers] = (
        f"{res.written} written, {res.quarantined_total} quarantined, "
        f"{res.verifier_hit_files} verifier hits, {res.verifier_tokens} tokens checked, "
        f"manifest sha256 {sha256_file(out / 'dst' / 'deid.parquet')[:12]}"
    )
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="best of N for each measurement")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="bench-deid-"))
    try:
        studies = tmp / "studies"
        generate_studies(studies, patients=args.patients, seed=3, truth=tmp / "truth")
        files = sorted(p for p in studies.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in files) / len(files) / 1024
        for f in files:  # warm the page cache
            f.read_bytes()

        def best(fn, *a) -> float:  # type: ignore[no-untyped-def]
            times = []
            for r in range(args.repeat):
                out = tmp / f"out-{fn.__name__}-{r}-{a[-1] if a else ''}"
                times.append(fn(files, out, *a))
                shutil.rmtree(out, ignore_errors=True)
            return min(times)

        load_before = os.getloadavg()
        t_plain = best(plain)
        t_dicognito = best(dicognito_alone)
        t_med = best(medcurate, 1)
        t_med2 = best(medcurate, 2)
        n = len(files)
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"python {platform.python_version()}, pydicom {pydicom.__version__}"
        )
        print(f"files: {n} generated CT/MR/CR instances, mean {size:.0f} KiB")
        print(f"plain pydicom read+write : {_rate(n, t_plain):8.1f} files/s")
        print(f"dicognito alone          : {_rate(n, t_dicognito):8.1f} files/s")
        print(f"medcurate (1 worker)     : {_rate(n, t_med):8.1f} files/s  (incl. verifier)")
        print(f"medcurate (2 workers)    : {_rate(n, t_med2):8.1f} files/s")
        print(f"medcurate / dicognito    : {t_dicognito / t_med:8.2f}x  (goal >= 1.5)")
        print(f"medcurate / plain        : {t_plain / t_med:8.2f}x  (goal >= 0.5)")
        print(f"2-worker speed-up        : {t_med / t_med2:8.2f}x")
        print(
            "cores kept busy          : "
            + ", ".join(f"{_BUSY[w]:.2f} with {w} worker(s)" for w in sorted(_BUSY))
            + " (CPU seconds / wall seconds, last repeat)"
        )
        for w, outcome in sorted(_OUTCOMES.items()):
            print(f"medcurate {w} worker(s)   : {outcome}")
        print(
            "load average (1 min)     : "
            f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after "
            "(other processes compete for the 2 cores when this is above ~0.5)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
