"""Per-patient shifts: one calendar day lands on one shifted day and one time of day on one
shifted time, whatever carries them (DA alone, DA+TM, TM alone, DT with or without offset or
precision); date intervals stay exact; garbage is rejected."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from medcurate.deid.dates import MIN_DAYS, SPAN_DAYS, DateShifter
from medcurate.deid.engine import Deidentifier
from medcurate.deid.pseudonyms import Keyer
from tests.deid_helpers import ct_instance

FAST = settings(max_examples=200, deadline=None)

# Patients' shifters as de-identification derives them (keyed by salt and patient).
shifter_st = st.builds(
    lambda salt, pid: DateShifter.for_patient(Keyer(salt), (pid, "", "")),
    st.binary(min_size=8, max_size=32),
    st.text(min_size=1, max_size=16),
)
instant_st = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 12, 31))
offset_st = st.sampled_from(["", "+0000", "+0100", "-0500", "+1400", "-1200", "+0530"])
frac_st = st.sampled_from(["", ".5", ".123456"])


def _da(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d")


def _tm(t: dt.datetime) -> str:
    return t.strftime("%H%M%S")


def _moved_day(s: DateShifter, t: dt.datetime) -> str:
    return _da(t - dt.timedelta(days=s.days))


def _moved_time(s: DateShifter, t: dt.datetime) -> str:
    """The time of day back by the seconds, on a clock that wraps at midnight."""
    secs = (t.hour * 3600 + t.minute * 60 + t.second - s.seconds) % 86400
    return f"{secs // 3600:02d}{secs % 3600 // 60:02d}{secs % 60:02d}"


def _instant(da: str, tm: str) -> dt.datetime:
    return dt.datetime.strptime(da + tm[:6], "%Y%m%d%H%M%S")


@FAST
@given(shifter_st, instant_st, offset_st, frac_st, st.sampled_from([2, 4, 6]))
def test_a_day_with_or_without_its_time_lands_on_one_shifted_day(
    s: DateShifter, t: dt.datetime, tz: str, frac: str, width: int
) -> None:
    """The gap: StudyDate alone moved by the days, StudyDate+StudyTime (or a DT) by days and
    seconds, so a time earlier in the day than the seconds part rolled back one more day."""
    t = t.replace(microsecond=0, second=t.second if width == 6 else 0)
    t = t.replace(minute=t.minute if width >= 4 else 0)  # the time as far as it is written
    day, time = _moved_day(s, t), _moved_time(s, t)[:width] + (frac if width == 6 else "")
    tm_text = _tm(t)[:width] + (frac if width == 6 else "")
    assert s.shift_da(_da(t)) == day
    assert s.shift_tm(tm_text) == time
    assert s.shift_da_tm(_da(t), tm_text) == (day, time)
    for value, want in (
        (_da(t) + tm_text + tz, day + time + tz),
        (_da(t) + tz, day + tz),
        (_da(t) + tm_text, day + time),
    ):
        assert s.shift_dt(value) == want, value


@FAST
@given(shifter_st, instant_st, instant_st)
def test_date_intervals_exact_time_intervals_exact_modulo_a_day(
    s: DateShifter, a: dt.datetime, b: dt.datetime
) -> None:
    a, b = a.replace(microsecond=0), b.replace(microsecond=0)
    pa, pb = s.shift_da_tm(_da(a), _tm(a)), s.shift_da_tm(_da(b), _tm(b))
    assert pa is not None and pb is not None
    got = _instant(*pb) - _instant(*pa)
    assert (got.days - (b - a).days) in (-1, 0, 1)  # the days between the dates are kept
    assert _instant(pb[0], "000000") - _instant(pa[0], "000000") == dt.timedelta(
        days=(b.date() - a.date()).days
    )
    assert got.seconds == (b - a).seconds  # time of day differences kept modulo a day
    if s.seconds <= min(a.hour * 3600 + a.minute * 60 + a.second, b.hour * 3600 + b.minute * 60):
        assert got == b - a  # neither wrapped: the interval is exact
    da, db = s.shift_dt(_da(a) + _tm(a) + "+0100"), s.shift_dt(_da(b) + _tm(b) + "-0500")
    assert da is not None and db is not None
    assert _instant(db[:8], db[8:14]) - _instant(da[:8], da[8:14]) == got


@pytest.mark.parametrize("patient", ["P1", "P2", "P3", "P4", "P5"])
@pytest.mark.parametrize(
    "tm", ["000000", "000000.000001", "000001", "0030", "00", "115959", "235959.999999", "235960"]
)
def test_sweep_near_midnight(patient: str, tm: str) -> None:
    """Deterministic companion to the property: the hours either side of midnight, for patients
    of a fixed salt (each had its own seconds part under the old offset)."""
    s = DateShifter.for_patient(Keyer(b"sweep-salt"), (patient, "", ""))
    day = s.shift_da("20200301")
    assert day == (dt.date(2020, 3, 1) - dt.timedelta(days=s.days)).strftime("%Y%m%d")
    time = s.shift_tm(tm)
    assert time is not None and len(time) == len(tm) and time != tm
    assert s.shift_da_tm("20200301", tm) == (day, time)
    assert s.shift_dt("20200301" + tm + "+0100") == day + time + "+0100"
    assert s.shift_dt("20200301" + tm) == day + time
    assert s.shift_dt("2020030123") == day + (s.shift_tm("23") or "")


@FAST
@given(shifter_st, st.integers(1900, 2100), st.integers(1, 12))
def test_partial_precision_follows_the_middle_of_its_period(
    s: DateShifter, year: int, month: int
) -> None:
    """YYYY and YYYYMM have no day: they move with the middle of their period, so most of the
    days they stand for shift into the same year (month) as the partial value does."""
    y = s.shift_dt(f"{year:04d}")
    assert y is not None and len(y) == 4
    assert y == (s.shift_da(f"{year:04d}0702") or "")[:4]
    ym = s.shift_dt(f"{year:04d}{month:02d}+0100")
    assert ym is not None and len(ym) == 11 and ym.endswith("+0100")
    assert ym[:6] == (s.shift_da(f"{year:04d}{month:02d}15") or "")[:6]
    # monotone: consecutive periods never swap order
    nxt = s.shift_dt(f"{year + 1:04d}")
    assert nxt is not None and int(nxt) >= int(y)


def test_offset_is_per_patient_keyed_and_deterministic() -> None:
    k = Keyer(b"date-salt-123")
    a, b = DateShifter.for_patient(k, ("id", "", "A")), DateShifter.for_patient(k, ("id", "", "B"))
    again = DateShifter.for_patient(Keyer(b"date-salt-123"), ("id", "", "A"))
    assert (a.days, a.seconds) == (again.days, again.seconds)
    assert a.shift_dt("20200101000000") == again.shift_dt("20200101000000")
    assert (a.days, a.seconds) != (b.days, b.seconds)
    assert MIN_DAYS <= a.days < MIN_DAYS + SPAN_DAYS and 0 <= a.seconds < 86400
    assert DateShifter.for_patient(Keyer(b"other-salt-456"), ("id", "", "A")).days != a.days


def test_time_without_date_is_shifted_and_keeps_precision() -> None:
    s = DateShifter(400, 60)
    assert s.shift_tm("101500") == "101400"
    assert s.shift_tm("000030.123") == "235930.123"  # wraps, the date is not its business
    assert s.shift_tm("1015") == "1014"
    assert s.shift_tm("10:15:00") == "101400"  # ACR-NEMA form rewritten in the DICOM form
    assert s.shift_dt("20200101000030.123-0500") == "20181127235930.123-0500"


def test_old_style_date_and_leap_day() -> None:
    s = DateShifter(366, 86399)
    assert s.shift_da("2020.02.29") == "20190228"
    assert DateShifter(400).shift_da("20200301") == "20190126"
    assert s.shift_da_tm("2020-02-29", "23:59:59") == ("20190228", "000000")


def test_garbage_is_rejected() -> None:
    s = DateShifter(400)
    assert s.shift_da("not a date") is None and s.shift_da("20201301") is None
    assert s.shift_tm("99") is None and s.shift_tm("2460") is None and s.shift_dt("x") is None
    assert s.shift_dt("20200101246000") is None and s.shift_dt("20200230") is None
    assert s.shift_dt("2020013") is None and s.shift_dt("20200101+2500") is None
    assert s.shift_dt("2020010110.5") is None and s.shift_dt("202001+0160") is None
    assert s.shift_da_tm("20200101", "25") is None and s.shift_da_tm("2020", "10") is None


SALT = b"dates-engine-salt"


def _file(sop: str, **values: str) -> Dataset:
    ds = ct_instance(sop_uid="1.2.826.0.1.3680043.9.7777.1.1.1." + sop)
    for kw in ("StudyTime", "SeriesTime"):
        delattr(ds, kw)
    for kw, value in values.items():
        setattr(ds, kw, value)
    return ds


@pytest.mark.parametrize("tm", ["000000", "000001.5", "0030", "120000", "235959"])
def test_one_study_across_files_keeps_one_shifted_day(tm: str) -> None:
    """One study, its date seen with its time in some files and without it in others, and as DT
    with and without an offset: after de-identification every one names the same day."""
    eng = Deidentifier(SALT)
    files = [
        _file("1", StudyDate="20210305"),
        _file("2", StudyDate="20210305", StudyTime=tm, SeriesTime=tm),
        _file(
            "3",
            AcquisitionDate="20210305",
            AcquisitionTime=tm,
            ContentDate="20210305",
            ContentTime=tm,
            AcquisitionDateTime="20210305" + tm + "+0100",
        ),
        _file("4", AcquisitionDateTime="20210305" + tm[:2], ContentDate="20210305"),
    ]
    days: set[str] = set()
    for ds in files:
        eng.deidentify(ds)
        for kw in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            if kw in ds:
                days.add(str(ds[kw].value))
        if "AcquisitionDateTime" in ds:
            days.add(str(ds.AcquisitionDateTime)[:8])
    assert len(days) == 1 and days != {"20210305"}, days
    times = {
        str(ds[kw].value)
        for ds in files
        for kw in ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime")
        if kw in ds
    }
    assert len(times) == 1 and times != {tm}, times  # one shifted time too, not the source's
    assert str(files[2].AcquisitionDateTime)[8:] == times.pop() + "+0100"
