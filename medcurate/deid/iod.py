"""PS3.3 attribute types per SOP class: what de-identification must not remove or empty.

X/Z, X/D, Z/D and X/Z/D mean: remove (or empty), unless the IOD needs the attribute; and whatever
the code, removing or emptying a value the IOD requires makes an object that PACSs refuse. The
types come from ``iod-types.json``, derived from the standard's module and macro tables by
``medcurate/data/build_iod_types.py`` (its provenance is in the file). An attribute of Table E.1-1
is addressed by its path: the tags from the top-level dataset down, so that a tag that is Type 1 in
one sequence and Type 3 at the top level is told apart. Only Type 1, 1C, 2 and 2C are listed; a
path that is not is Type 3 or not in the IOD.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

IOD_TYPES_FILE = "iod-types.json"
_MISS = object()
_MEMO_MAX = 4096


@cache
def _data() -> dict[str, Any]:
    text = (resources.files("medcurate") / "data" / IOD_TYPES_FILE).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def provenance() -> dict[str, Any]:
    """Where the vendored types come from (wheel, version, sha256, build date)."""
    prov: dict[str, Any] = _data()["provenance"]
    return prov


def _canonical(tag: int) -> int:
    """Repeating groups as the module tables write them: 60xx overlays as 6000, 50xx as 5000."""
    group = tag >> 16
    if (0x6000 <= group <= 0x60FF or 0x5000 <= group <= 0x50FF) and not group & 1:
        return (group & 0xFF00) << 16 | (tag & 0xFFFF)
    return tag


def path_key(path: tuple[int, ...]) -> str:
    """A path of tags as the table writes it: '00400555:0040a043:00080106'."""
    return ":".join(f"{_canonical(t):08x}" for t in path)


@dataclass(frozen=True)
class IodTypes:
    """The listed types of one IOD; None answers Type 3 or not in the IOD.

    ``paths``: attributes of Table E.1-1 that an action may remove or empty, by path.
    ``text``: other text attributes (those the engine's VR rules may empty) at the top level, by
    tag; ``text_nested``: the same inside sequences, with the strongest type they have in any.
    """

    iod: str
    paths: dict[str, str]
    text: dict[str, str]
    text_nested: dict[str, str]

    _memo: dict[tuple[int, ...], str | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    def type_of(self, path: tuple[int, ...]) -> str | None:
        hit = self._memo.get(path, _MISS)
        if hit is _MISS:
            if len(self._memo) >= _MEMO_MAX:  # paths come from the files: keep it bounded
                self._memo.clear()
            hit = self._memo[path] = self.paths.get(path_key(path))
        return hit  # type: ignore[return-value]

    def text_type(self, tag: int, nested: bool = False) -> str | None:
        return (self.text_nested if nested else self.text).get(f"{_canonical(tag):08x}")


@cache
def iod_types(sop_class_uid: str) -> IodTypes | None:
    """The types for a SOP class, or None when the vendored standard does not know it."""
    data = _data()
    iod = data["sop_classes"].get(sop_class_uid.strip(" \x00"))
    if iod is None:
        return None
    entry = data["iods"].get(iod, {})
    return IodTypes(
        iod, entry.get("paths", {}), entry.get("text", {}), entry.get("text_nested", {})
    )
