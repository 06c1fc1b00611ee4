"""One dataset in, one de-identified dataset out: the table-driven layer, recursive in sequences.

Every standard attribute gets the action Table E.1-1 gives it under our options (``table``);
attributes the table does not list follow the value representation: UIDs are replaced (except class
and syntax UIDs), person names emptied, dates and times shifted, sequences entered, and text is kept
only when it passes the Clean Descriptors vocabulary (free text) or looks like a defined term (code
strings), and holds none of the patient's identifiers (``identity``), else emptied: a name in
Manufacturer or an MRN in BodyPartExamined does not survive; private attributes are removed unless
on the safe allow-list. dicognito's generators make the dummy person
names and identifiers that the table asks for (action D), keyed by a seed derived from the salt.

Why not dicognito's whole Anonymizer underneath: it walks every element of every dataset with nine
handlers, converting each raw element to a Python value (the cost that makes it 3-4x slower than a
plain read+write), then leaves private tags, free text and about 284 table rows for us to redo.
Here only the elements the table or the VR rules touch are decoded; the rest are written back as
the raw bytes they were read as. Replacements of text values (new UIDs, shifted dates and times,
pseudonyms, the markers) are stored as raw bytes too, so ``encode`` can pack them without
pydicom's per-element writer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dicognito.idanonymizer import IDAnonymizer
from dicognito.pnanonymizer import PNAnonymizer
from dicognito.randomizer import Randomizer
from pydicom.charset import default_encoding
from pydicom.datadict import DicomDictionary, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_sequence
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from medcurate.deid.clean import clean_text
from medcurate.deid.dates import DateShifter
from medcurate.deid.identity import NO_IDENTIFIERS, PatientIdentifiers, patient_identifiers
from medcurate.deid.iod import IodTypes, iod_types
from medcurate.deid.policy import RISKY_MODALITIES, RISKY_SOP_PREFIXES, Policy
from medcurate.deid.private import filter_private
from medcurate.deid.pseudonyms import Keyer, patient_key, patient_pseudonym, site_code
from medcurate.deid.table import Action, ActionTable, action_table, keep_conformant
from medcurate.deid.uids import UIDMapper, keeps_uid

DICOMDIR_SOP_CLASS = MediaStorageDirectoryStorage
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC", "CS", "AE"})
_NUMBER_TEXT_VRS = frozenset({"DS", "IS"})
_BINARY_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"})
_BYTES_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
_ID_WORDS = ("ID", "Identifier", "Number")
_FREE_TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC", "AE", "UR"})
_CODE_TAGS = frozenset({0x00080100, 0x00080102, 0x00080103, 0x00080105, 0x0008010F})
"""Coded entries' value, scheme, version, mapping resource, context: checked as code strings."""
_KEEP_AS_READ = frozenset({0x00080005})
"""Specific Character Set: needed to read the file; the verifier still searches it."""
_CS_VALUE = re.compile(r"[A-Z0-9 _]{0,16}")
_CODE_VALUE = re.compile(r"[A-Za-z0-9 ._:\-]{0,16}")
_SAFE_CACHE_MAX = 4096
_DUMMY_TEXT = {0x00281054: "US"}
"""Dummies where the standard enumerates the values: Rescale Type US (unspecified)."""


def _date_time_pairs() -> dict[int, int]:
    """DA tag <-> TM tag for attributes named ``...Date`` / ``...Time`` (StudyDate/StudyTime)."""
    by_kw = {entry[4]: tag for tag, entry in DicomDictionary.items() if entry[4]}
    pairs: dict[int, int] = {}
    for tag, (vr, _vm, _name, _ret, kw) in DicomDictionary.items():
        if vr == "DA" and kw.endswith("Date"):
            other = by_kw.get(kw[:-4] + "Time")
            if other is not None and DicomDictionary[other][0] == "TM":
                pairs[tag] = other
                pairs[other] = tag
    return pairs


_PAIRS = _date_time_pairs()


