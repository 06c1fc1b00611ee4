"""Ingest throughput: files/s for validation alone and for claim + run_ingest end to end.

Inputs: generated studies (medcurate.synth, when present) and pydicom's bundled test files (a mix
of compressed, odd and broken files). Then hostile files (issue 9, row 6): zero-filled 10 and
20 MB ``.dcm`` files and a sequence nested 1,000 deep, each timed alone (validation, and a whole
claim + ingest of a batch holding only it). Prints measured figures; asserts nothing about time.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from pydicom.data import get_testdata_file, get_testdata_files

from medcurate.config import Zones
from medcurate.ingest import claim_inbox, drop_into_inbox, run_ingest, validation_workers
from medcurate.synth import generate_studies
from medcurate.validate import validate_file


def _pydicom_tree(dst: Path) -> Path:
    for i, f in enumerate(p for p in map(Path, get_testdata_files()) if p.is_file()):
        (dst / f"{i:03d}").mkdir(parents=True)
        shutil.copyfile(f, dst / f"{i:03d}" / f.name)
    return dst


def _synth_tree(dst: Path) -> Path:
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
    for workers in (1, 0):  # 0: the stage's default (validation in forked workers, one per CPU)
        z = Zones(work / f"home-{name}-{workers}").ensure()
        drop_into_inbox(src, z)
        t = time.perf_counter()
        batch = claim_inbox(z)
        assert batch
        res = run_ingest(z, batch, workers=workers)
        dt = time.perf_counter() - t
        label = "1 process" if workers == 1 else f"{validation_workers(res.received)} workers"
        print(
            f"{name}: claim+ingest ({label})  {res.received:5d} files {mb:7.1f} MB  {dt:6.2f} s  "
            f"{res.received / dt:7.1f} files/s  ({res.summary_line()})"
        )
    assert batch
    t = time.perf_counter()
    run_ingest(z, batch)
    dt = time.perf_counter() - t
    print(f"{name}: re-run (idempotent) {dt:6.2f} s")


def _nested(dst: Path, depth: int) -> Path:
    """CT_small with a (5200,9229) sequence nested ``depth`` deep (built as bytes)."""
    ct = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    at = ct.index(b"\xe0\x7f\x10\x00OW")
    sq, item = b"\x00\x52\x29\x92SQ\x00\x00\xff\xff\xff\xff", b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    ends = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    dst.write_bytes(ct[:at] + (sq + item) * depth + ends * depth + ct[at:])
    return dst


def hostile(work: Path) -> None:
    """Row 6 of issue 9: how long each hostile file takes to be refused."""
    root = work / "hostile"
    root.mkdir()
    files = {
        "zero 10 MB": root / "zero10.dcm",
        "zero 20 MB": root / "zero20.dcm",
        "nested 1000": _nested(root / "deep.dcm", 1000),
    }
    files["zero 10 MB"].write_bytes(b"\0" * (10 << 20))
    files["zero 20 MB"].write_bytes(b"\0" * (20 << 20))
    for name, path in files.items():
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            v = validate_file(path)
            best = min(best, time.perf_counter() - t)
        code = v.reason.code if v.reason else "ok"
        z = Zones(work / f"home-{path.stem}").ensure()
        shutil.copyfile(path, z.inbox / path.name)
        t = time.perf_counter()
        batch = claim_inbox(z)
        assert batch
        res = run_ingest(z, batch)
        dt = time.perf_counter() - t
        print(
            f"hostile: {name:12s} validate_file {best * 1000:7.2f} ms ({code}); "
            f"claim+ingest {dt * 1000:7.1f} ms (hashing included; {res.reasons})"
        )


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bench("synth", _synth_tree(work / "synth" / "studies"), work)
        bench("pydicom", _pydicom_tree(work / "pydicom"), work)
        hostile(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
