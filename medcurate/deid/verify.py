"""The independent verifier: searches each output for what the profile says must be gone.

Written separately from the engine on purpose: it imports none of the engine's modules, reads the
standard's table itself and re-derives, from the SOURCE file, every string value the profile
removes or replaces (names, IDs, addresses, dates, times, UIDs, free-text tokens, private values,
file-name tokens). It then searches the output's bytes and relative path for each of them. Shared
with the engine are only data files: the table, the Clean Descriptors vocabulary and the safe
private allow-list (a descriptor word on the vocabulary is allowed to survive by definition).

False alarms are kept down without weakening the search: tokens shorter than 3-4 characters and
bare short numbers are skipped, values the profile keeps (sex, age, kept descriptors, ...) are
allowed where they reappear, and the retained pixel data (byte-identical to the source) is cut out
of the haystack, so chance byte patterns in images cannot raise a hit. Results carry counts and
value kinds only, never the values.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from io import BytesIO
from typing import Any

import pydicom
import pydicom.uid
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

_ALNUM = b"0123456789abcdefghijklmnopqrstuvwxyz"
_UID_CHARS = _ALNUM + b"."
_DIGITS = b"0123456789"
_WORDS = re.compile(r"[a-z0-9]+")
_LETTERS_OR_DIGITS = re.compile(r"[a-z]+|[0-9]+")
_PRINTABLE = re.compile(rb"[\x20-\x7e]{5,}")
_KEPT_META = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020010, 0x00020012, 0x00020013})
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_BULK_MIN = 256
_BINARY_VRS = frozenset(
    {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"}
)


@dataclass
class VerifyResult:
    """Counts only: how many sensitive strings were looked for, how many found, of what kind."""

    checked: int = 0
    hits: int = 0
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def clean(self) -> bool:
        return self.hits == 0

    def describe(self) -> str:
        """PHI-free text: e.g. '2 removed values found in output (PN: 1, DA: 1)'."""
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.kinds.items()))
        return f"{self.hits} removed values found in output ({kinds})"


@cache
def _table() -> dict[str, str]:
    """tag id (8 hex, or the repeating-group ids) -> 'sensitive' | 'keep' | 'clean'."""
    root = resources.files("medcurate") / "data"
    rows = json.loads((root / "ps3.15-annex-e.json").read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for r in rows:
        # Our options: Retain Patient Characteristics, Modified Dates, Clean Descriptors,
        # Retain Safe Private. Patient characteristics marked K are kept; those marked C and the
        # descriptors are cleaned; everything else is removed, emptied, replaced or shifted.
        if r.get("rtnPatCharsOpt") == "K":
            out[r["id"]] = "keep"
        elif r.get("rtnPatCharsOpt") == "C" or r.get("cleanDescOpt") == "C":
            out[r["id"]] = "clean"
        elif r["basicProfile"] in ("D", "X/Z/U*"):
            out[r["id"]] = "sensitive"
        else:
            # for sequences: removed or emptied as a whole
            out[r["id"]] = "sensitive-all"
    return out


@cache
def _vocabulary() -> frozenset[str]:
    text = (resources.files("medcurate") / "data" / "deid-safe-terms.txt").read_text("utf-8")
    words: set[str] = set()
    for line in text.splitlines():
        words.update(w.lower() for w in line.split("#", 1)[0].split())
    return frozenset(words)


@cache
def _safe_private() -> tuple[frozenset[tuple[str, int]], frozenset[str]]:
    text = (resources.files("medcurate") / "data" / "deid-safe-private.json").read_text("utf-8")
    data = json.loads(text)
    pairs = frozenset(
        (e["creator"].strip().lower(), int(e["element"], 16)) for e in data["elements"]
    )
    return pairs, frozenset(data["vrs"])


def _status(tag: int, vr: str) -> str:
    table = _table()
    s = table.get(f"{tag:08x}")
    if s is not None:
        return s
    group, elem = tag >> 16, tag & 0xFFFF
    if 0x5000 <= group <= 0x50FF:
        return table["50xxxxxx"]
    if 0x6000 <= group <= 0x60FF and elem in (0x3000, 0x4000):
        return table[f"60xx{elem:04x}"]
    if vr == "UI":
        kw = keyword_for_tag(tag)
        if kw in ("CodingSchemeUID", "ContextUID", "MappingResourceUID", "ImplementationClassUID"):
            return "keep"
        return "keep" if kw.endswith(("ClassUID", "TransferSyntaxUID")) else "sensitive"
    if vr == "PN" or vr in _DATE_VRS:
        return "sensitive"
    return "keep"


class _Collector:
    def __init__(self) -> None:
        self.tokens: dict[bytes, tuple[str, bytes]] = {}  # token -> (kind, boundary chars)
        self.kept: list[bytes] = []
        self.bulk: list[bytes] = []
        self._seen: set[str] = set()

    def add(self, token: str, kind: str, boundary: bytes = _ALNUM) -> None:
        """A token to look for; ``boundary``: bytes that may not touch a match (b'' = substring)."""
        t = token.strip().lower()
        if not t or t in self._seen:
            return
        self._seen.add(t)
        with contextlib.suppress(UnicodeEncodeError):
            self.tokens.setdefault(t.encode("latin-1"), (kind, boundary))
        if not t.isascii():
            self.tokens.setdefault(t.encode("utf-8"), (kind, boundary))

    def text(self, value: str, kind: str) -> None:
        value = value.strip()
        if len(value) >= 4:
            self.add(value, kind)
        for w in _WORDS.findall(value.lower()):
            if (len(w) >= 4 and not w.isdigit()) or len(w) >= 6:
                self.add(w, kind)

    def sensitive(self, vr: str, values: list[Any]) -> None:
        for v in values:
            if isinstance(v, bytes):
                for run in _PRINTABLE.findall(v):
                    self.text(run.decode("ascii"), "bytes")
                continue
            if isinstance(v, Dataset):
                continue
            s = str(v).strip()
            if not s:
                continue
            if vr == "UI":
                if len(s) >= 8 and not s.startswith("1.2.840.10008."):
                    self.add(s, "UI", _UID_CHARS)
            elif vr == "DA":
                digits = re.sub(r"\D", "", s)
                if len(digits) == 8:
                    self.add(digits, "DA", b"")
            elif vr == "DT":
                digits = re.sub(r"\D", "", s.split("+")[0].split("-")[0])
                if len(digits) >= 8:
                    self.add(digits[:8], "DT", b"")
                if len(digits) >= 12:
                    self.add(digits[:14], "DT", b"")
            elif vr == "TM":
                digits = re.sub(r"[^\d.]", "", s).split(".")[0]
                if len(digits) >= 6 and len(set(digits)) > 1:
                    self.add(digits[:6], "TM", _DIGITS)
            elif vr == "PN":
                for part in re.split(r"[\^=\s,]+", s):
                    if len(part) >= 3:
                        self.add(part, "PN")
            elif vr in ("DS", "IS"):
                digits = re.sub(r"\D", "", s)
                if len(digits) >= 6:
                    self.add(s, "number")
            else:
                self.text(s, vr or "text")

    def clean(self, vr: str, values: list[Any]) -> None:
        vocab = _vocabulary()
        for v in values:
            s = v.decode("latin-1", "replace") if isinstance(v, bytes) else str(v)
            for w in _LETTERS_OR_DIGITS.findall(s.lower()):
                if w not in vocab and ((len(w) >= 4 and not w.isdigit()) or len(w) >= 6):
                    self.add(w, "descriptor")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _raw_vr(tag: int, raw: Any) -> str:
    vr = getattr(raw, "VR", None) or ""
    if vr in ("", "UN"):
        try:
            vr = str(dictionary_VR(tag))
        except KeyError:
            vr = vr or "UN"
    return str(vr).split(" or ")[0]


def _raw_values(vr: str, raw: Any) -> list[Any]:
    """Values without pydicom's conversion: text VRs as str (latin-1, so bytes round-trip)."""
    value = raw.value
    if isinstance(value, bytes):
        if vr in _BINARY_VRS:
            return [value]
        text = value.decode("latin-1")
        return [v.strip(" \x00") for v in text.split("\\")]
    return _as_list(value)