def burned_in_reason(ds: Dataset, policy: Policy) -> str | None:
    """Why this image may carry burned-in identity (header evidence), or None.

    Header flags are unreliable in both directions, so whole classes of images known for burned-in
    text (ultrasound, secondary capture, photographs, documents) go to review too, unless the
    policy's allow-list names their modality or SOP class.
    """
    sop_class = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "").upper()
    if sop_class in policy.burned_in_allow or modality in policy.burned_in_allow:
        return None
    if str(ds.get("BurnedInAnnotation", "") or "").upper() == "YES":
        return "BurnedInAnnotation is YES"
    if str(ds.get("RecognizableVisualFeatures", "") or "").upper() == "YES":
        return "RecognizableVisualFeatures is YES"
    if modality in RISKY_MODALITIES:
        return f"modality {modality} commonly carries burned-in text"
    for prefix in RISKY_SOP_PREFIXES:
        if sop_class.startswith(prefix):
            return f"SOP class {sop_class} commonly carries burned-in text"
    image_type = ds.get("ImageType")
    words = [str(w).upper() for w in (image_type or [])] if image_type is not None else []
    if any("SCREEN" in w or w == "SAVE" for w in words):
        return "ImageType marks a screen capture"
    return None


@dataclass
class DeidInfo:
    """What the run needs to know about one de-identified instance (pseudonyms only)."""

    patient: str
    site: str
    crosswalk: list[tuple[str, str, str]] = field(default_factory=list)
    """(kind, original, replacement): for restricted/ only."""


