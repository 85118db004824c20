"""The meter's calendar anchored to the hub's clock (the rule of docs/ble.md, "Clocks").

A record carries the meter's calendar (Base Time + Time Offset), which a person sets by hand,
or which restarts at the meter's epoch when its battery is changed. A meter that serves the
Current Time Service tells what its calendar reads now: the offset ``meter_now - hub_now`` is
measured at every connection (and again whenever the meter notifies a new Current Time), and a
record is dated ``record_time - offset`` = ``hub_now - (meter_now - record_time)``.

A record stamped before the calendar was last set carries the old calendar. Sequence numbers
give the bound that tells: a record newer than the newest stored reading was measured after it
(`floor`) and before now. A record the current offset dates outside that window is dated with
the offset measured before (on the last connection, or before the meter notified a new time)
if that one fits; if neither does (or the meter has no Current Time Service), its calendar is
taken as it is and the reading says so (status `UNVERIFIED`).

The reading's id does not depend on any of this (it is the sequence number): a meter whose
clock jumps never re-dates or repeats what was stored.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["STEADY", "TOLERANCE", "UNVERIFIED", "MeterClock"]

#: How far a dated record may lie outside its window (jitter of a GATT read, whole seconds of
#: the meter's calendar, a meter's quartz drifting between two connections).
TOLERANCE = timedelta(seconds=120)
#: A new measurement within this of the offset known is jitter (the request's time, the
#: calendar's whole seconds): the known offset is kept, so that records a second apart keep
#: their order on every connection.
STEADY = 2.0
#: Status of a reading whose time is the meter's calendar as it is (not anchored to the hub).
UNVERIFIED = "device_clock_unverified"


class MeterClock:
    """One meter's calendar against the hub's clock (see the module docstring)."""

    def __init__(self, *, previous: float | None = None, floor: datetime | None = None) -> None:
        #: Meter minus hub (seconds) as measured now (None: the meter has no clock to read).
        self.offset: float | None = None
        #: The offset measured before the last jump (or on the connection before).
        self.previous = previous
        #: The time of the newest reading stored: newer records were measured after it.
        self.floor = floor

    def measure(self, meter_now: datetime, hub_now: datetime) -> float:
        """One reading of the meter's calendar at `hub_now`; the new offset."""
        # whole seconds: the calendar has no finer grain, and records stay in order on it
        offset = float(round((meter_now - hub_now).total_seconds()))
        known = self.previous if self.offset is None else self.offset
        if known is not None and abs(offset - known) <= STEADY:
            offset = known
        if self.offset is not None and abs(offset - self.offset) > TOLERANCE.total_seconds():
            self.previous = self.offset
        self.offset = offset
        return offset

    def date(self, meter_time: datetime, hub_now: datetime) -> tuple[datetime, bool]:
        """The hub time of a record stamped `meter_time` (newer than `floor`), and whether it
        is anchored (else: the meter's calendar as it is)."""
        low = None if self.floor is None else self.floor - TOLERANCE
        for offset in (self.offset, self.previous):
            if offset is None:
                continue
            when = meter_time - timedelta(seconds=offset)
            if when <= hub_now + TOLERANCE and (low is None or when >= low):
                when = min(when, hub_now)
                self.floor = when if self.floor is None else max(self.floor, when)
                return when, True
        return meter_time, False
