"""Ingest throughput: files/s for validation alone and for claim + ingest_batch end to end.

Inputs: generated studies (medcurate.synth, when present) and pydicom's bundled test files (a mix
of compressed, odd and broken files). Prints measured figures; asserts nothing about time.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from pydicom.data import get_testdata_files

from medcurate.config import Zones
from medcurate.ingest import claim_inbox, drop_into_inbox, ingest_batch
from medcurate.validate import validate_file


def _pydicom_tree(dst: Path) -> Path:
    for i, f in enumerate(p for p in map(Path, get_testdata_files()) if p.is_file()):
        (dst / f"{i:03d}").mkdir(parents=True)
        shutil.copyfile(f, dst / f"{i:03d}" / f.name)
    return dst


def _synth_tree(dst: Path) -> Path | None:
    try:
        from medcurate.synth import generate_studies
    except ImportError:
        return None
    generate_studies(dst, patients=4, seed=3, truth=dst.parent / "truth")
    return dst


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def bench(name: str, src: Path, work: Path) -> None:
    files = _files(src)
    mb = sum(p.stat().st_size for p in files) / 1e6
    t = time.perf_counter()
    for p in files:
        validate_file(p)
    dt = time.perf_counter() - t
    print(
        f"{name}: validate_file  {len(files):5d} files {mb:7.1f} MB  {dt:6.2f} s  "
        f"{len(files) / dt:7.1f} files/s  {mb / dt:6.1f} MB/s"
    )
    z = Zones(work / f"home-{name}").ensure()
    drop_into_inbox(src, z)
    t = time.perf_counter()
    batch = claim_inbox(z)
    assert batch
    res = ingest_batch(batch, z)
    dt = time.perf_counter() - t
    print(
        f"{name}: claim+ingest   {res.received:5d} files {mb:7.1f} MB  {dt:6.2f} s  "
        f"{res.received / dt:7.1f} files/s  ({res.summary_line()})"
    )
    t = time.perf_counter()
    ingest_batch(batch, z)
    dt = time.perf_counter() - t
    print(f"{name}: re-run (idempotent) {dt:6.2f} s")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synth = _synth_tree(work / "synth" / "studies")
        if synth is not None:
            bench("synth", synth, work)
        else:
            print("synth: medcurate.synth not available, skipped")
        bench("pydicom", _pydicom_tree(work / "pydicom"), work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