class Deidentifier:
    """Holds the salt-derived state for a process; ``deidentify`` changes a dataset in place."""

    def __init__(self, salt: bytes, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.keyer = Keyer(salt)
        self.table: ActionTable = action_table(self.policy.options)
        self.uids = UIDMapper(self.keyer)
        randomizer = Randomizer(self.keyer.hexcode("dicognito-seed", n=40))
        self._pn = PNAnonymizer(randomizer)
        id_keywords = sorted(
            {
                kw
                for tag, a in self.table.by_tag.items()
                if a is Action.DUMMY
                and (kw := keyword_for_tag(tag))
                and _safe_vr(tag) in _TEXT_VRS
                and any(w in kw for w in _ID_WORDS)
            }
        )
        self._id = IDAnonymizer(randomizer, "", "", *id_keywords)
        self._vr_cache: dict[int, str] = {}
        self._actions: dict[tuple[int, str | None], tuple[str, Action | None]] = {}
        self._marker_elements: dict[tuple[bool, bool] | None, list[Any]] = {}
        self._safe: dict[tuple[str, str], bool] = {}
        self._ids: PatientIdentifiers = NO_IDENTIFIERS
        self._iod: IodTypes | None = None  # the current object's IOD (compound actions)
        self._path: tuple[int, ...] = ()  # tags of the sequences the walk is in
        self._iod_tags = frozenset(self.table.compound) | self.table.removed

    def __repr__(self) -> str:
        return f"Deidentifier(profile={self.policy.options.profile_text()!r})"

    # -- one dataset -------------------------------------------------------------------------
    def deidentify(self, ds: Dataset) -> DeidInfo:
        """De-identify ``ds`` and its file meta in place; returns pseudonym, site, crosswalk."""
        pid = raw_text(ds, 0x00100020)
        issuer = raw_text(ds, 0x00100021)
        name = raw_text(ds, 0x00100010)
        birth = raw_text(ds, 0x00100030)
        study = raw_text(ds, 0x0020000D)
        key = patient_key(pid, issuer, name, birth, study)
        pseudonym = patient_pseudonym(self.keyer, key)
        info = DeidInfo(patient=pseudonym, site=site_code(self.keyer, raw_text(ds, 0x00080080)))
        info.crosswalk.append(("patient", "|".join(key), pseudonym))
        for kw, tag in (
            ("StudyInstanceUID", 0x0020000D),
            ("SeriesInstanceUID", 0x0020000E),
            ("SOPInstanceUID", 0x00080018),
        ):
            original = raw_text(ds, tag)
            if original:
                info.crosswalk.append((kw, original, self.uids(original)))
        shifter = DateShifter.for_patient(self.keyer, key)
        self._ids = patient_identifiers(lambda tag: raw_text(ds, tag), _other_ids(ds))
        self._iod = iod_types(raw_text(ds, 0x00080016))
        self._path = ()

        transfer_syntax = _transfer_syntax(ds)
        try:
            self._process(ds, shifter)
        finally:
            self._ids = NO_IDENTIFIERS
        ds._dict[BaseTag(0x00100020)] = _new_raw(0x00100020, "LO", pseudonym)
        ds._dict[BaseTag(0x00100010)] = _new_raw(0x00100010, "PN", pseudonym)
        self._markers(ds, transfer_syntax)
        ds.file_meta = self._file_meta(ds, transfer_syntax)
        ds.preamble = b"\x00" * 128
        return info

    def _markers(self, ds: Dataset, transfer_syntax: UID) -> None:
        """PatientIdentityRemoved, DeidentificationMethod (+ code sequence), 0028,0303.

        Built once per process and encoding, as raw elements (immutable, so they can be shared;
        written as they are): the code sequence is encoded by pydicom's writer for the output's
        transfer syntax, so the bytes are those it would write for the decoded sequence.
        """
        encoding = _encoding(transfer_syntax)
        elements = self._marker_elements.get(encoding)
        if elements is None:
            opts = self.policy.options
            items = []
            for value, meaning in opts.codes():
                item = Dataset()
                item.CodeValue = value
                item.CodingSchemeDesignator = "DCM"
                item.CodeMeaning = meaning
                items.append(item)
            longitudinal = "MODIFIED" if opts.retain_longitudinal_modified_dates else "REMOVED"
            codes = DataElement(0x00120064, "SQ", Sequence(items))
            elements = [
                _new_raw(0x00120062, "CS", "YES"),
                _new_raw(0x00120063, "LO", opts.method_values()),
                _encoded_sequence(codes, encoding) if encoding is not None else codes,
                _new_raw(0x00280303, "CS", longitudinal),
            ]
            self._marker_elements[encoding] = elements
        for elem in elements:
            ds._dict[elem.tag] = elem

    def _file_meta(self, ds: Dataset, transfer_syntax: UID) -> FileMetaDataset:
        """A new file meta: only class, new instance UID and syntax survive from the original."""
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = transfer_syntax
        return meta

    # -- recursion ---------------------------------------------------------------------------
    def _vr(self, tag: BaseTag, raw: Any) -> str:
        vr = getattr(raw, "VR", None)
        if vr and vr != "UN":
            return str(vr)
        cached = self._vr_cache.get(tag)
        if cached is None:
            cached = _safe_vr(tag) or (vr or "UN")
            self._vr_cache[tag] = cached
        return cached

    def _decide(self, tag: BaseTag, raw: Any) -> tuple[str, Action | None]:
        """(VR, action) for a standard tag, cached per tag and stored VR."""
        key = (int(tag), getattr(raw, "VR", None))
        hit = self._actions.get(key)
        if hit is None:
            vr = self._vr(tag, raw)
            action = self.table.lookup(tag)
            if action is None:
                action = _vr_default(vr, tag)
            hit = (vr, action)
            self._actions[key] = hit
        return hit

    def _process(self, ds: Dataset, shifter: DateShifter) -> None:
        d = ds._dict
        done: set[int] = set()
        has_private = False
        for tag in list(d):
            if tag in done:
                continue
            t = int(tag)
            if t & 0x10000:
                has_private = True
                continue
            if not t & 0xFFFF or t >> 16 in (0x0000, 0x0002):
                # group lengths go stale; file meta is rebuilt; command elements (0000,eeee)
                # cannot be stored in a file at all
                del d[tag]
                continue
            vr, action = self._decide(tag, d[tag])
            if self._iod is not None and (
                t in self._iod_tags or (t >> 24 == 0x60 and self.table.depends_on_iod(t))
            ):
                # X/Z, X/D, Z/D, X/Z/D and X: what this IOD needs at this path (1: D, 2: Z)
                path = (*self._path, t)
                action = self.table.lookup_in_iod(t, path, self._iod, vr == "SQ")
            if action is None:
                continue
            self._apply(ds, tag, vr, action, shifter, done)
        if has_private:
            filter_private(ds)

    def _apply(
        self,
        ds: Dataset,
        tag: BaseTag,
        vr: str,
        action: Action,
        shifter: DateShifter,
        done: set[int],
    ) -> None:
        if action is Action.KEEP:
            if vr == "SQ":
                self._recurse(ds[tag], shifter)
            return
        if action is Action.REMOVE or action is Action.SAFE_PRIVATE:
            del ds._dict[tag]
            return
        raw = ds._dict[tag]
        if vr != "SQ" and self._apply_raw(ds, tag, vr, raw, action, shifter, done):
            return
        elem = ds[tag]
        if vr == "SQ" or elem.VR == "SQ":
            if action is Action.EMPTY:
                elem.value = Sequence()
            elif action is Action.CLEAN:
                self._drop(ds, tag, sequence=True)
            else:  # DUMMY, UID, UIDSEQ, SHIFT on a sequence: keep it, clean what it holds
                self._recurse(elem, shifter)
            return
        if elem.value is None or elem.value == "" or elem.value == b"":
            return
        if action is Action.EMPTY:
            _empty(elem)
        elif action is Action.UID or (action is Action.DUMMY and elem.VR == "UI"):
            _map_values(elem, self.uids)
        elif action is Action.SHIFT or (action is Action.DUMMY and elem.VR in _DATE_VRS):
            if not self._shift(ds, elem, shifter, done):
                del ds[tag]
        elif action is Action.DUMMY:
            self._dummy(ds, elem)
        elif action is Action.CLEAN:
            if elem.VR in _TEXT_VRS or elem.VR in ("PN",):
                joined = "\\".join(str(v) for v in _values(elem))
                if clean_text(joined) is None or self._ids.found_in(joined):
                    self._drop(ds, tag)
            else:
                self._drop(ds, tag)
        elif action is Action.TEXT or action is Action.CODE:
            if not self._keeps(action, vr, [str(v) for v in _values(elem)]):
                self._blank(ds, tag)
        elif action is Action.UIDSEQ:
            _map_values(elem, self.uids) if elem.VR == "UI" else None

    def _apply_raw(
        self,
        ds: Dataset,
        tag: BaseTag,
        vr: str,
        raw: Any,
        action: Action,
        shifter: DateShifter,
        done: set[int],
    ) -> bool:
        """The common cases on the undecoded bytes (pydicom's value conversion is the main cost
        of a naive walk). Returns False to fall back to the decoded path."""
        values = _raw_strings(raw)
        if values is None or vr not in _RAW_TEXT_VRS:
            return False
        if not any(values):
            return True  # empty already
        if action is Action.EMPTY:
            _put_raw(ds, tag, raw, vr, [])
        elif action is Action.UID or (action is Action.DUMMY and vr == "UI"):
            _put_raw(ds, tag, raw, vr, [self.uids(v) for v in values])
        elif action is Action.SHIFT and vr in _DATE_VRS:
            other_int = _PAIRS.get(tag)
            if other_int is not None and len(values) == 1 and other_int in ds._dict:
                # a date with its time: both move together (days and seconds)
                other_tag = BaseTag(other_int)
                other = ds._dict[other_tag]
                other_values = _raw_strings(other)
                if other_values is None:
                    return False  # the other one is decoded already: the decoded path
                if len(other_values) == 1 and other_values[0].strip():
                    da, tm = (
                        (values[0], other_values[0]) if vr == "DA" else (other_values[0], values[0])
                    )
                    moved = shifter.shift_da_tm(da, tm)
                    if moved is not None:
                        new_da, new_tm = moved
                        _put_raw(ds, tag, raw, vr, [new_da if vr == "DA" else new_tm])
                        _put_raw(
                            ds,
                            other_tag,
                            other,
                            "TM" if vr == "DA" else "DA",
                            [new_tm if vr == "DA" else new_da],
                        )
                        done.add(other_tag)
                        return True
            fn = {"DA": shifter.shift_da, "TM": shifter.shift_tm, "DT": shifter.shift_dt}[vr]
            new = [fn(v) if v else "" for v in values]
            if any(n is None for n in new):
                del ds[tag]
            else:
                _put_raw(ds, tag, raw, vr, [n or "" for n in new])
        elif action is Action.CLEAN:
            joined = "\\".join(values)
            if vr == "UI" or clean_text(joined) is None or self._ids.found_in(joined):
                self._drop(ds, tag)
        elif action is Action.TEXT or action is Action.CODE:
            if not self._keeps(action, vr, values):
                self._blank(ds, tag)
        elif action is Action.SHIFT:
            del ds[tag]  # nothing to shift in a text value (e.g. a timezone offset)
        else:
            return False
        return True

    def _keeps(self, action: Action, vr: str, values: list[str]) -> bool:
        """An unlisted text value survives when it passes the Clean Descriptors vocabulary rule
        (free text) or looks like a defined term (code strings), and holds no identifier of
        the patient. The rule's verdict is cached per value (the same few values recur)."""
        joined = "\\".join(values)
        key = (vr, joined)
        safe = self._safe.get(key)
        if safe is None:
            if action is Action.CODE:
                pattern = _CS_VALUE if vr == "CS" else _CODE_VALUE
                safe = all(pattern.fullmatch(v) for v in values)
            else:
                safe = clean_text(joined) is not None
            if len(self._safe) >= _SAFE_CACHE_MAX:
                self._safe.clear()
            self._safe[key] = safe
        return safe and not self._ids.found_in(joined)

    def _drop(self, ds: Dataset, tag: BaseTag, sequence: bool = False) -> None:
        """Remove a value that failed cleaning, unless this IOD needs the attribute at this path:
        then empty it (Type 2) or give it a dummy (Type 1), which leaks nothing either."""
        kind = self._iod.type_of((*self._path, int(tag))) if self._iod is not None else None
        action = keep_conformant(Action.REMOVE, kind, sequence)
        if action is Action.REMOVE:
            del ds[tag]
        elif sequence:
            ds[tag].value = Sequence()
        elif action is Action.EMPTY:
            _empty(ds[tag])
        else:
            self._dummy(ds, ds[tag])

    def _blank(self, ds: Dataset, tag: BaseTag) -> None:
        """Empty an unlisted text value that failed the safe-text rules; a dummy where this IOD
        makes the attribute Type 1 or 1C (at the top level, or in any sequence when nested)."""
        nested = bool(self._path)
        if self._iod is not None and self._iod.text_type(int(tag), nested) in ("1", "1C"):
            fixed = _DUMMY_TEXT.get(int(tag))
            if fixed is not None:
                ds[tag].value = fixed
            else:
                self._dummy(ds, ds[tag])
            return
        raw = ds._dict[tag]
        if type(raw) is RawDataElement and isinstance(raw.value, bytes):
            _put_raw(ds, tag, raw, self._vr(tag, raw), [])
        else:
            _empty(ds[tag])

    def _recurse(self, elem: DataElement, shifter: DateShifter) -> None:
        outer = self._path
        self._path = (*outer, int(elem.tag))
        try:
            for item in elem.value or []:
                self._process(item, shifter)
        finally:
            self._path = outer

    def _shift(self, ds: Dataset, elem: DataElement, shifter: DateShifter, done: set[int]) -> bool:
        vr = elem.VR
        values = _values(elem)
        if vr not in _DATE_VRS:
            if vr in _BYTES_VRS:
                elem.value = b"\x00" * max(2, len(elem.value) + (len(elem.value) & 1))
                return True
            return False
        other_tag = _PAIRS.get(elem.tag)
        if other_tag is not None and len(values) == 1 and other_tag in ds._dict:
            other = ds[other_tag]
            other_values = _values(other)
            if len(other_values) == 1 and other_values[0].strip():
                da, tm = (elem, other) if vr == "DA" else (other, elem)
                moved = shifter.shift_da_tm(str(da.value), str(tm.value))
                if moved is not None:
                    da.value, tm.value = moved
                    done.add(other_tag)
                    return True
        fn = {"DA": shifter.shift_da, "TM": shifter.shift_tm, "DT": shifter.shift_dt}[vr]
        new = [fn(v) if v.strip() else "" for v in values]
        if any(n is None for n in new):
            return False
        _set_values(elem, [n or "" for n in new])
        return True

    def _dummy(self, ds: Dataset, elem: DataElement) -> None:
        vr = elem.VR
        if vr == "PN":
            self._pn(ds, elem)
        elif vr in _TEXT_VRS:
            if not self._id(ds, elem):
                elem.value = "ANONYMIZED"
        elif vr in _NUMBER_TEXT_VRS:
            elem.value = "0"
        elif vr in _BINARY_NUMBER_VRS:
            elem.value = 0
        elif vr in _BYTES_VRS:
            n = len(elem.value) if isinstance(elem.value, bytes) else 2
            elem.value = b"\x00" * max(2, n + (n & 1))
        elif vr == "AS":
            elem.value = "000Y"
        elif vr == "UR":
            elem.value = "urn:anonymized"
        else:
            _empty(elem)


_RAW_TEXT_VRS = frozenset(
    {
        "AE",
        "AS",
        "CS",
        "DA",
        "DS",
        "DT",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "ST",
        "TM",
        "UC",
        "UI",
        "UR",
        "UT",
    }
)


def _raw_strings(raw: Any) -> list[str] | None:
    """Values of a still-undecoded text element (latin-1 keeps every byte), else None."""
    if type(raw) is not RawDataElement or not isinstance(raw.value, bytes):
        return None
    return [v.strip(" \x00") for v in raw.value.decode("latin-1").split("\\")]


def _put_raw(ds: Dataset, tag: BaseTag, raw: Any, vr: str, values: list[str]) -> None:
    """Store new ASCII values as raw bytes, padded to even length as the VR requires."""
    data = "\\".join(values).encode("ascii")
    if len(data) & 1:
        data += b"\x00" if vr == "UI" else b" "
    ds._dict[tag] = raw._replace(value=data, length=len(data))


def _new_raw(tag: int, vr: str, text: str | list[str]) -> RawDataElement:
    """An ASCII text element (one value or several) as raw bytes, padded to even length."""
    data = (text if isinstance(text, str) else "\\".join(text)).encode("ascii")
    if len(data) & 1:
        data += b" "
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, False, True)


