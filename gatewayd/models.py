"""The normalized record every driver produces: one `Reading` per glucose value.

mg/dL is canonical; mmol/L exists only at the edge (`MGDL_PER_MMOLL`, one decimal). Every
timestamp is timezone-aware UTC. The id is deterministic (driver, sensor serial, sensor session,
device-side sequence), so a reading sent twice — a backfill overlapping live data, a replay after
a crash, two hubs in range of one sensor — is the same reading everywhere.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

#: mg/dL per mmol/L (glucose molar mass 180.156 g/mol; Nightscout uses 18.01559).
MGDL_PER_MMOLL = 18.0156

OutOfRange = Literal["low", "high"]


class Direction(StrEnum):
    """Trend arrows in Nightscout's vocabulary (the strings integrators already parse)."""

    DOUBLE_UP = "DoubleUp"
    SINGLE_UP = "SingleUp"
    FORTY_FIVE_UP = "FortyFiveUp"
    FLAT = "Flat"
    FORTY_FIVE_DOWN = "FortyFiveDown"
    SINGLE_DOWN = "SingleDown"
    DOUBLE_DOWN = "DoubleDown"
    NOT_COMPUTABLE = "NOT COMPUTABLE"
    RATE_OUT_OF_RANGE = "RATE OUT OF RANGE"
    NONE = "NONE"

    @classmethod
    def from_rate(cls, rate_mgdl_min: float | None) -> Direction:
        """Arrow for a rate of change, with xDrip's thresholds (1, 2, 3.5 mg/dL/min)."""
        if rate_mgdl_min is None:
            return cls.NONE
        r = rate_mgdl_min
        if math.isnan(r):  # a rate that could not be computed
            return cls.NOT_COMPUTABLE
        if abs(r) > 40:  # no physiological glucose moves this fast: a sensor artefact
            return cls.RATE_OUT_OF_RANGE
        for limit, arrow in _FALLING:
            if r <= limit:
                return arrow
        for limit, arrow in _RISING:
            if r <= limit:
                return arrow
        return cls.DOUBLE_UP


_FALLING = (
    (-3.5, Direction.DOUBLE_DOWN),
    (-2.0, Direction.SINGLE_DOWN),
    (-1.0, Direction.FORTY_FIVE_DOWN),
)
_RISING = ((1.0, Direction.FLAT), (2.0, Direction.FORTY_FIVE_UP), (3.5, Direction.SINGLE_UP))


#: The units glucose is shown to people in (`[hub] unit`, `export --unit`).
UNITS = ("mg/dL", "mmol/L")


def mgdl_to_mmoll(mgdl: float) -> float:
    """mmol/L rounded to one decimal, as shown to people."""
    return round(mgdl / MGDL_PER_MMOLL, 1)


def utc(dt: datetime) -> datetime:
    """`dt` as aware UTC; a naive datetime is refused rather than guessed."""
    if dt.tzinfo is UTC:  # the usual case, twice per reading: no conversion to make
        return dt
    if dt.tzinfo is None:
        raise ValueError("naive datetime: every timestamp must carry a timezone")
    return dt.astimezone(UTC)


def isoformat_utc(dt: datetime) -> str:
    """ISO-8601 with millisecond precision and a `Z` suffix (what JavaScript's Date emits)."""
    return utc(dt).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reading_id(driver: str, serial: str, session: str, seq: int) -> str:
    """Deterministic id of one reading: the same sensor record always hashes the same.

    The hub is deliberately not part of it: two hubs hearing one sensor publish one reading.
    """
    key = "\x1f".join((driver, serial, session, str(seq)))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """What a device says about itself (from Device Information, auth, or the driver)."""

    manufacturer: str
    model: str
    serial: str
    firmware: str | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """One glucose value from one sensor, as stored and published.

    `seq` is the device-side sequence number or time offset within `session`; together with
    the driver and sensor serial it makes `id`. `glucose_mgdl` is None exactly when the value
    is outside the sensor's measurable range, and then `out_of_range` says which side.
    """

    device: str
    driver: str
    serial: str
    session: str
    seq: int
    time: datetime
    received: datetime
    glucose_mgdl: float | None
    out_of_range: OutOfRange | None = None
    trend_mgdl_min: float | None = None
    direction: Direction = Direction.NONE
    quality_pct: float | None = None
    status: tuple[str, ...] = ()
    backfilled: bool = False
    id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", utc(self.time))
        object.__setattr__(self, "received", utc(self.received))
        if (self.glucose_mgdl is None) == (self.out_of_range is None):
            raise ValueError("a reading has either a glucose value or an out-of-range marker")
        if not self.id:
            rid = reading_id(self.driver, self.serial, self.session, self.seq)
            object.__setattr__(self, "id", rid)

    @property
    def glucose_mmoll(self) -> float | None:
        """The value in mmol/L, one decimal (None when out of range)."""
        return None if self.glucose_mgdl is None else mgdl_to_mmoll(self.glucose_mgdl)
