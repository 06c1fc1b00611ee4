"""Per-patient date shifting (Retain Longitudinal Temporal Information with Modified Dates).

Each patient gets one keyed offset: whole days (365 to 4014 back) plus a number of seconds
(0 to 86399 back). A date alone moves by the days; a date-time (DT, or a DA with its matching TM)
moves by days and seconds together, so intervals between instants stay exact; a time without a
date moves by the seconds, wrapping at midnight. Values that cannot be parsed are returned as None
so the caller removes them (an unparsed date must never survive).
"""

from __future__ import annotations

import datetime as dt
import re

from medcurate.deid.pseudonyms import Keyer

MIN_DAYS = 365
SPAN_DAYS = 3650

_DA = re.compile(r"^(\d{4})[.\-]?(\d{2})[.\-]?(\d{2})$")
_TM = re.compile(r"^(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?(\.\d{1,6})?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+\-]\d{4})?$")


class DateShifter:
    """One patient's offset; methods take and return DICOM strings."""

    __slots__ = ("days", "seconds")

    def __init__(self, days: int, seconds: int) -> None:
        self.days = days
        self.seconds = seconds

    @classmethod
    def for_patient(cls, keyer: Keyer, key: tuple[str, ...]) -> DateShifter:
        h = int.from_bytes(keyer.digest("date-offset", *key)[:8], "big")
        return cls(MIN_DAYS + h % SPAN_DAYS, (h // SPAN_DAYS) % 86400)

    @property
    def delta(self) -> dt.timedelta:
        return dt.timedelta(days=self.days, seconds=self.seconds)

    def shift_da(self, value: str) -> str | None:
        m = _DA.match(value.strip())
        if not m:
            return None
        try:
            d = dt.date(int(m[1]), int(m[2]), int(m[3]))
            return (d - dt.timedelta(days=self.days)).strftime("%Y%m%d")
        except (ValueError, OverflowError):
            return None

    def shift_tm(self, value: str) -> str | None:
        parsed = _parse_tm(value)
        if parsed is None:
            return None
        secs, frac, width = parsed
        new = (secs - self.seconds) % 86400
        return _format_tm(new, frac, width)

    def shift_da_tm(self, da: str, tm: str) -> tuple[str, str] | None:
        """A date with its matching time, moved together (days and seconds)."""
        m = _DA.match(da.strip())
        parsed = _parse_tm(tm)
        if not m or parsed is None:
            return None
        secs, frac, width = parsed
        try:
            base = dt.datetime(int(m[1]), int(m[2]), int(m[3])) + dt.timedelta(seconds=secs)
            new = base - self.delta
        except (ValueError, OverflowError):
            return None
        new_secs = new.hour * 3600 + new.minute * 60 + new.second
        return new.strftime("%Y%m%d"), _format_tm(new_secs, frac, width)

    def shift_dt(self, value: str) -> str | None:
        m = _DT.match(value.strip())
        if not m:
            return None
        year, month, day, hour, minute, sec, frac, tz = m.groups()
        try:
            base = dt.datetime(
                int(year),
                int(month or 1),
                int(day or 1),
                int(hour or 0),
                int(minute or 0),
                int(sec or 0),
            )
            new = base - (self.delta if hour else dt.timedelta(days=self.days))
        except (ValueError, OverflowError):
            return None
        out = new.strftime("%Y%m%d%H%M%S")[
            : 4 + sum(2 for g in (month, day, hour, minute, sec) if g)
        ]
        return out + (frac or "") + (tz or "")


def _parse_tm(value: str) -> tuple[int, str, int] | None:
    """(seconds since midnight, fraction text, number of HHMMSS digits present)."""
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
