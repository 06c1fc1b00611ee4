"""A cheap structural walk over a DICOM file's element headers, before any full parse.

pydicom parses sequences recursively and accepts almost anything with ``force=True``: a zero-filled
20 MB file named ``.dcm`` takes seconds to refuse, and a sequence nested 1,000 deep raises
``RecursionError`` in whoever reads it next. This walk reads only element headers (tag, VR, length)
through a memory map, skips every value, and keeps its own stack (no recursion), so it answers in
milliseconds whatever the file size or depth:

- ``NOT_DICOM``: the first bytes are not a plausible start of a data set (no ``DICM`` prefix and no
  sensible first tag), or top-level tags run backwards (a real data set is sorted, PS3.5 7.1).
- ``SEQUENCE_TOO_DEEP``: sequences nest deeper than the configured limit.
- ``TRUNCATED``: an element's length (Pixel Data's included) runs past the end of the file.

Where the walk cannot follow the encoding (deflated files, VRs it does not know, stray items) it
gives no verdict and the full checks decide, as before.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import dictionary_VR
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

DEFAULT_MAX_DEPTH = 32

_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV"}
_LONG_VRS |= {b"UV"}
# Deflated Image Frame Compression (1.2.840.10008.1.2.8.1) has no pydicom constant yet (3.0).
_DEFLATED = {DeflatedExplicitVRLittleEndian, UID("1.2.840.10008.1.2.8.1")}
_BIG_ENDIAN = ExplicitVRBigEndian
_IMPLICIT = ImplicitVRLittleEndian
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


@dataclass(frozen=True)
class Verdict:
    """``code`` is None when the walk found nothing wrong (or could not tell)."""

    code: str | None = None
    message: str = ""


NO_VERDICT = Verdict()


class _GiveUp(Exception):
    """The walk cannot follow this encoding: leave the decision to the full parse."""


@dataclass
class _Frame:
    kind: str  # "dataset", "sequence" or "fragments"
    end: int | None  # None: undefined length, closed by a delimiter
    implicit: bool
    last_tag: int = -1


def inspect(path: Path, max_depth: int = DEFAULT_MAX_DEPTH) -> Verdict:
    """Walk ``path``'s element headers; a verdict when the file is refused, else ``NO_VERDICT``."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            return NO_VERDICT
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                return _inspect(buf, size, max_depth)
            except _GiveUp:
                return NO_VERDICT


def _inspect(buf: mmap.mmap, size: int, max_depth: int) -> Verdict:
    if size >= 132 and buf[128:132] == b"DICM":
        pos, ts = _file_meta(buf, 132, size)
        if ts in _DEFLATED:
            return NO_VERDICT
        if ts is None:
            implicit, little = _guess_encoding(buf, pos, size)
        else:
            implicit, little = ts == _IMPLICIT, ts != _BIG_ENDIAN
        return _walk(buf, pos, size, implicit, little, max_depth)
    if not _plausible_start(buf, size):
        return Verdict("NOT_DICOM", "NOT_DICOM: no DICM prefix and not a DICOM data set")
    pos = 0
    if _u16(buf, 0, True) == 0x0002:  # File Meta Information without the preamble
        pos, ts = _file_meta(buf, 0, size)
        if ts in _DEFLATED:
            return NO_VERDICT
    implicit, little = _guess_encoding(buf, pos, size)
    verdict = _walk(buf, pos, size, implicit, little, max_depth)
    # Without a prefix the encoding is a guess: only the depth limit is certain.
    return verdict if verdict.code == "SEQUENCE_TOO_DEEP" else NO_VERDICT


def _u16(buf: mmap.mmap, pos: int, little: bool) -> int:
    return int(struct.unpack_from("<H" if little else ">H", buf, pos)[0])


def _u32(buf: mmap.mmap, pos: int, little: bool) -> int:
    return int(struct.unpack_from("<I" if little else ">I", buf, pos)[0])


def _tag(buf: mmap.mmap, pos: int, little: bool) -> int:
    return (_u16(buf, pos, little) << 16) | _u16(buf, pos + 2, little)


def _is_vr(b: bytes) -> bool:
    return len(b) == 2 and 65 <= b[0] <= 90 and 65 <= b[1] <= 90


def _plausible_start(buf: mmap.mmap, size: int) -> bool:
    """A bare data set starts with an even group between 0002 and 7FE0 (a zero file: 0000)."""
    if size < 8:
        return False
    group = _u16(buf, 0, True)
    return group % 2 == 0 and 0x0002 <= group <= 0x7FE0


def _guess_encoding(buf: mmap.mmap, pos: int, size: int) -> tuple[bool, bool]:
    """(implicit, little endian) as pydicom guesses it: explicit when a VR follows the tag."""
    if pos + 6 > size:
        return True, True
    return not _is_vr(bytes(buf[pos + 4 : pos + 6])), True


