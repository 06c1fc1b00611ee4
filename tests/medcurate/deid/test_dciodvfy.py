"""External validation: dicom3tools' dciodvfy finds no error in a de-identified output that its
source did not already have, over real test files and generated studies (issue 15)."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import pytest

from medcurate.deid.engine import Deidentifier
from medcurate.deid.validate_iod import available, compare_file
from medcurate.synth import generate_studies

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason="dciodvfy not installed (make tools)"),
]

SALT = b"dciodvfy-test-salt-01"


def _pydicom(half: int) -> list[Path]:
    from pydicom.data import get_testdata_files

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no network: remote files are reported missing
        files = sorted({Path(p) for p in get_testdata_files("*") if Path(p).is_file()})
    return files[half::2]


def _deid_data() -> list[Path]:
    import deid_data

    root = Path(os.path.dirname(deid_data.__file__))
    skip = (".py", ".pyc", ".txt", ".md", ".json")
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(skip))


def _synth(tmp: Path) -> list[Path]:
    """One generated patient; the first and last file of each series (the rest are alike)."""
    generate_studies(tmp / "synth", patients=1, seed=15)
    out = []
    for series in sorted({p.parent for p in (tmp / "synth").rglob("*.dcm")}):
        files = sorted(series.glob("*.dcm"))
        out += [files[0], files[-1]] if len(files) > 1 else files
    return out


@pytest.mark.parametrize("corpus", ["pydicom-0", "pydicom-1", "deid-data", "synth"])
def test_no_new_dciodvfy_errors(corpus: str, tmp_path: Path) -> None:
    if corpus.startswith("pydicom"):
        files = _pydicom(int(corpus[-1]))
    elif corpus == "deid-data":
        files = _deid_data()
    else:
        files = _synth(tmp_path)
    engine = Deidentifier(SALT)
    compared, source_errors = 0, 0
    new: Counter[str] = Counter()
    bad_files = []
    for f in files:
        c = compare_file(f, engine, tmp_path)
        if c is None or c.damaged:
            continue
        compared += 1
        source_errors += sum(c.source.values())
        if c.new:
            bad_files.append(f.name)
            new.update(c.new)
    assert compared >= {"deid-data": 4, "synth": 4}.get(corpus, 50), compared
    assert not new, f"{bad_files}: {dict(new)}"
