"""The vendored Table E.1-1 and how its codes resolve under our options."""

from collections import Counter

from medcurate.deid.policy import Options
from medcurate.deid.table import Action, action_table, load_rows, resolve


def test_table_is_complete_and_unchanged() -> None:
    rows = load_rows()
    assert len(rows) == 621
    basic = Counter(r.basic for r in rows)
    assert basic["X"] == 384 and basic["D"] == 92 and basic["U"] == 54 and basic["X/Z/U*"] == 2


def _by_id(i: str):  # type: ignore[no-untyped-def]
    return next(r for r in load_rows() if r.id == i)


def test_options_change_actions() -> None:
    assert resolve(_by_id("00100040")) is Action.KEEP  # sex, Retain Patient Characteristics
    assert resolve(_by_id("00101010")) is Action.KEEP  # age
    assert resolve(_by_id("0008103e")) is Action.CLEAN  # series description, Clean Descriptors
    assert resolve(_by_id("00080020")) is Action.SHIFT  # study date, Modified Dates
    assert resolve(_by_id("0020000d")) is Action.UID
    assert resolve(_by_id("00080080")) is Action.REMOVE  # institution name, X/Z/D -> X
    assert resolve(_by_id("00081140")) is Action.UIDSEQ
    assert resolve(_by_id("00181000")) is Action.REMOVE  # device serial: no device identity


def test_basic_profile_without_options() -> None:
    none = Options(False, False, False, False)
    assert resolve(_by_id("00100040"), none) is Action.EMPTY
    assert resolve(_by_id("00101010"), none) is Action.REMOVE
    assert resolve(_by_id("00080020"), none) is Action.EMPTY
    assert resolve(_by_id("0008103e"), none) is Action.REMOVE
    assert resolve(_by_id("00181000"), Options(retain_device_identity=True)) is Action.KEEP


def test_lookup_covers_repeating_groups() -> None:
    t = action_table()
    assert t.lookup(0x50023000) is Action.REMOVE  # curve data
    assert t.lookup(0x60024000) is Action.REMOVE  # overlay comments
    assert t.lookup(0x60020010) is None  # overlay rows: not in the table
    assert t.lookup(0x00100010) is Action.EMPTY
    assert t.private is Action.SAFE_PRIVATE