def _kept_bytes(raw: Any) -> bytes:
    value = raw.value
    if isinstance(value, bytes):
        return value
    return " ".join(str(v) for v in _as_list(value)).encode("utf-8", "replace")


def _walk(ds: Dataset, col: _Collector, meta: bool = False) -> None:
    """Classify every element by tag and VR; only sensitive ones are decoded into tokens."""
    creators: dict[tuple[int, int], str] = {}
    safe, safe_vrs = _safe_private()
    d = ds._dict
    for btag in list(d):
        tag = int(btag)
        raw = d[btag]
        group, el = tag >> 16, tag & 0xFFFF
        vr = _raw_vr(tag, raw)
        if vr == "SQ":
            items = ds[tag].value or []
            if meta or group & 1:
                walker = _walk_all_sensitive
            else:
                # Removed or emptied sequences: everything inside must be gone. Others (not
                # listed, or D / X/Z/U*: kept and cleaned inside) are judged item by item.
                walker = _walk_all_sensitive if _status(tag, vr) == "sensitive-all" else _walk
            for item in items:
                walker(item, col)
            continue
        if meta:
            if tag in _KEPT_META:
                col.kept.append(_kept_bytes(raw))
            else:
                col.sensitive(vr, _raw_values(vr, raw))
            continue
        if group & 1:
            if 0x10 <= el <= 0xFF:
                v = raw.value
                text = v.decode("latin-1") if isinstance(v, bytes) else str(v or "")
                creators[(group, el)] = text.strip(" \x00").lower()
                continue
            creator = creators.get((group, el >> 8), "")
            if (creator, el & 0xFF) in safe and vr in safe_vrs:
                col.kept.append(_kept_bytes(raw))
            else:
                col.sensitive(vr, _raw_values(vr, raw))
            continue
        status = _status(tag, vr)
        if status == "keep":
            value = raw.value
            if isinstance(value, bytes) and len(value) >= _BULK_MIN:
                col.bulk.append(value)
            elif value is not None:
                col.kept.append(_kept_bytes(raw))
        elif status == "clean":
            col.clean(vr, _raw_values(vr, raw))
        else:
            col.sensitive(vr, _raw_values(vr, raw))