def _encoding(transfer_syntax: UID) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) that pydicom writes a public transfer syntax in, else None."""
    if transfer_syntax.is_private or not transfer_syntax.is_transfer_syntax:
        return None
    return transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian


def _encoded_sequence(elem: DataElement, encoding: tuple[bool, bool]) -> RawDataElement:
    """A new sequence as the raw element pydicom's writer would produce in ``encoding``."""
    implicit, little = encoding
    buf = DicomBytesIO()
    buf.is_implicit_VR, buf.is_little_endian = implicit, little
    write_sequence(buf, elem, [default_encoding])
    data = buf.getvalue()
    return RawDataElement(elem.tag, "SQ", len(data), data, 0, implicit, little)


def _vr_default(vr: str, tag: BaseTag) -> Action | None:
    """Action for a standard attribute the table does not list (None: keep as read)."""
    if vr == "SQ":
        return Action.KEEP  # KEEP on a sequence still recurses
    if vr == "UI":
        return None if keeps_uid(keyword_for_tag(tag)) else Action.UID
    if vr == "PN":
        return Action.EMPTY
    if vr in _DATE_VRS:
        return Action.SHIFT
    t = int(tag)
    if t in _KEEP_AS_READ:
        return None
    if vr == "CS" or (t in _CODE_TAGS and vr in _FREE_TEXT_VRS):
        return Action.CODE
    if vr in _FREE_TEXT_VRS:
        return Action.TEXT
    return None


