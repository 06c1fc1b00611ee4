"""Per-patient shifts: intervals exact, times without dates shifted, garbage rejected."""

import datetime as dt

from medcurate.deid.dates import MIN_DAYS, DateShifter
from medcurate.deid.pseudonyms import Keyer


def test_offset_is_per_patient_and_keyed() -> None:
    k = Keyer(b"date-salt-123")
    a, b = DateShifter.for_patient(k, ("id", "", "A")), DateShifter.for_patient(k, ("id", "", "B"))
    assert (a.days, a.seconds) == (DateShifter.for_patient(k, ("id", "", "A")).days, a.seconds)
    assert (a.days, a.seconds) != (b.days, b.seconds)
    assert a.days >= MIN_DAYS and 0 <= a.seconds < 86400


def test_intervals_exact() -> None:
    s = DateShifter(400, 3600 * 5 + 17)
    d1, t1 = s.shift_da_tm("20200101", "230000")  # type: ignore[misc]
    d2, t2 = s.shift_da_tm("20200102", "010000")  # type: ignore[misc]
    p = lambda d, t: dt.datetime.strptime(d + t, "%Y%m%d%H%M%S")  # noqa: E731
    assert p(d2, t2) - p(d1, t1) == dt.timedelta(hours=2)
    assert s.shift_da("2020.01.01") == (dt.date(2020, 1, 1) - dt.timedelta(days=400)).strftime(
        "%Y%m%d"
    )
    x, y = s.shift_dt("20200101120000.5+0100"), s.shift_dt("20200103120000.5+0100")
    assert x is not None and y is not None and x.endswith(".5+0100")
    assert p(y[:8], y[8:14]) - p(x[:8], x[8:14]) == dt.timedelta(days=2)
    assert s.shift_dt("2020") is not None and len(s.shift_dt("2020") or "") == 4


def test_time_without_date_is_shifted_and_keeps_precision() -> None:
    s = DateShifter(400, 60)
    assert s.shift_tm("101500") == "101400"
    assert s.shift_tm("000030.123") == "235930.123"
    assert s.shift_tm("1015") == "1014"
    assert s.shift_tm("10:15:00") == "101400"


def test_garbage_is_rejected() -> None:
    s = DateShifter(400, 60)
    assert s.shift_da("not a date") is None and s.shift_da("20201301") is None
    assert s.shift_tm("99") is None and s.shift_dt("x") is None
