"""Cheap checks on a file's bytes before any full parse: how deep do its sequences nest?

pydicom, the engine and the verifier all walk sequences recursively; a file nested 1,000 deep
(hostile or broken) would end in a ``RecursionError`` somewhere in the middle of a batch. Real
objects nest a handful of levels (structured reports a few dozen at most), so anything deeper than
``MAX_SEQUENCE_DEPTH`` is quarantined before it is parsed.

Each level needs at least one item, so a file with no more item tags than the limit cannot be too
deep: one ``bytes.count`` decides for almost every file. Only files with many items (enhanced
multi-frame, long structured reports) are walked, iteratively, element by element.
"""

from __future__ import annotations

import struct

from pydicom.datadict import dictionary_VR
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

MAX_SEQUENCE_DEPTH = 64
_ITEM_LE = b"\xfe\xff\x00\xe0"
_ITEM_BE = b"\xff\xfe\xe0\x00"
_UNDEFINED = 0xFFFFFFFF
_LONG = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR"})
_LONG |= {b"UT", b"UV"}
_TAG_LEN = struct.Struct("<HHL")
_EXPLICIT = struct.Struct("<HH2sH")
_UL = struct.Struct("<L")
_IMPLICIT_LE = ImplicitVRLittleEndian
_NOT_EXPLICIT_LE = frozenset({_IMPLICIT_LE, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian})


def too_deep(data: bytes, limit: int = MAX_SEQUENCE_DEPTH) -> bool | None:
    """True when sequences nest deeper than ``limit``; False when they do not; None when the
    bytes could not be walked here (other encodings, damage): the caller then checks the parsed
    dataset (:func:`dataset_depth`) and treats a ``RecursionError`` as too deep."""
    if data.count(_ITEM_LE) + data.count(_ITEM_BE) <= limit:
        return False
    try:
        return _scan(data, limit)
    except (struct.error, ValueError, IndexError):
        return None


def dataset_depth(ds: object, limit: int = MAX_SEQUENCE_DEPTH) -> int:
    """Nesting depth of a parsed dataset (iterative; stops counting past ``limit``)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(ds, 0)]
    while stack:
        current, depth = stack.pop()
        for elem in current:  # type: ignore[attr-defined]
            if elem.VR == "SQ":
                deepest = max(deepest, depth + 1)
                if deepest > limit:
                    return deepest
                stack.extend((item, depth + 1) for item in elem.value or [])
    return deepest


def _scan(data: bytes, limit: int) -> bool | None:
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    pos, ts = _skip_meta(data)
    if ts is None or (ts in _NOT_EXPLICIT_LE and ts != _IMPLICIT_LE):
        return None  # big endian, deflated or unknown: the parsed dataset is checked instead
    implicit = ts == _IMPLICIT_LE
    # stack of open containers: (end offset or -1 for undefined length, is a sequence)
    stack: list[tuple[int, bool]] = []
    depth = 0
    n = len(data)
    while pos + 8 <= n:
        while stack and stack[-1][0] >= 0 and pos >= stack[-1][0]:
            depth -= stack.pop()[1]
        group, elem, length = _TAG_LEN.unpack_from(data, pos)
        if group == 0xFFFE:
            pos += 8
            if elem == 0xE000:
                stack.append((pos + length if length != _UNDEFINED else -1, False))
            elif elem in (0xE00D, 0xE0DD):
                if not stack or stack[-1][0] >= 0:
                    return None
                depth -= stack.pop()[1]
            else:
                return None
            continue
        if implicit:
            tag = group << 16 | elem
            pos += 8
            try:
                is_sq = length == _UNDEFINED or dictionary_VR(tag) == "SQ"
            except KeyError:
                is_sq = length == _UNDEFINED
        else:
            _, _, vr, length = _EXPLICIT.unpack_from(data, pos)
            pos += 8
            if vr in _LONG:
                length = _UL.unpack_from(data, pos)[0]
                pos += 4
            is_sq = vr == b"SQ"
            if length == _UNDEFINED and not is_sq:
                if vr == b"UN":
                    return None  # an implicit-VR sequence inside UN: pydicom's way
                pos = _skip_fragments(data, pos)  # encapsulated pixel data
                continue
        if is_sq:
            depth += 1
            if depth > limit:
                return True
            stack.append((pos + length if length != _UNDEFINED else -1, True))
            continue
        pos += length
    return False


def _skip_meta(data: bytes) -> tuple[int, str | None]:
    """End of the file meta (group 2, explicit VR little endian) and its transfer syntax."""
    pos, ts = 132, None
    while pos + 8 <= len(data) and _EXPLICIT.unpack_from(data, pos)[0] == 2:
        _, elem, vr, length = _EXPLICIT.unpack_from(data, pos)
        pos += 8
        if vr in _LONG:
            length = _UL.unpack_from(data, pos)[0]
            pos += 4
        if length == _UNDEFINED:
            return pos, None
        if elem == 0x0010:
            ts = data[pos : pos + length].decode("ascii", "replace").strip("\x00 ")
        pos += length
    return pos, ts


def _skip_fragments(data: bytes, pos: int) -> int:
    while pos + 8 <= len(data):
        group, elem, length = _TAG_LEN.unpack_from(data, pos)
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            return pos
        if (group, elem) != (0xFFFE, 0xE000) or length == _UNDEFINED:
            raise ValueError("not an item")
        pos += length
    raise ValueError("no sequence delimiter")
