"""How long the study generator takes, and how much it writes (prints measured figures)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from medcurate.synth import generate_studies
from medcurate.synth.plan import plan_cohort


def main() -> None:
    t = time.perf_counter()
    cohort = plan_cohort(200, seed=0)
    print(f"plan 200 patients: {time.perf_counter() - t:.2f} s, {len(cohort.studies)} studies")
    for n in (6, 12):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            s = generate_studies(Path(tmp) / "out", patients=n, seed=0, truth=Path(tmp) / "truth")
            dt = time.perf_counter() - t
            size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
            print(f"{n} patients: {dt:.2f} s, {s.files / dt:.0f} files/s, {size / 1e6:.1f} MB")
            print(f"  {s}")


if __name__ == "__main__":
    main()