def _file_meta(buf: mmap.mmap, pos: int, size: int) -> tuple[int, str | None]:
    """Skip the group 0002 elements (explicit VR little endian); return (end, transfer syntax)."""
    ts = None
    while pos + 8 <= size and _u16(buf, pos, True) == 0x0002:
        tag = _tag(buf, pos, True)
        vr = bytes(buf[pos + 4 : pos + 6])
        if not _is_vr(vr):
            raise _GiveUp
        if vr in _LONG_VRS:
            if pos + 12 > size:
                raise _GiveUp
            length, start = _u32(buf, pos + 8, True), pos + 12
        else:
            length, start = _u16(buf, pos + 6, True), pos + 8
        if length == _UNDEFINED or start + length > size:
            raise _GiveUp
        if tag == 0x00020010:
            ts = bytes(buf[start : start + length]).rstrip(b"\0 ").decode("ascii", "replace")
        pos = start + length
    return pos, ts


def _walk(
    buf: mmap.mmap, pos: int, size: int, implicit: bool, little: bool, max_depth: int
) -> Verdict:
    stack = [_Frame("dataset", None, implicit)]
    depth = 0
    while True:
        top = stack[-1]
        if top.end is not None and pos >= top.end:
            if pos > top.end:
                raise _GiveUp  # lengths disagree: pydicom's business
            depth -= stack.pop().kind == "sequence"
            if not stack:
                return NO_VERDICT
            continue
        if len(stack) == 1 and pos == size:
            return NO_VERDICT
        if pos + 8 > size:
            return Verdict("TRUNCATED", f"TRUNCATED: the file ends inside an element at byte {pos}")
        tag = _tag(buf, pos, little)
        if top.kind in ("sequence", "fragments"):
            if tag == _SEQ_END:
                pos += 8
                depth -= stack.pop().kind == "sequence"
                continue
            if tag != _ITEM:
                raise _GiveUp
            length = _u32(buf, pos + 4, little)
            pos += 8
            if top.kind == "fragments":
                if length == _UNDEFINED:
                    raise _GiveUp
                if pos + length > size:
                    return _past_end("a Pixel Data fragment", length, pos, size)
                pos += length
                continue
            if length != _UNDEFINED and pos + length > size:
                raise _GiveUp  # pydicom stops at the end of the file: the full checks decide
            stack.append(
                _Frame("dataset", None if length == _UNDEFINED else pos + length, top.implicit)
            )
            continue
        if tag in (_ITEM_END, _SEQ_END):
            if len(stack) == 1:
                raise _GiveUp
            pos += 8
            stack.pop()
            if tag == _SEQ_END and stack[-1].kind == "sequence":
                stack.pop()
                depth -= 1
            continue
        if tag <= top.last_tag:
            if len(stack) == 1 and (tag >> 16) == 0 and (top.last_tag >> 16) == 0:
                return Verdict("NOT_DICOM", "NOT_DICOM: repeated group 0000 elements")
            raise _GiveUp
        top.last_tag = tag
        vr: bytes | None
        if top.implicit:
            length, pos = _u32(buf, pos + 4, little), pos + 8
            try:
                vr = dictionary_VR(tag).encode()[:2]
            except KeyError:
                vr = None
        else:
            vr = bytes(buf[pos + 4 : pos + 6])
            if not _is_vr(vr):
                raise _GiveUp
            if vr in _LONG_VRS:
                if pos + 12 > size:
                    return Verdict("TRUNCATED", "TRUNCATED: the file ends inside an element header")
                length, pos = _u32(buf, pos + 8, little), pos + 12
            else:
                length, pos = _u16(buf, pos + 6, little), pos + 8
        if length == _UNDEFINED:
            if tag in _PIXEL_TAGS or vr in (b"OB", b"OW"):
                stack.append(_Frame("fragments", None, top.implicit))
                continue
            if vr not in (b"SQ", b"UN", None):
                raise _GiveUp
            depth += 1
            if depth > max_depth:
                return _too_deep(max_depth)
            stack.append(_Frame("sequence", None, top.implicit or vr == b"UN"))
            continue
        if pos + length > size:
            if len(stack) > 1:
                raise _GiveUp
            what = "Pixel Data" if tag in _PIXEL_TAGS else f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
            return _past_end(what, length, pos, size)
        if vr == b"SQ" and length:
            depth += 1
            if depth > max_depth:
                return _too_deep(max_depth)
            stack.append(_Frame("sequence", pos + length, top.implicit))
            continue
        pos += length


def _too_deep(max_depth: int) -> Verdict:
    return Verdict(
        "SEQUENCE_TOO_DEEP", f"SEQUENCE_TOO_DEEP: sequences nest deeper than {max_depth} levels"
    )


def _past_end(what: str, length: int, pos: int, size: int) -> Verdict:
    return Verdict(
        "TRUNCATED",
        f"TRUNCATED: {what} of {length} bytes needs {pos + length - size} bytes past the end of "
        f"the file ({size} bytes)",
    )
