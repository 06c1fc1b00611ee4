"""The independent verifier: searches each output for what the profile says must be gone.

Written separately from the engine on purpose: it imports none of the engine's modules, reads the
standard's table itself and re-derives, from the SOURCE file, every string value the profile
removes or replaces (names, IDs, addresses, dates, times, UIDs, free-text tokens, private values,
file-name tokens). It then searches the output's bytes and relative path for each of them. The
patient's own identifiers (names and their parts, patient and other IDs, issuer, accession number,
birth date in its written forms) are searched for everywhere, whatever element they came from and
whatever the output keeps: an MRN planted in a kept attribute is a hit. Shared
with the engine are only data files: the table, the Clean Descriptors vocabulary, the safe
private allow-list (a descriptor word on the vocabulary is allowed to survive by definition) and
the PS3.3 types (``iod-types.json``): a sequence whose compound code gives D because its IOD makes
it Type 1/1C is kept and cleaned by the engine, so its items are judged one by one, as for a D
sequence. Emptied or dummy values (Z and D where the IOD needs them) hold no source value: no hit.

False alarms are kept down without weakening the search: tokens shorter than 3-4 characters and
bare short numbers are skipped, values the profile keeps (sex, age, kept descriptors, ...) are
allowed where they reappear, and the retained pixel data (byte-identical to the source) is cut out
of the haystack, so chance byte patterns in images cannot raise a hit. Results carry counts and
value kinds only, never the values.

The source is read by a small reader of its own, straight from the bytes, for the two
uncompressed little-endian encodings (most files); it hands every file it is not certain to read
exactly as pydicom does (other transfer syntaxes, encoding switches, UN sequences, undefined
lengths outside sequences, truncation) to ``pydicom.dcmread``. Values stay undecoded, except that
non-ASCII text is also decoded in the source's Specific Character Set, so that a UTF-8 MÜLLER is
looked for as itself.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from io import BytesIO
from typing import Any

import pydicom
import pydicom.uid
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

_ALNUM = b"0123456789abcdefghijklmnopqrstuvwxyz"
_UID_CHARS = _ALNUM + b"."
_DIGITS = b"0123456789"
_WORDS = re.compile(r"[a-z0-9]+")
_LETTERS_OR_DIGITS = re.compile(r"[a-z]+|[0-9]+")
_PRINTABLE = re.compile(rb"[\x20-\x7e]{5,}")
_KEPT_META = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020010, 0x00020012, 0x00020013})
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_BULK_MIN = 256
_IDENTITY_NAMES = frozenset({0x00100010, 0x00101001, 0x00101005, 0x00101060})
_IDENTITY_IDS = frozenset({0x00100020, 0x00100021, 0x00101000, 0x00080050, 0x00102000})
_BIRTH_DATE = 0x00100030
_OTHER_IDS = 0x00101002
_IDENTITY_TAGS = _IDENTITY_NAMES | _IDENTITY_IDS | {_BIRTH_DATE}
_WHOLE_OUTPUT_MIN = 8  # identifiers this long are searched in retained bulk data (pixels) too
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


_STATUS: dict[tuple[int, str], str] = {}


def _status(tag: int, vr: str) -> str:
    hit = _STATUS.get((tag, vr))
    if hit is None:
        hit = _STATUS[(tag, vr)] = _status_uncached(tag, vr)
    return hit


def _status_uncached(tag: int, vr: str) -> str:
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
        self.identity: dict[bytes, tuple[str, bytes]] = {}  # the patient's own identifiers
        self.kept: list[bytes] = []
        self.bulk: list[bytes] = []
        self.codecs: tuple[str, ...] = ()  # Python codecs of the current Specific Character Set
        self._seen: set[str] = set()

    def add(self, token: str, kind: str, boundary: bytes = _ALNUM, identity: bool = False) -> None:
        """A token to look for; ``boundary``: bytes that may not touch a match (b'' = substring).

        ``identity``: one of the patient's own identifiers, searched for everywhere and never
        excused by a kept value that happens to hold it."""
        t = token.strip().lower()
        if not t or (t in self._seen and not identity):
            return
        self._seen.add(t)
        target = self.identity if identity else self.tokens
        with contextlib.suppress(UnicodeEncodeError):
            target.setdefault(t.encode("latin-1"), (kind, boundary))
        if not t.isascii():
            target.setdefault(t.encode("utf-8"), (kind, boundary))
            # the output is searched lower-cased by bytes.lower(), which leaves non-ASCII
            # letters as they are: look for that form too, in the source's own encoding as well
            folded = "".join(c.lower() if c.isascii() else c for c in token.strip())
            for codec in ("latin-1", "utf-8", *self.codecs):
                with contextlib.suppress(UnicodeError, LookupError):
                    target.setdefault(folded.encode(codec), (kind, boundary))

    def identifiers(self, tag: int, values: list[Any]) -> None:
        """The patient's names (and their parts), IDs (and their digit runs), issuer, accession
        number and birth date (in its usual written forms), from an identity attribute."""
        for v in values:
            if isinstance(v, bytes | Dataset):
                continue
            s = str(v).strip()
            if not s:
                continue
            if tag in _IDENTITY_NAMES:
                for part in re.split(r"[\^=\s,.\-]+", s):
                    if len(part) >= 3:
                        self.add(part, "identity", _ALNUM, identity=True)
            elif tag == _BIRTH_DATE:
                d = re.sub(r"\D", "", s)
                if len(d) == 8:
                    y, m, day = d[:4], d[4:6], d[6:]
                    for form in (
                        d,
                        f"{y}-{m}-{day}",
                        f"{y}/{m}/{day}",
                        f"{day}/{m}/{y}",
                        f"{m}/{day}/{y}",
                        f"{day}.{m}.{y}",
                        day + m + y,
                        m + day + y,
                    ):
                        self.add(form, "identity", _DIGITS, identity=True)
            else:
                for one in s.split("\\"):
                    one = one.strip()
                    if len(one) >= 3 and not one.isdigit():
                        self.add(one, "identity", b"" if len(one) >= 6 else _ALNUM, identity=True)
                    for run in re.findall(r"[0-9]{5,}", one):
                        self.add(run, "identity", _DIGITS, identity=True)

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


_DICT_VR: dict[int, str] = {}


def _vr_of(tag: int, vr: str | None) -> str:
    """The VR the element is judged by: as stored, or the dictionary's for implicit / UN."""
    if vr and vr != "UN":
        return vr.split(" or ")[0]
    hit = _DICT_VR.get(tag)
    if hit is None:
        try:
            hit = str(dictionary_VR(tag))
        except KeyError:
            hit = ""
        _DICT_VR[tag] = hit
    return (hit or vr or "UN").split(" or ")[0]


