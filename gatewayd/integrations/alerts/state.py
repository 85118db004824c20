"""What the alert engine remembers per device, and the events it emits (plain frozen data)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from gatewayd.integrations.alerts.kinds import SEVERITY, Event, Kind, Severity
from gatewayd.models import OutOfRange, isoformat_utc


def to_ms(dt: datetime) -> datetime:
    """`dt` cut to whole milliseconds: the precision of the store and of every payload."""
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def alert_id(device: str, kind: Kind, raised_at: datetime) -> str:
    """Deterministic id of one alert episode (its raise, reminders and clear share it)."""
    key = "\x1f".join((device, kind.value, isoformat_utc(raised_at)))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest reading of a device seen so far (by measured time)."""

    id: str
    time: datetime
    session: str
    glucose_mgdl: float | None
    out_of_range: OutOfRange | None
    #: The rate used by the rules: the reading's own trend, else derived from the one before.
    rate_mgdl_min: float | None


@dataclass(frozen=True, slots=True)
class Active:
    """One raised, not yet cleared alert."""

    kind: Kind
    id: str
    raised_at: datetime
    #: When a person was last told (the raise or the last reminder).
    notified_at: datetime
    glucose_mgdl: float | None
    out_of_range: OutOfRange | None
    threshold: float | None

    @property
    def severity(self) -> Severity:
        """How urgent this alert is."""
        return SEVERITY[self.kind]


@dataclass(frozen=True, slots=True)
class DeviceState:
    """Everything the engine knows about one device."""

    device: str
    latest: Latest | None = None
    #: Active alerts in `Kind` order.
    active: tuple[Active, ...] = ()
    #: When the engine started watching a device that has never sent a reading (signal loss).
    watch_since: datetime | None = None

    def find(self, kind: Kind) -> Active | None:
        """The active alert of `kind`, if any."""
        return next((a for a in self.active if a.kind is kind), None)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One thing to tell the world: an alert was raised, is still on, or cleared."""

    device: str
    kind: Kind
    event: Event
    id: str
    #: When it happened: the measured time of the deciding reading, the moment the signal was
    #: lost (newest reading + signal_loss_minutes), or the clock for reminders.
    time: datetime
    raised_at: datetime
    glucose_mgdl: float | None
    out_of_range: OutOfRange | None
    trend_mgdl_min: float | None
    threshold: float | None
    predicted_mgdl: float | None = None
    reading_id: str | None = None
    #: Why a clear happened when it is not simply the condition ending (else None).
    reason: str | None = None

    @property
    def severity(self) -> Severity:
        """How urgent this alert is."""
        return SEVERITY[self.kind]
