"""dciodvfy errors before and after de-identification, over every real test file we have.

Corpus: pydicom's test files (with pydicom-data where installed), deid-data's files and a few
generated studies. For each file the engine de-identifies (headers; as ``run`` does), dciodvfy
runs on the source and on the output; an output error is new when the source did not have it
(normalised, counted per file). Sources dciodvfy cannot read to the end (truncated) are counted
apart. Prints the totals and the new errors by message, never a value.

    .venv/bin/python bench/dciodvfy.py [--patients N] [--no-iod]

``--no-iod`` de-identifies as before issue 15 (every SOP class taken as unknown: compound codes
as their first action, removals and emptied text whatever the IOD), for comparison.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path

from medcurate.deid import engine as engine_module
from medcurate.deid.engine import Deidentifier
from medcurate.deid.validate_iod import available, compare_file
from medcurate.synth import generate_studies

SALT = b"bench-salt-not-a-secret"


def corpus(tmp: Path, patients: int) -> dict[str, list[Path]]:
    """The files by origin, in a fixed order."""
    import deid_data
    from pydicom.data import get_testdata_files

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no network: "download failures" for remote files
        pyd = sorted({Path(p) for p in get_testdata_files("*") if Path(p).is_file()})
    dd_root = Path(os.path.dirname(deid_data.__file__))
    skip = (".py", ".pyc", ".txt", ".md", ".json")
    dd = sorted(p for p in dd_root.rglob("*") if p.is_file() and not p.name.endswith(skip))
    synth = tmp / "synth"
    generate_studies(synth, patients=patients, seed=15)
    gen = sorted(p for p in synth.rglob("*.dcm"))
    return {"pydicom": pyd, "deid-data": dd, "synth": gen}


def _line(name: str, row: Counter[str]) -> None:
    print(
        f"{name:10} {row['files']:6} {row['deid']:6} {row['damaged']:8} {row['src']:8}"
        f" {row['out']:8} {row['new']:6}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2)
    parser.add_argument("--no-iod", action="store_true")
    args = parser.parse_args()
    if not available():
        raise SystemExit("dciodvfy not found: install dicom3tools (make tools)")
    if args.no_iod:
        engine_module.iod_types = lambda _uid: None  # type: ignore[assignment]
    engine = Deidentifier(SALT)
    new_by_message: Counter[str] = Counter()
    print(
        f"{'corpus':10} {'files':>6} {'deid':>6} {'damaged':>8} {'src err':>8} {'out err':>8}"
        f" {'new':>6}"
    )
    totals = Counter[str]()
    with tempfile.TemporaryDirectory() as tmp:
        for origin, files in corpus(Path(tmp), args.patients).items():
            row = Counter[str](files=len(files))
            for f in files:
                c = compare_file(f, engine, Path(tmp))
                if c is None:
                    continue
                row["deid"] += 1
                if c.damaged:  # truncated sources: dciodvfy stops where the damage is
                    row["damaged"] += 1
                    row["damaged_new"] += sum(c.new.values())
                    continue
                row["src"] += sum(c.source.values())
                row["out"] += sum(c.output.values())
                row["new"] += sum(c.new.values())
                row["files_new"] += bool(c.new)
                new_by_message.update(c.new)
            totals.update(row)
            _line(origin, row)
    _line("total", totals)
    print(
        f"files with new errors: {totals['files_new']}; damaged sources (not compared):"
        f" {totals['damaged']}, their output-only errors: {totals['damaged_new']}"
    )
    for message, n in new_by_message.most_common():
        print(f"  new {n:4}  {message}")


if __name__ == "__main__":
    main()
