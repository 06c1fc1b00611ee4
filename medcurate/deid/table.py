"""PS3.15 Table E.1-1, vendored, resolved to one concrete action per attribute under our options.

The table is the single source of what happens to each attribute; the engine only looks actions up
here. Compound codes (X/Z, X/D, X/Z/D, Z/D) resolve per (SOP class, attribute): ``resolve`` gives
the first action (what an unknown SOP class gets), ``ActionTable.lookup_in_iod`` the one the IOD
needs, from the attribute's PS3.3 type at its path (``iod``): D when Type 1, Z when Type 2, else
the first action; a code without the needed action takes the strongest it has (X/Z on a Type 1
attribute: Z; X/D on a Type 2 one: D). Conditional types are taken as their unconditional ones
(1C as 1, 2C as 2): the engine only meets attributes present in the source, and a present 1C/2C
attribute is one whose condition held or that the source was allowed to send, so keeping it (empty
or dummy) never makes the object less valid than its source, while removing it may. Plain X and
failed cleaning follow the same floor (``keep_conformant``): a Type 2 attribute is emptied, a Type 1
one gets a dummy, rather than leaving an object PACSs refuse; neither keeps any source value.
Sequences are never given dummy items: a Type 1 sequence the profile removes stays removed.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from medcurate.deid.iod import IodTypes
from medcurate.deid.policy import DEFAULT_OPTIONS, Options

TABLE_FILE = "ps3.15-annex-e.json"
COMPOUND_CODES = frozenset({"X/Z", "X/D", "Z/D", "X/Z/D"})
_NEEDS_DUMMY = frozenset({"1", "1C"})
_NEEDS_EMPTY = frozenset({"2", "2C"})


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


def resolve_compound(code: str, attr_type: str | None) -> Action:
    """A compound code's action for an attribute of PS3.3 type ``attr_type`` (None: Type 3 or not
    in the IOD): D when the IOD needs a value, Z when it needs presence, else the first action."""
    actions = code.split("/")
    wanted: tuple[str, ...]
    if attr_type in _NEEDS_DUMMY:
        wanted = ("D", "Z")
    elif attr_type in _NEEDS_EMPTY:
        wanted = ("Z", "D")
    else:
        wanted = ()
    for a in wanted:
        if a in actions:
            return Action.DUMMY if a == "D" else Action.EMPTY
    return Action.REMOVE if actions[0] == "X" else Action.EMPTY


def keep_conformant(action: Action, attr_type: str | None, sequence: bool = False) -> Action:
    """A removal the IOD does not allow becomes the least that keeps the object conformant: Z for
    Type 2/2C, D for Type 1/1C. Neither leaks: the value is gone either way. Not for a Type 1
    sequence: no dummy item can be made up, and keeping its items would keep what X removes."""
    if action is not Action.REMOVE:
        return action
    if attr_type in _NEEDS_EMPTY:
        return Action.EMPTY
    if attr_type in _NEEDS_DUMMY and not sequence:
        return Action.DUMMY
    return action


@dataclass(frozen=True)
class ActionTable:
    """Fast lookup: exact tags, and the repeating-group rows (50xx,xxxx), (60xx,3000/4000)."""

    by_tag: dict[int, Action]
    private: Action
    curve: Action
    overlay_data: Action
    overlay_comments: Action
    compound: dict[int, str] = field(default_factory=dict)
    """Tags whose action is the basic profile's compound code (no option overrides it)."""
    removed: frozenset[int] = frozenset()
    """Tags whose action is X (the IOD may ask for Z or D instead, see ``keep_conformant``)."""

    def depends_on_iod(self, tag: int) -> bool:
        """Whether the IOD may change this tag's action (compound codes, removals)."""
        if tag in self.compound or tag in self.removed:
            return True
        group = tag >> 16
        return (
            0x6000 <= group <= 0x60FF
            and not group & 1
            and self.lookup(tag) is Action.REMOVE
            and tag & 0xFFFF in (0x3000, 0x4000)
        )

    def lookup_in_iod(
        self, tag: int, path: tuple[int, ...], iod: IodTypes | None, sequence: bool = False
    ) -> Action | None:
        """The action for ``tag`` at ``path`` (tags from the top level down, ``tag`` last) in an
        object of the IOD ``iod``; None for an unknown SOP class gives the IOD-agnostic action."""
        action = self.lookup(tag)
        if iod is None:
            return action
        code = self.compound.get(tag)
        if code is not None:
            return resolve_compound(code, iod.type_of(path))
        if action is Action.REMOVE:
            return keep_conformant(action, iod.type_of(path), sequence)
        return action

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
    compound: dict[int, str] = {}
    for row in load_rows():
        action = resolve(row, options)
        if all(c in "0123456789abcdef" for c in row.id) and len(row.id) == 8:
            by_tag[int(row.id, 16)] = action
            if row.basic in COMPOUND_CODES and action is resolve_compound(row.basic, None):
                compound[int(row.id, 16)] = row.basic
        else:
            special[row.id] = action
    return ActionTable(
        by_tag=by_tag,
        private=special["ggggeeee-where-gggg-is-odd"],
        curve=special["50xxxxxx"],
        overlay_data=special["60xx3000"],
        overlay_comments=special["60xx4000"],
        compound=compound,
        removed=frozenset(t for t, a in by_tag.items() if a is Action.REMOVE),
    )
