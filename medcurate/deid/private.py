"""Retain Safe Private: keep only allow-listed private elements, remove every other one.

A private element is identified by its creator string and element byte, never by its raw tag,
because the block a creator lands in differs between files. Only numeric VRs are kept: a value
that is a number cannot carry a name.
"""

from __future__ import annotations

from pydicom.datadict import private_dictionary_VR
from pydicom.dataset import Dataset

from medcurate.deid.policy import safe_private_allow_list


def _creator_text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    return str(value or "").strip().rstrip("\x00").strip().lower()


def filter_private(ds: Dataset) -> int:
    """Remove non-allow-listed private elements of this dataset level; returns how many stayed.

    Sequences among the kept elements are not possible (only numeric VRs are kept), so callers
    need not recurse into private elements.
    """
    allowed, vrs = safe_private_allow_list()
    private_tags = [t for t in ds._dict if t.group & 1]
    if not private_tags:
        return 0
    creators: dict[tuple[int, int], str] = {}
    for t in private_tags:
        if 0x0010 <= t.element <= 0x00FF:
            creators[(t.group, t.element)] = _creator_text(ds.get_item(t).value)
    keep_blocks: set[tuple[int, int]] = set()
    kept = 0
    for t in private_tags:
        elem = t.element
        if elem < 0x1000:
            continue  # creators (decided below) and group lengths / reserved (removed)
        block = (t.group, elem >> 8)
        creator = creators.get(block)
        if creator is not None and (creator, elem & 0xFF) in allowed:
            raw = ds.get_item(t)
            vr: str | None = raw.VR if raw is not None else None
            if vr in (None, "UN"):
                try:
                    vr = private_dictionary_VR(t, _original_creator(ds, block))
                except KeyError:
                    vr = None
            if vr in vrs:
                keep_blocks.add(block)
                kept += 1
                continue
        del ds[t]
    for t in private_tags:
        if t.element < 0x1000 and not (
            0x0010 <= t.element <= 0x00FF and (t.group, t.element) in keep_blocks
        ):
            del ds[t]
    return kept


def _original_creator(ds: Dataset, block: tuple[int, int]) -> str:
    raw = ds.get_item((block[0] << 16) | block[1])
    value = raw.value if raw is not None else ""
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    return str(value).strip().rstrip("\x00").strip()