def _walk_all_sensitive(ds: Dataset, col: _Collector) -> None:
    d = ds._dict
    for tag in list(d):
        raw = d[tag]
        vr = _raw_vr(int(tag), raw)
        if vr == "SQ":
            for item in ds[tag].value or []:
                _walk_all_sensitive(item, col)
        else:
            col.sensitive(vr, _raw_values(vr, raw))


def _name_tokens(name: str, col: _Collector) -> None:
    for w in _WORDS.findall(name.lower()):
        if (len(w) >= 4 and any(c.isalpha() for c in w) and w not in ("dicom", "image")) or (
            len(w) >= 6
        ):
            if w in ("dcm",):
                continue
            col.add(w, "filename")


def _occurs(hay: bytes, token: bytes, boundary: bytes) -> bool:
    start = hay.find(token)
    n = len(token)
    while start != -1:
        if not boundary:
            return True
        before = hay[start - 1] if start > 0 else None
        after = hay[start + n] if start + n < len(hay) else None
        if (before is None or before not in boundary) and (after is None or after not in boundary):
            return True
        start = hay.find(token, start + 1)
    return False


def collect(
    source: bytes, source_name: str = ""
) -> tuple[dict[bytes, tuple[str, bytes]], bytes, list[bytes]]:
    """(sensitive tokens with kind and boundary set, kept text lower-cased, kept bulk values)."""
    ds = pydicom.dcmread(BytesIO(source), force=True)
    col = _Collector()
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _walk(meta, col, meta=True)
    _walk(ds, col)
    if source_name:
        _name_tokens(source_name, col)
    # What the DICOM writer itself puts into every file (file meta) is not from the source.
    writer = f"{pydicom.uid.PYDICOM_IMPLEMENTATION_UID} PYDICOM {pydicom.__version__}"
    col.kept.append(writer.encode())
    kept = b"\n".join(col.kept).lower()
    return col.tokens, kept, col.bulk


def verify(source: bytes, output: bytes, output_path: str, source_name: str = "") -> VerifyResult:
    """Search ``output`` (bytes) and ``output_path`` for every value the profile removes."""
    tokens, kept, bulk = collect(source, source_name)
    hay = output
    for blob in bulk:  # retained bulk data (pixels) is byte-identical: cut it out of the haystack
        i = hay.find(blob)
        if i != -1:
            hay = hay[:i] + hay[i + len(blob) :]
    hay = hay.lower() + b"\n" + output_path.lower().encode("utf-8", "replace")
    vocab = _vocabulary()
    result = VerifyResult()
    for token, (kind, boundary) in tokens.items():
        result.checked += 1
        if token.decode("latin-1") in vocab:
            continue
        if _occurs(hay, token, boundary) and not _occurs(kept, token, boundary):
            result.hits += 1
            result.kinds[kind] += 1
    return result
