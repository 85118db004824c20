"""What the CGMS collector (`protocols.cgms.session.CgmsCollector`) reports: its events.

`receive()` and `timeout()` return them; the driver's flow (and the release rule,
`protocols.cgms.release`) acts on them. Pure values, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from protocols.cgms.measurement import CgmMeasurement
from protocols.cgms.socp import SocpPacket
from protocols.cgms.state import CgmFeature, CgmStatus
from protocols.gatt.session import SessionEvent

__all__ = [
    "BackfillComplete",
    "CgmsEvent",
    "GapDetected",
    "Measurement",
    "Ready",
    "ReportStarted",
    "SessionChanged",
    "SessionStopped",
    "SocpResponse",
]

CgmsEvent = SessionEvent  # what `receive()` / `timeout()` return


@dataclass(frozen=True, slots=True)
class Ready(CgmsEvent):
    """Setup is done (each field None when its read failed); the backfill comes next."""

    feature: CgmFeature | None
    status: CgmStatus | None
    session_start: datetime | None
    run_time_h: int | None
    interval_min: int | None


@dataclass(frozen=True, slots=True)
class Measurement(CgmsEvent):
    """One accepted CGM Measurement record."""

    record: CgmMeasurement
    time: datetime | None
    session_start: datetime | None
    backfill: bool

    @property
    def time_offset(self) -> int:
        """Minutes since session start (the record's key within its session)."""
        return self.record.time_offset


@dataclass(frozen=True, slots=True)
class ReportStarted(CgmsEvent):
    """A RACP report was asked for (it comes first in the next batch of events): offsets
    `first`..`last` as the request says them (`first` None: all records; `last` None: open
    end), of the session that started at `session_start` as known when it was asked."""

    first: int | None
    last: int | None
    session_start: datetime | None


@dataclass(frozen=True, slots=True)
class BackfillComplete(CgmsEvent):
    """A RACP report ended with success or "no records found"."""

    count: int
    first_offset: int | None
    last_offset: int | None


@dataclass(frozen=True, slots=True)
class GapDetected(CgmsEvent):
    """A live record came later than one interval after the last one; a backfill is queued."""

    expected_offset: int
    got_offset: int


@dataclass(frozen=True, slots=True)
class SessionChanged(CgmsEvent):
    """The sensor runs another session than the one `backfill_from` referred to."""

    session_start: datetime | None
    previous: datetime | None


@dataclass(frozen=True, slots=True)
class SessionStopped(CgmsEvent):
    """Status or a record says "session stopped"."""

    time_offset: int | None


@dataclass(frozen=True, slots=True)
class SocpResponse(CgmsEvent):
    """A SOCP indication (interval, alert level, calibration value or response code)."""

    packet: SocpPacket