def _other_ids(ds: Dataset) -> list[str]:
    """Patient IDs in the Other Patient IDs Sequence (parsed only when present)."""
    if 0x00101002 not in ds._dict:
        return []
    out = []
    for item in ds[0x00101002].value or []:
        out.append(raw_text(item, 0x00100020))
    return out


def raw_text(ds: Dataset, tag: int) -> str:
    """An attribute as text without pydicom's conversion (latin-1 for undecoded bytes)."""
    raw = ds.get_item(tag)
    if raw is None:
        return ""
    value = raw.value
    if isinstance(value, bytes):
        return value.decode("latin-1").strip(" \x00")
    return _text(value)


def _safe_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def _text(elem: Any) -> str:
    if elem is None:
        return ""
    value = elem.value if isinstance(elem, DataElement) else elem
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace").strip("\x00 ")
    return str(value).strip()


def _values(elem: DataElement) -> list[str]:
    v = elem.value
    if v is None:
        return []
    if isinstance(v, MultiValue | list | tuple):
        return [str(x) for x in v]
    if isinstance(v, bytes):
        return [v.decode("latin-1", "replace")]
    return [str(v)]


def _set_values(elem: DataElement, values: list[str]) -> None:
    elem.value = values[0] if len(values) == 1 else values


def _map_values(elem: DataElement, mapper: UIDMapper) -> None:
    _set_values(elem, [mapper(v) for v in _values(elem)])


def _empty(elem: DataElement) -> None:
    if elem.VR in _BYTES_VRS:
        elem.value = b""
    elif elem.VR in _BINARY_NUMBER_VRS or elem.VR in _NUMBER_TEXT_VRS:
        elem.value = None
    else:
        elem.value = ""


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts))
    if getattr(ds, "original_encoding", None) == (False, True):
        return ExplicitVRLittleEndian
    if getattr(ds, "original_encoding", None) == (False, False):
        return ExplicitVRBigEndian
    if ds.is_implicit_VR is False:
        return ExplicitVRLittleEndian if ds.is_little_endian else ExplicitVRBigEndian
    return ImplicitVRLittleEndian
