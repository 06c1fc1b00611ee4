"""External IOD validation with dicom3tools' ``dciodvfy``: new errors in de-identified outputs.

De-identification must not make an object non-conformant (PACSs and viewers refuse those), so
outputs are checked by a validator written independently of us. dciodvfy prints one
``Error - <message>`` line per violation; messages that quote a value (``values are ...``,
``[...]``) are normalised to their value-free form, which is also what keeps source values out of
what this module returns. The comparison is by multiset: an output error counts as new only
beyond the number of times the source had the same normalised error.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.uid import MediaStorageDirectoryStorage

from medcurate.deid.encode import encode
from medcurate.deid.engine import Deidentifier

DCIODVFY = "dciodvfy"
TIMEOUT_S = 60

_ERROR = re.compile(r"^Error - (.*)$")
_SUBS = (
    # "UI [1] = <05fa...> - Character invalid": the quoted value (to the last " - ") goes
    (re.compile(r"\[\d+\] = <.*> - "), "[] = <> - "),
    (re.compile(r"\[\d+\] = <.*$"), "[] = <>"),  # a value running on to the next line
    (re.compile(r"= '.*?' \((?:0x)?[0-9a-f]*\)"), "= ''"),  # the offending character
    (re.compile(r"\s*-?\s*\bvalues are\s.*$"), " - values"),  # "- values are 0\0\0"
    (re.compile(r'"[^"]*"'), '""'),  # Illegal root for UID - "999.999..."
    (re.compile(r"(UID) \S+$"), r"\1 <>"),  # ... but have IMAGE ReferencedSOPInstanceUID 1.2.3
    (re.compile(r"<(?![A-Za-z][A-Za-z0-9 _]*>)[^<>]*>"), "<>"),  # <1.2.333...>, <0x2>; not names
    (re.compile(r"(?<!Type )\b\d+\b"), "#"),  # counts and lengths, not "Type 1"
    (re.compile(r"\s+"), " "),
)


def available() -> bool:
    """Whether dciodvfy is installed (the Makefile's ``tools`` target installs dicom3tools)."""
    return shutil.which(DCIODVFY) is not None


def normalise(message: str) -> str:
    """An error message without the values it quotes (numbers outside tags and type names)."""
    out = message.strip()
    for pattern, repl in _SUBS:
        out = pattern.sub(repl, out)
    return out.strip()


def parse_errors(text: str) -> Counter[str]:
    """The normalised ``Error -`` messages in dciodvfy's output, with their counts."""
    errors: Counter[str] = Counter()
    for line in text.splitlines():
        m = _ERROR.match(line.strip())
        if m:
            errors[normalise(m.group(1))] += 1
    return errors


def validate(path: Path) -> Counter[str]:
    """dciodvfy's normalised errors for one file (it reports on stderr; the exit status is 0
    whatever it finds, so only a failure to run raises)."""
    proc = subprocess.run(
        [DCIODVFY, str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TIMEOUT_S,
        check=False,
    )
    return parse_errors(proc.stdout + "\n" + proc.stderr)


_DAMAGE = ("read failed", "Seek failed", "Tags out of order", "incorrect value length")


def damaged(errors: Counter[str]) -> bool:
    """Whether dciodvfy could not read the whole file (truncated, garbage): what it reports then
    depends on where it stopped, so a comparison with the output means nothing."""
    return any(d in e for e in errors for d in _DAMAGE)


def new_errors(source: Counter[str], output: Counter[str]) -> Counter[str]:
    """Errors the output has beyond those its source already had."""
    return output - source


@dataclass
class Comparison:
    """dciodvfy's errors on one source and on its de-identified output."""

    source: Counter[str]
    output: Counter[str]
    new: Counter[str] = field(default_factory=Counter)
    damaged: bool = False
    """dciodvfy could not read all of the source (see ``damaged``): ``new`` is not meaningful."""


def compare_file(src: Path, engine: Deidentifier, workdir: Path) -> Comparison | None:
    """De-identify one file with ``engine`` (the headers only, as ``run`` does before writing)
    and validate source and output; None for what the engine does not take (DICOMDIR, not an
    instance, unreadable). The output is written to ``workdir`` under a fixed name."""
    try:
        ds = pydicom.dcmread(src, force=True)
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            return None
        if ds.SOPClassUID == MediaStorageDirectoryStorage:
            return None
        engine.deidentify(ds)
        blob = encode(ds)
    except Exception:  # what run.py quarantines as unreadable or failed: not an output
        return None
    out = workdir / "output.dcm"
    out.write_bytes(blob)
    source, output = validate(src), validate(out)
    return Comparison(source, output, new_errors(source, output), damaged(source))