def _raw_values(vr: str, value: Any, encodings: list[str] | None = None) -> list[Any]:
    """Values without pydicom's conversion: text VRs as str (latin-1, so bytes round-trip).

    Non-ASCII text in a VR that follows the Specific Character Set (``encodings``, as Python
    codecs) is decoded with it as well, and both readings are returned: a name like MÜLLER in
    UTF-8 is then also looked for as itself, not only as its latin-1 mis-reading.
    """
    if isinstance(value, bytes):
        if vr in _BINARY_VRS:
            return [value]
        text = value.decode("latin-1")
        values = [v.strip(" \x00") for v in text.split("\\")]
        if encodings and vr in _CHARSET_VRS and not value.isascii():
            try:
                decoded = decode_bytes(value, encodings, _DELIMITERS)
            except Exception:
                decoded = text
            if decoded != text:
                values += [v.strip(" \x00") for v in decoded.split("\\")]
        return values
    return _as_list(value)


_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
_DELIMITERS = {0x5C, 0x5E, 0x3D, 0x0D, 0x0A, 0x09, 0x0C}


def _encodings(elements: list[_Element], parent: list[str] | None) -> list[str] | None:
    """Python codecs of this level's Specific Character Set (an item inherits its parent's)."""
    for tag, _, value in elements:
        if tag == 0x00080005:
            if isinstance(value, bytes):
                terms = [t.strip(" \x00") for t in value.decode("latin-1").split("\\")]
            else:
                terms = [str(t).strip() for t in _as_list(value)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # unknown terms: pydicom warns and skips them
                return list(convert_encodings(terms or [""]))
        if tag > 0x00080005:
            break
    return parent


def _kept_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return " ".join(str(v) for v in _as_list(value)).encode("utf-8", "replace")


# -- the source, element by element ------------------------------------------------------------
# An element is (tag, VR as stored or None, value): the value is the undecoded bytes (or what
# pydicom's reader gives for an empty one), or for a sequence a list of items, each a list of
# elements. ``_read`` builds this from the bytes directly for the common encodings, which is
# several times faster than a pydicom parse followed by decoding every sequence; anything it
# is not sure to read exactly as pydicom does goes to ``_from_pydicom`` instead.
_Element = tuple[int, "str | None", Any]
_HEAD = struct.Struct("<HH")
_IMPLICIT = struct.Struct("<HHL")
_EXPLICIT = struct.Struct("<HH2sH")
_UL = struct.Struct("<L")
_UNDEFINED = 0xFFFFFFFF
_LONG = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_VRS = _LONG | {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN"}
_VRS |= {"SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"}
_IMPLICIT_LE = ImplicitVRLittleEndian
_EXPLICIT_LE = ExplicitVRLittleEndian


class _Unsure(Exception):
    """The raw reader met something pydicom reads in its own way (switches, guesses, fixes)."""


def _looks_explicit(data: bytes, pos: int) -> bool:
    vr = data[pos + 4 : pos + 6]
    return len(vr) == 2 and 0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B


def _read_items(data: bytes, pos: int, end: int, implicit: bool) -> tuple[list[Any], int]:
    """Items of a sequence value from ``pos``; ``end`` is None-like (-1) for undefined length."""
    items: list[Any] = []
    while end < 0 or pos < end:
        if pos + 8 > len(data):
            raise _Unsure
        group, elem, length = _IMPLICIT.unpack_from(data, pos)
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            if end >= 0:
                raise _Unsure
            return items, pos
        if (group, elem) != (0xFFFE, 0xE000):
            raise _Unsure
        if length and _looks_explicit(data, pos) == implicit:
            raise _Unsure  # pydicom would switch the encoding here
        if length == _UNDEFINED:
            item, pos = _read_dataset(data, pos, -1, implicit, in_item=True)
        else:
            item, stop = _read_dataset(data, pos, pos + length, implicit, in_item=True)
            pos += length
            if stop != pos:
                raise _Unsure
        items.append(item)
    if pos != end:
        raise _Unsure
    return items, pos


def _read_dataset(
    data: bytes,
    pos: int,
    end: int,
    implicit: bool,
    in_item: bool = False,
    group: int | None = None,
) -> tuple[list[_Element], int]:
    """Elements from ``pos`` to ``end`` (-1: to an item delimiter); ``group``: only while the
    elements belong to that group (the file meta)."""
    out: list[_Element] = []
    size = len(data) if end < 0 else end
    while pos < size:
        if group is not None and (pos + 2 > size or _HEAD.unpack_from(data, pos)[0] != group):
            return out, pos
        if pos + 8 > size:
            raise _Unsure
        if implicit:
            grp, elem, length = _IMPLICIT.unpack_from(data, pos)
            vr: str | None = None
            pos += 8
        else:
            grp, elem, vr_bytes, length = _EXPLICIT.unpack_from(data, pos)
            pos += 8
            try:
                vr = vr_bytes.decode("ascii")
            except UnicodeDecodeError:
                raise _Unsure from None
            if vr not in _VRS:
                raise _Unsure
            if vr in _LONG:
                if pos + 4 > size:
                    raise _Unsure
                length = _UL.unpack_from(data, pos)[0]
                pos += 4
        tag = grp << 16 | elem
        if tag == 0xFFFEE00D:
            if not in_item or length:
                raise _Unsure
            return out, pos
        if grp == 0xFFFE:
            raise _Unsure
        judged = _vr_of(tag, vr)
        if length == _UNDEFINED:
            if vr != "SQ" and not (implicit and judged == "SQ"):
                raise _Unsure  # encapsulated pixel data, UN sequences: pydicom's way
            items, pos = _read_items(data, pos, -1, implicit)
            out.append((tag, "SQ", items))
            continue
        if pos + length > size:
            raise _Unsure
        if judged == "SQ":
            if vr not in (None, "SQ"):
                raise _Unsure  # UN holding a sequence: pydicom re-reads it as implicit
            items, _ = _read_items(data, pos, pos + length, implicit)
            out.append((tag, vr, items))
        elif length:
            out.append((tag, vr, data[pos : pos + length]))
        else:
            out.append((tag, vr, empty_value_for_VR(vr, raw=True)))
        pos += length
    if end >= 0 and pos != end:
        raise _Unsure
    if in_item and end < 0:
        raise _Unsure  # an undefined-length item without its delimiter
    return out, pos


def _read(source: bytes) -> tuple[list[_Element], list[_Element]] | None:
    """(file meta, dataset) straight from the bytes, or None where pydicom must read it."""
    if len(source) < 140 or source[128:132] != b"DICM":
        return None
    try:
        meta, meta_end = _read_dataset(source, 132, len(source), implicit=False, group=2)
        if any(isinstance(v, list) for _, _, v in meta):
            return None
        meta = [
            _as_pydicom_leaves_it(e) if i == 0 or e[0] in (0x00020000, 0x00020010) else e
            for i, e in enumerate(meta)
        ]
        ts_values = [v for t, _, v in meta if t == 0x00020010]
        if len(ts_values) != 1 or not isinstance(ts_values[0], str):
            return None
        ts = ts_values[0]
        if ts not in (_IMPLICIT_LE, _EXPLICIT_LE):
            return None
        implicit = ts == _IMPLICIT_LE
        if meta_end + 6 <= len(source) and _looks_explicit(source, meta_end) == implicit:
            return None  # pydicom would switch the encoding
        body, _ = _read_dataset(source, meta_end, len(source), implicit)
    except (_Unsure, struct.error):
        return None
    return meta, body


def _as_pydicom_leaves_it(element: _Element) -> _Element:
    """dcmread decodes the first file meta element, the group length and the transfer syntax
    (it checks them): their values as it leaves them, so that the kept text is the same."""
    tag, vr, value = element
    if isinstance(value, bytes):
        if vr == "UL" and len(value) == 4:
            return tag, vr, _UL.unpack(value)[0]
        if vr == "UI" and b"\\" not in value:
            return tag, vr, value.decode("ascii").strip("\x00 ")
    return element


def _from_pydicom(ds: Dataset) -> list[_Element]:
    out: list[_Element] = []
    d = ds._dict
    for btag in list(d):
        raw = d[btag]
        tag = int(btag)
        vr = getattr(raw, "VR", None)
        if _vr_of(tag, vr) == "SQ":
            items = ds[tag].value or []
            out.append((tag, "SQ", [_from_pydicom(item) for item in items]))
        else:
            out.append((tag, vr, raw.value))
    return out


def _walk(
    elements: list[_Element],
    col: _Collector,
    meta: bool = False,
    parent: list[str] | None = None,
    top: bool = False,
    path: tuple[int, ...] = (),
    sop_class: str = "",
) -> None:
    """Classify every element by tag and VR; only sensitive ones are decoded into tokens."""
    enc = _encodings(elements, parent) if not meta else None
    col.codecs = tuple(enc or ())
    if top:
        _identity(elements, col, enc)
        sop_class = _sop_class(elements)
    creators: dict[tuple[int, int], str] = {}
    safe, safe_vrs = _safe_private()
    for tag, stored_vr, value in elements:
        group, el = tag >> 16, tag & 0xFFFF
        vr = _vr_of(tag, stored_vr)
        if vr == "SQ":
            # Removed or emptied sequences: everything inside must be gone. Others (not
            # listed, or D / X/Z/U*: kept and cleaned inside) are judged item by item.
            all_sensitive = (
                meta
                or group & 1
                or (
                    _status(tag, vr) == "sensitive-all"
                    and not _dummy_sequence(sop_class, (*path, tag))
                )
            )
            for item in value or []:
                if all_sensitive:
                    _walk_all_sensitive(item, col, parent=enc)
                else:
                    _walk(item, col, parent=enc, path=(*path, tag), sop_class=sop_class)
            col.codecs = tuple(enc or ())
            continue
        if meta:
            if tag in _KEPT_META:
                col.kept.append(_kept_bytes(value))
            else:
                col.sensitive(vr, _raw_values(vr, value, enc))
            continue
        if group & 1:
            if 0x10 <= el <= 0xFF:
                text = value.decode("latin-1") if isinstance(value, bytes) else str(value or "")
                creators[(group, el)] = text.strip(" \x00").lower()
                continue
            creator = creators.get((group, el >> 8), "")
            if (creator, el & 0xFF) in safe and vr in safe_vrs:
                col.kept.append(_kept_bytes(value))
            else:
                col.sensitive(vr, _raw_values(vr, value, enc))
            continue
        status = _status(tag, vr)
        if status == "keep":
            if isinstance(value, bytes) and len(value) >= _BULK_MIN:
                col.bulk.append(value)
            elif value is not None:
                col.kept.append(_kept_bytes(value))
        elif status == "clean":
            col.clean(vr, _raw_values(vr, value, enc))
        else:
            col.sensitive(vr, _raw_values(vr, value, enc))


@cache
def _iod_types() -> tuple[dict[str, str], dict[str, dict[str, str]], frozenset[int]]:
    """(SOP class -> IOD, IOD -> {path: PS3.3 type}, sequence tags with a D-capable compound code)
    from the vendored data files (the types table and Table E.1-1), not from the engine."""
    root = resources.files("medcurate") / "data"
    data = json.loads((root / "iod-types.json").read_text(encoding="utf-8"))
    rows = json.loads((root / "ps3.15-annex-e.json").read_text(encoding="utf-8"))
    compound_d = frozenset(
        int(r["id"], 16)
        for r in rows
        if r["basicProfile"] in ("X/D", "Z/D", "X/Z/D") and len(r["id"]) == 8
    )
    paths = {iod: v.get("paths", {}) for iod, v in data["iods"].items()}
    return data["sop_classes"], paths, compound_d


def _dummy_sequence(sop_class: str, path: tuple[int, ...]) -> bool:
    """A sequence whose compound code (X/D, Z/D, X/Z/D) gives D because its IOD makes it Type 1
    or 1C at this path: de-identification keeps it and cleans its items (as for a D sequence),
    so its items are judged one by one instead of all being searched for."""
    sop_classes, paths, compound_d = _iod_types()
    if path[-1] not in compound_d:
        return False
    iod = sop_classes.get(sop_class)
    if iod is None:
        return False
    key = ":".join(f"{t:08x}" for t in path)
    return paths.get(iod, {}).get(key) in ("1", "1C")


def _sop_class(elements: list[_Element]) -> str:
    for tag, _vr, value in elements:
        if tag == 0x00080016:
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value or "")
            return text.strip(" \x00")
    return ""


def _identity(elements: list[_Element], col: _Collector, enc: list[str] | None) -> None:
    """The patient's identifiers from the top-level dataset and its Other Patient IDs items."""
    for tag, stored_vr, value in elements:
        if tag in _IDENTITY_TAGS:
            vr = _vr_of(tag, stored_vr)
            col.identifiers(tag, _raw_values(vr, value, enc))
        elif tag == _OTHER_IDS and isinstance(value, list):
            for item in value:
                for t, item_vr, v in item:
                    if t == 0x00100020:
                        col.identifiers(t, _raw_values(_vr_of(t, item_vr), v, enc))
        elif tag > 0x00102000:
            break  # elements are in tag order; the last identity attribute is passed


def _walk_all_sensitive(
    elements: list[_Element], col: _Collector, parent: list[str] | None = None
) -> None:
    enc = _encodings(elements, parent)
    col.codecs = tuple(enc or ())
    for tag, stored_vr, value in elements:
        vr = _vr_of(tag, stored_vr)
        if vr == "SQ":
            for item in value or []:
                _walk_all_sensitive(item, col, parent=enc)
            col.codecs = tuple(enc or ())
        else:
            col.sensitive(vr, _raw_values(vr, value, enc))


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


def _elements(source: bytes, fast: bool = True) -> list[tuple[list[_Element], bool]]:
    """[(file meta elements, True), (dataset elements, False)] of the source file."""
    parsed = _read(source) if fast else None
    if parsed is not None:
        return [(parsed[0], True), (parsed[1], False)]
    ds = pydicom.dcmread(BytesIO(source), force=True)
    out = []
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out.append((_from_pydicom(meta), True))
    out.append((_from_pydicom(ds), False))
    return out


def collect(
    source: bytes, source_name: str = ""
) -> tuple[dict[bytes, tuple[str, bytes]], bytes, list[bytes]]:
    """(sensitive tokens with kind and boundary set, kept text lower-cased, kept bulk values)."""
    col = collector(source, source_name)
    return {**col.identity, **col.tokens}, b"\n".join(col.kept).lower(), col.bulk


def collector(source: bytes, source_name: str = "") -> _Collector:
    """Everything the search needs from the source: tokens, identifiers, kept text, bulk."""
    col = _Collector()
    for elements, is_meta in _elements(source):
        _walk(elements, col, meta=is_meta, top=not is_meta)
    if source_name:
        _name_tokens(source_name, col)
    # What the DICOM writer itself puts into every file (file meta) is not from the source.
    writer = f"{pydicom.uid.PYDICOM_IMPLEMENTATION_UID} PYDICOM {pydicom.__version__}"
    col.kept.append(writer.encode())
    return col


def verify(
    source: bytes,
    output: bytes,
    output_path: str,
    source_name: str = "",
    *,
    cleaned: tuple[bytes, ...] = (),
    burned_in_allow: frozenset[str] | None = None,
) -> VerifyResult:
    """Search ``output`` (bytes) and ``output_path`` for every value the profile removes, and
    for every identifier of the patient wherever it appears (any element, VR, depth, the file
    meta, the path), whatever the output keeps.

    ``cleaned``: pixel data the burned-in step blanked text in (checked by its own OCR pass), cut
    out like retained pixels (long identifiers are still searched in them). With
    ``burned_in_allow`` (modalities or SOP classes let through unchecked), an image whose pixels
    may carry text and that does not say it was cleaned is a hit (``burned_in_unchecked``)."""
    col = collector(source, source_name)
    tokens, identity, bulk = col.tokens, col.identity, [*col.bulk, *cleaned]
    kept = b"\n".join([*col.kept, _CLEAN_PIXEL_MARKER]).lower()
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
        if token in identity or token.decode("latin-1") in vocab:
            continue
        if _occurs(hay, token, boundary) and not _occurs(kept, token, boundary):
            result.hits += 1
            result.kinds[kind] += 1
    whole: bytes | None = None
    for token, (kind, boundary) in identity.items():
        result.checked += 1
        if token.decode("latin-1") in vocab:
            continue
        found = _occurs(hay, token, boundary)
        if not found and bulk and len(token) >= _WHOLE_OUTPUT_MIN:
            whole = output.lower() if whole is None else whole
            found = _occurs(whole, token, boundary)
        if found:
            result.hits += 1
            result.kinds[kind] += 1
    if burned_in_allow is not None:
        result.checked += 1
        if burned_in_unchecked(source, output, burned_in_allow):
            result.hits += 1
            result.kinds["burned-in"] += 1
    return result


# Images whose pixels may carry burned-in text: the header says so, or the class usually does.
_TEXT_MODALITIES = frozenset({"US", "IVUS", "XC", "ES", "OT", "DOC", "GM", "SC"})
_TEXT_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.7",  # secondary capture
    "1.2.840.10008.5.1.4.1.1.6.",  # ultrasound
    "1.2.840.10008.5.1.4.1.1.3.1",  # ultrasound multi-frame
    "1.2.840.10008.5.1.4.1.1.77.",  # visible light
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated documents
)
_CLEAN_PIXEL_CODE = "113101"  # CID 7050: Clean Pixel Data Option
_CLEAN_PIXEL_MARKER = b"113101 Clean Pixel Data Option"  # written by the burned-in step


def burned_in_unchecked(source: bytes, output: bytes, allow: frozenset[str] = frozenset()) -> bool:
    """True when the source's pixels may carry text (BurnedInAnnotation YES, or a modality or
    SOP class that usually does, not on ``allow``) and the output does not say they were cleaned:
    BurnedInAnnotation NO and the Clean Pixel Data code in DeidentificationMethodCodeSequence."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = pydicom.dcmread(BytesIO(source), force=True, stop_before_pixels=True)
        out = pydicom.dcmread(BytesIO(output), force=True, stop_before_pixels=True)
    modality = str(src.get("Modality", "") or "").upper()
    sop_class = str(src.get("SOPClassUID", "") or "")
    if modality in allow or sop_class in allow:
        return False
    risky = (
        str(src.get("BurnedInAnnotation", "") or "").upper() == "YES"
        or modality in _TEXT_MODALITIES
        or sop_class.startswith(_TEXT_SOP_PREFIXES)
    )
    if not risky:
        return False
    codes = {str(i.get("CodeValue", "")) for i in out.get("DeidentificationMethodCodeSequence", [])}
    said_no = str(out.get("BurnedInAnnotation", "") or "").upper() == "NO"
    return not (said_no and _CLEAN_PIXEL_CODE in codes)
