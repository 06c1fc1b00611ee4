"""Encode a de-identified dataset to file bytes: pydicom's own output, without its per-element cost.

``Dataset.save_as`` runs every element, including the many the engine left as the raw bytes they
were read as, through a general writer (a buffer, checks and dispatch per element): for a small
image that costs more than the whole de-identification. ``encode`` produces the same bytes as
``save_as(..., enforce_file_format=True)`` (a test compares them file by file) by packing raw
elements and sequences directly and handing every other element, every dataset that pydicom would
re-encode (other encoding or character set than it was read with), and every transfer syntax but
the two uncompressed little-endian ones, to pydicom's writer itself.
"""

from __future__ import annotations

import struct
from copy import deepcopy
from io import BytesIO

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OW", "OV", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_UNDEFINED = 0xFFFFFFFF
_IMPLICIT = struct.Struct("<HHI")
_EXPLICIT_LONG = struct.Struct("<HH2sHI")
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_ITEM = 0xE000
_ITEM_DELIM = _IMPLICIT.pack(0xFFFE, 0xE00D, 0)
_SEQ_DELIM = _IMPLICIT.pack(0xFFFE, 0xE0DD, 0)


def encode(ds: Dataset) -> bytes:
    """The bytes ``ds.save_as(buf, enforce_file_format=True)`` writes.

    ``ds`` must carry a complete ``file_meta`` whose SOP class and instance match the dataset (the
    engine builds it so); anything else goes the general way.
    """
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    implicit = ts == ImplicitVRLittleEndian
    if (
        meta is None
        or not (implicit or ts == ExplicitVRLittleEndian)
        or meta.get("MediaStorageSOPClassUID") != ds.get("SOPClassUID")
        or meta.get("MediaStorageSOPInstanceUID") != ds.get("SOPInstanceUID")
        or any(t >> 16 in (0, 2) for t in ds._dict)
        or len(getattr(ds, "preamble", None) or b"\x00" * 128) != 128
    ):
        return _general(ds)
    pixels = ds._dict.get(BaseTag(0x7FE00010))
    if pixels is not None and not (
        type(pixels) is RawDataElement
        and isinstance(pixels.value, bytes)
        and pixels.length != _UNDEFINED
    ):
        ds[0x7FE00010].is_undefined_length = False  # what dcmwrite does for native syntaxes
    out: list[bytes] = [ds.preamble or b"\x00" * 128, b"DICM", _meta_bytes(meta)]
    _dataset(out, ds, implicit, default_encoding)
    return b"".join(out)


_META_TEMPLATES: dict[tuple[str, str, int], bytes | None] = {}
_META_TAGS = frozenset({0x00020002, 0x00020003, 0x00020010})


def _meta_bytes(meta: FileMetaDataset) -> bytes:
    """The file meta group as pydicom writes it (it adds group length, version, implementation).

    Only the instance UID changes from file to file, so the group is written once per SOP class,
    transfer syntax and UID length with a placeholder UID of that length, which is then replaced.
    """
    instance = str(meta.get("MediaStorageSOPInstanceUID", ""))
    if set(meta._dict) == _META_TAGS and instance and instance.isascii():
        key = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID), len(instance))
        if key not in _META_TEMPLATES:
            placeholder = FileMetaDataset()
            placeholder.MediaStorageSOPClassUID = meta.MediaStorageSOPClassUID
            placeholder.MediaStorageSOPInstanceUID = UID("9" * len(instance))
            placeholder.TransferSyntaxUID = meta.TransferSyntaxUID
            blob = _write_meta(placeholder)
            _META_TEMPLATES[key] = blob if blob.count(b"9" * len(instance)) == 1 else None
        template = _META_TEMPLATES[key]
        if template is not None:
            return template.replace(b"9" * len(instance), instance.encode("ascii"))
    return _write_meta(meta)


def _write_meta(meta: FileMetaDataset) -> bytes:
    buf = DicomBytesIO()
    buf.is_implicit_VR, buf.is_little_endian = False, True
    # as dcmwrite does: on a copy, since writing adds the group length and version
    write_file_meta_info(buf, deepcopy(meta), enforce_standard=True)
    return buf.getvalue()


def _general(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _dataset(out: list[bytes], ds: Dataset, implicit: bool, parent: str | list[str]) -> None:
    if ds.original_encoding != (implicit, True) or (ds.original_character_set != ds._character_set):
        out.append(_pydicom_dataset(ds, implicit, parent))
        return
    encodings = ds.get("SpecificCharacterSet", parent)
    d = ds._dict
    for tag in sorted(d):
        if not tag & 0xFFFF and tag >> 16 > 6:
            continue  # retired group lengths are not written
        elem = d[tag]
        if type(elem) is RawDataElement:
            value = elem.value
            if isinstance(value, bytes) and elem.length != _UNDEFINED:
                n = len(value)
                if implicit:
                    out.append(_IMPLICIT.pack(tag >> 16, tag & 0xFFFF, n))
                    out.append(value)
                    continue
                vr = elem.VR
                if vr and len(vr) == 2:
                    if vr in _LONG_VRS:
                        out.append(_EXPLICIT_LONG.pack(tag >> 16, tag & 0xFFFF, vr.encode(), 0, n))
                        out.append(value)
                        continue
                    if n <= 0xFFFF:
                        out.append(_EXPLICIT_SHORT.pack(tag >> 16, tag & 0xFFFF, vr.encode(), n))
                        out.append(value)
                        continue
        elif (
            type(elem) is DataElement
            and elem.VR == "SQ"
            and isinstance(elem.value, Sequence)
            and elem.value
        ):
            child = convert_encodings(encodings or [default_encoding])
            body: list[bytes] = []
            for item in elem.value:
                _item(body, item, implicit, child)
            blob = b"".join(body)
            n = _UNDEFINED if elem.is_undefined_length else len(blob)
            if implicit:
                out.append(_IMPLICIT.pack(tag >> 16, tag & 0xFFFF, n))
            else:
                out.append(_EXPLICIT_LONG.pack(tag >> 16, tag & 0xFFFF, b"SQ", 0, n))
            out.append(blob)
            if n == _UNDEFINED:
                out.append(_SEQ_DELIM)
            continue
        # get_item, as pydicom's writer: a raw element without a value is read and converted
        out.append(_pydicom_element(ds.get_item(tag), implicit, encodings))


def _item(out: list[bytes], item: Dataset, implicit: bool, encodings: list[str]) -> None:
    body: list[bytes] = []
    _dataset(body, item, implicit, encodings)
    blob = b"".join(body)
    undefined = getattr(item, "is_undefined_length_sequence_item", False)
    out.append(_IMPLICIT.pack(0xFFFE, _ITEM, _UNDEFINED if undefined else len(blob)))
    out.append(blob)
    if undefined:
        out.append(_ITEM_DELIM)


def _buffer(implicit: bool) -> DicomBytesIO:
    buf = DicomBytesIO()
    buf.is_implicit_VR, buf.is_little_endian = implicit, True
    return buf


def _pydicom_element(
    elem: DataElement | RawDataElement, implicit: bool, encodings: str | list[str] | None
) -> bytes:
    buf = _buffer(implicit)
    write_data_element(buf, elem, encodings)
    return buf.getvalue()


def _pydicom_dataset(ds: Dataset, implicit: bool, parent: str | list[str]) -> bytes:
    buf = _buffer(implicit)
    write_dataset(buf, ds, parent)
    return buf.getvalue()
