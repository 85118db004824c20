"""The meter's clock: Current Time Service (CTS, 0x1805) Current Time (0x2A2B), pure codec.

A glucose record carries the meter's calendar (Base Time + Time Offset), never a time the hub
can trust by itself. A meter that also serves CTS says what its calendar reads now, so the hub
can anchor every record to its own clock: ``time = hub_now - (meter_now - record_time)``.

Current Time (CTS 1.1 §3.1, "Exact Time 256" + Adjust Reason), 10 bytes, little endian:
Date Time (year u16, month, day, hours, minutes, seconds), Day of Week (1 = Monday .. 7, 0 =
unknown), Fractions256 (1/256 s), Adjust Reason (bit 0 manual time update, bit 1 external
reference time update, bit 2 change of time zone, bit 3 change of DST). The characteristic is
readable and notifiable: a meter notifies it when its clock is set (by the user: bit 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from enum import IntFlag

import construct as cs

from protocols.codec import build_construct, parse_construct
from protocols.errors import ProtocolError
from protocols.gatt.date_time import DATE_TIME, DateTime

__all__ = [
    "CURRENT_TIME",
    "CURRENT_TIME_SERVICE",
    "CURRENT_TIME_VALUE",
    "AdjustReason",
    "CurrentTime",
]

CURRENT_TIME_SERVICE = "00001805-0000-1000-8000-00805f9b34fb"
CURRENT_TIME = "00002a2b-0000-1000-8000-00805f9b34fb"

CURRENT_TIME_VALUE = cs.Struct(
    "time" / DATE_TIME,
    "day_of_week" / cs.Int8ul,
    "fractions256" / cs.Int8ul,
    "adjust_reason" / cs.Int8ul,
)
_SIZE = CURRENT_TIME_VALUE.sizeof()


class AdjustReason(IntFlag):
    """Why the clock was last set (CTS Adjust Reason)."""

    NONE = 0x00
    MANUAL_TIME_UPDATE = 0x01
    EXTERNAL_REFERENCE_TIME_UPDATE = 0x02
    CHANGE_OF_TIME_ZONE = 0x04
    CHANGE_OF_DST = 0x08


@dataclass(frozen=True, slots=True)
class CurrentTime:
    """One Current Time value."""

    time: DateTime
    day_of_week: int = 0
    fractions256: int = 0
    adjust_reason: AdjustReason = AdjustReason.NONE

    @classmethod
    def parse(cls, data: bytes) -> CurrentTime:
        """Decode a read or notified value (`ProtocolError` when it is not 10 bytes)."""
        if len(data) != _SIZE:
            raise ProtocolError(f"current time: {len(data)} bytes, not 10", bytes(data))
        c = parse_construct(CURRENT_TIME_VALUE, data, "current time")
        return cls(
            DateTime.from_container(c.time),
            c.day_of_week,
            c.fractions256,
            AdjustReason(c.adjust_reason & 0x0F),
        )

    def build(self) -> bytes:
        """The 10 bytes of this value."""
        fields = {
            "time": self.time.as_dict(),
            "day_of_week": self.day_of_week,
            "fractions256": self.fractions256,
            "adjust_reason": int(self.adjust_reason),
        }
        return build_construct(CURRENT_TIME_VALUE, fields, "current time")

    @classmethod
    def from_datetime(cls, when: datetime, reason: AdjustReason = AdjustReason.NONE) -> CurrentTime:
        """`when` as it reads on its own clock (its tzinfo is dropped)."""
        return cls(
            DateTime.from_datetime(when),
            when.isoweekday(),
            when.microsecond * 256 // 1_000_000,
            reason,
        )

    def to_datetime(self, tz: tzinfo) -> datetime | None:
        """The meter's now, read in `tz`; None when the date is unknown or invalid."""
        when = self.time.to_datetime(tz)
        if when is None:
            return None
        return when + timedelta(seconds=self.fractions256 / 256)
