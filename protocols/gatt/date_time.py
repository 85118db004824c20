"""GATT Date Time (0x2A08 format, 7 bytes), used by CGMS Session Start Time, Glucose
Measurement base time, RACP user-facing-time filters and CTS Current Time.

* `DATE_TIME` — the construct of the layout (year uint16 with 0 = unknown, month, day, hours,
  minutes, seconds).
* `DateTime` — kept field by field because devices send invalid dates; `to_datetime(tz)` gives
  an aware datetime or None; `add_minutes(dt, n)` shifts one without ever overflowing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

import construct as cs

DATE_TIME = cs.Struct(
    "year" / cs.Int16ul,
    "month" / cs.Int8ul,
    "day" / cs.Int8ul,
    "hours" / cs.Int8ul,
    "minutes" / cs.Int8ul,
    "seconds" / cs.Int8ul,
)


@dataclass(frozen=True, slots=True)
class DateTime:
    """GATT Date Time (0x2A08 format), 7 bytes; 0 in year/month/day means "not known"."""

    year: int
    month: int
    day: int
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    @classmethod
    def from_container(cls, c: Any) -> DateTime:
        """From a parsed `DATE_TIME` container."""
        return cls(c.year, c.month, c.day, c.hours, c.minutes, c.seconds)

    @classmethod
    def from_datetime(cls, dt: datetime) -> DateTime:
        """The fields of `dt` as it reads on its own clock (its tzinfo is dropped)."""
        return cls(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)

    def as_dict(self) -> dict[str, int]:
        """Field dict for `DATE_TIME.build`."""
        return {
            "year": self.year,
            "month": self.month,
            "day": self.day,
            "hours": self.hours,
            "minutes": self.minutes,
            "seconds": self.seconds,
        }

    def to_datetime(self, tz: tzinfo) -> datetime | None:
        """An aware datetime in `tz`, or None when the date is unknown or invalid."""
        if not (self.year and self.month and self.day):
            return None
        try:
            return datetime(
                self.year, self.month, self.day, self.hours, self.minutes, self.seconds, tzinfo=tz
            )
        except ValueError:
            return None


def add_minutes(dt: datetime | None, minutes: int) -> datetime | None:
    """`dt` + `minutes`, or None when `dt` is None or the result leaves datetime's range
    (device dates up to year 65535 reach it)."""
    if dt is None:
        return None
    try:
        return dt + timedelta(minutes=minutes)
    except OverflowError:
        return None
