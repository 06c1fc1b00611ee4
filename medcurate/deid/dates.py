"""Per-patient date shifting (Retain Longitudinal Temporal Information with Modified Dates).

Each patient gets one keyed offset: whole days (365 to 4014 back) plus a number of seconds
(0 to 86399 back). Every date moves by exactly the days, whatever carries it: a DA alone, a DA with
its matching TM (StudyDate/StudyTime), or the date part of a DT, with or without a UTC offset or
a time. Every time of day moves by the seconds, wrapping at midnight and never carrying into the
date: a TM alone, a TM beside its DA and the time part of a DT all move alike, so one instant
lands on one shifted instant in every file of a study.

Why the seconds never carry: a study's date is seen with its time in one file and without it in
another (StudyDate alone, StudyDate+StudyTime, AcquisitionDateTime). Moving a date-time by days
and seconds together rolled an instant earlier in the day than the seconds back one more day,
which the date alone could not follow: one calendar day landed on two shifted days. The price:
intervals between dates are exact, intervals between times are exact modulo a day, and two
times of one day either side of the wrap point swap order. The time of day still does not survive
(the verifier looks for it).

DT offsets label local time, so the date written beside one moves by the same days. A DT without a
day (YYYY, YYYYMM) moves with the middle of its period, so most of the days it stands for shift
into the same year or month as it does. Values that cannot be parsed are returned as None so the
caller removes them (an unparsed date must never survive).
"""

from __future__ import annotations

import datetime as dt
import re

from medcurate.deid.pseudonyms import Keyer

MIN_DAYS = 365
SPAN_DAYS = 3650

_DA = re.compile(r"^(\d{4})[.\-]?(\d{2})[.\-]?(\d{2})$")
_TM = re.compile(r"^(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?(\.\d{1,6})?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?((?:\d{2}){0,3}(?:\.\d{1,6})?)([+\-]\d{4})?$")


class DateShifter:
    """One patient's offset (days for dates, seconds for times); methods take and return DICOM
    strings."""

    __slots__ = ("days", "seconds")

    def __init__(self, days: int, seconds: int = 0) -> None:
        self.days = days
        self.seconds = seconds % 86400

    @classmethod
    def for_patient(cls, keyer: Keyer, key: tuple[str, ...]) -> DateShifter:
        h = int.from_bytes(keyer.digest("date-offset", *key)[:8], "big")
        return cls(MIN_DAYS + h % SPAN_DAYS, (h // SPAN_DAYS) % 86400)

    def _day(self, d: dt.date) -> str | None:
        try:
            return (d - dt.timedelta(days=self.days)).strftime("%Y%m%d")
        except OverflowError:
            return None

    def shift_da(self, value: str) -> str | None:
        m = _DA.match(value.strip())
        if not m:
            return None
        try:
            d = dt.date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            return None
        return self._day(d)

    def shift_tm(self, value: str) -> str | None:
        """Back by the seconds, wrapping at midnight; precision and fraction kept."""
        parsed = _parse_tm(value)
        if parsed is None:
            return None
        secs, frac, width = parsed
        return _format_tm((secs - self.seconds) % 86400, frac, width)

    def shift_da_tm(self, da: str, tm: str) -> tuple[str, str] | None:
        """A date with its matching time: each moves exactly as it would alone."""
        new_da, new_tm = self.shift_da(da), self.shift_tm(tm)
        if new_da is None or new_tm is None:
            return None
        return new_da, new_tm

    def shift_dt(self, value: str) -> str | None:
        m = _DT.match(value.strip())
        if not m:
            return None
        year, month, day, clock, tz = m.groups()
        if tz and not _valid_offset(tz):
            return None
        if clock and (not day or ("." in clock and clock.index(".") != 6)):
            return None  # a time needs its day, a fraction its seconds
        new_clock = self.shift_tm(clock) if clock else ""
        if new_clock is None:
            return None
        try:
            if day:
                moved = self._day(dt.date(int(year), int(month), int(day)))
            elif month:  # the middle of the month
                moved = self._day(dt.date(int(year), int(month), 15))
            else:
                moved = self._day(dt.date(int(year), 7, 2))  # the middle of the year
        except ValueError:
            return None
        if moved is None:
            return None
        width = 4 + (2 if month else 0) + (2 if day else 0)
        return moved[:width] + new_clock + (tz or "")


def _parse_tm(value: str) -> tuple[int, str, int] | None:
    """(seconds since midnight, fraction text, number of HHMMSS digits present); the DICOM or the
    ACR-NEMA (HH:MM:SS) form. A leap second counts as 59."""
    m = _TM.match(value.strip())
    if not m:
        return None
    hh, mm, ss, frac = m.groups()
    h, mi, s = int(hh), int(mm or 0), int(ss or 0)
    if h > 23 or mi > 59 or s > 60:
        return None
    width = 2 + (2 if mm else 0) + (2 if ss else 0)
    return h * 3600 + mi * 60 + min(s, 59), frac or "", width


def _format_tm(secs: int, frac: str, width: int) -> str:
    text = f"{secs // 3600:02d}{secs % 3600 // 60:02d}{secs % 60:02d}"[:width]
    return text + (frac if width == 6 else "")


def _valid_offset(tz: str) -> bool:
    """&ZZXX within the range the standard allows (-1200 to +1400)."""
    hours, minutes = int(tz[1:3]), int(tz[3:5])
    if minutes > 59:
        return False
    return hours <= 14 if tz[0] == "+" else hours <= 12
