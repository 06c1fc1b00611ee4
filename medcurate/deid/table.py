"""PS3.15 Table E.1-1, vendored, resolved to one concrete action per attribute under our options.

The table is the single source of what happens to each attribute; the engine only looks actions up
here. Compound codes (X/Z, X/D, X/Z/D, Z/D) take their first action: the standard allows the
stricter one only when the IOD makes the attribute Type 1 or 2, which the engine handles where a
removal would break the object (see ``engine``), so the table stays IOD-agnostic.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from medcurate.deid.policy import DEFAULT_OPTIONS, Options

TABLE_FILE = "ps3.15-annex-e.json"


class Action(enum.Enum):
    """What the engine does to an attribute (resolved from the table's codes and the options)."""

    KEEP = "K"
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    CLEAN = "C"  # descriptors and patient-characteristic text: kept only when cleaned
    UID = "U"  # new UID, consistent across the set
    SHIFT = "S"  # dates and times: per-patient offset (Retain Longitudinal Modified Dates)
    UIDSEQ = "U*"  # sequence kept, UIDs inside replaced (X/Z/U*)
    SAFE_PRIVATE = "P"  # private attributes: removed unless on the safe allow-list
    # Not in the table (the engine's rules for unlisted attributes, see ``engine._vr_default``):
    TEXT = "T"  # unlisted free text: kept only when every word is safe vocabulary
    CODE = "CS"  # unlisted code string: kept only when it looks like a defined term


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1."""

    id: str
    name: str
    tag: str
    basic: str
    options: dict[str, str]


@cache
def load_rows() -> tuple[Row, ...]:
    """The 621 rows of the vendored table, in file order."""
    text = (resources.files("medcurate") / "data" / TABLE_FILE).read_text(encoding="utf-8")
    rows = []
    for r in json.loads(text):
        opts = {k: v for k, v in r.items() if k.endswith("Opt")}
        rows.append(Row(r["id"], r["name"], r["tag"], r["basicProfile"], opts))
    return tuple(rows)


def resolve(row: Row, options: Options = DEFAULT_OPTIONS) -> Action:
    """The action for one row under the selected options (an option column overrides basic)."""
    o = row.options
    if options.retain_patient_characteristics and "rtnPatCharsOpt" in o:
        return Action.KEEP if o["rtnPatCharsOpt"] == "K" else Action.CLEAN
    if options.retain_safe_private and "rtnSafePrivOpt" in o:
        return Action.SAFE_PRIVATE
    if options.retain_longitudinal_modified_dates and o.get("rtnLongModifDatesOpt") == "C":
        return Action.SHIFT
    if options.clean_descriptors and o.get("cleanDescOpt") == "C":
        return Action.CLEAN
    if options.retain_device_identity and "rtnDevIdOpt" in o:
        return Action.KEEP if o["rtnDevIdOpt"] == "K" else Action.CLEAN
    if options.retain_institution_identity and "rtnInstIdOpt" in o:
        return Action.KEEP
    if options.retain_uids and "rtnUIDsOpt" in o:
        return Action.KEEP
    code = row.basic
    if code == "X/Z/U*":
        return Action.UIDSEQ
    first = code.split("/")[0]
    return {
        "X": Action.REMOVE,
        "Z": Action.EMPTY,
        "D": Action.DUMMY,
        "U": Action.UID,
        "K": Action.KEEP,
        "C": Action.CLEAN,
    }[first]


@dataclass(frozen=True)
class ActionTable:
    """Fast lookup: exact tags, and the repeating-group rows (50xx,xxxx), (60xx,3000/4000)."""

    by_tag: dict[int, Action]
    private: Action
    curve: Action
    overlay_data: Action
    overlay_comments: Action

    def lookup(self, tag: int) -> Action | None:
        """The action for a standard (even-group) tag, or None when the table does not list it."""
        a = self.by_tag.get(tag)
        if a is not None:
            return a
        group = tag >> 16
        if 0x5000 <= group <= 0x50FF and not group & 1:
            return self.curve
        if 0x6000 <= group <= 0x60FF and not group & 1:
            elem = tag & 0xFFFF
            if elem == 0x3000:
                return self.overlay_data
            if elem == 0x4000:
                return self.overlay_comments
        return None


@cache
def action_table(options: Options = DEFAULT_OPTIONS) -> ActionTable:
    """Resolve every row once; the engine calls ``lookup`` per element."""
    by_tag: dict[int, Action] = {}
    special: dict[str, Action] = {}
    for row in load_rows():
        action = resolve(row, options)
        if all(c in "0123456789abcdef" for c in row.id) and len(row.id) == 8:
            by_tag[int(row.id, 16)] = action
        else:
            special[row.id] = action
    return ActionTable(
        by_tag=by_tag,
        private=special["ggggeeee-where-gggg-is-odd"],
        curve=special["50xxxxxx"],
        overlay_data=special["60xx3000"],
        overlay_comments=special["60xx4000"],
    )
