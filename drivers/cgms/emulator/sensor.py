"""The emulated CGMS sensor: its session, its clocks and its record memory (no radio here).

A session started at `start` (whole seconds, UTC). Two clocks:

* the **status clock** is the wall clock: CGM Status reports ``now - start`` in minutes, so a
  collector deriving ``start = now - offset`` finds the same start on every connection;
* the **record clock** says up to which time offset records exist. When the emulator starts the
  session has run `age` minutes; the records of the last `replay` of them are not made yet and
  are produced `speed` times faster than real time until the record clock has caught up, then in
  real time. It never passes the status clock, so no record is ever dated after the hub's now
  (records lag behind "now" during the replay, as a sensor with a delayed memory would).

The sensor's **calendar** is only seen in Session Start Time: the true start plus `clock_skew`
(a clock set wrong, or reset to its epoch 2000-01-01 by `reset_clock()`); no other value depends
on it, as on a real sensor whose offsets count from its own start.

Records lie on a grid of `interval` minutes from offset 0 and are pure functions of the seed,
the session and the offset (values from `drivers.emulation.physiology`: meals, insulin, dawn
rise, noise; below 40 / above 400 mg/dL a record carries -INF / +INF and the matching "result
lower/higher than the device can process" bits). The memory keeps the newest `capacity` records
of the current session; a new session (`restart`, SOCP "start the session") empties it.
Records at the offsets in `damaged` stay damaged in memory (`stored()`): every read brings them
with a wrong E2E-CRC (without E2E-CRC: flags that promise more fields than the record has).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from drivers.emulation.physiology import sample
from protocols.cgms.measurement import CgmMeasurement, StatusOctetOrder
from protocols.cgms.state import (
    CgmFeature,
    CgmFeatureBits,
    CgmStatus,
    SensorStatus,
    SessionRunTime,
    SessionStartTime,
)
from protocols.sfloat import SFloat, SFloatSpecial

__all__ = ["EPOCH", "POSITIONS", "CgmsSensor", "SensorConfig"]

#: Where a sensor's calendar starts again after a reset (`CgmsSensor.reset_clock`).
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
#: Positions in memory `SensorConfig.damaged` / `CgmsSensor.damage` accept besides offsets.
POSITIONS = ("start", "middle", "end")
_MAX_OFFSET = 0xFFFF  # uint16 minutes: a session cannot hold records beyond ~45.5 days
_NO_STATUS = SensorStatus(0)
_BASE_FEATURES = (
    CgmFeatureBits.SENSOR_MALFUNCTION_DETECTION
    | CgmFeatureBits.SENSOR_RESULT_HIGH_LOW_DETECTION
    | CgmFeatureBits.LOW_BATTERY_DETECTION
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SensorConfig:
    """What the emulated sensor is and can do (see `drivers.cgms.emulator` for each option)."""

    serial: str = "CGMSEMU0001"
    interval: int = 5
    age: float = 1440.0
    replay: float = 0.0
    speed: float = 1.0
    seed: int = 1
    e2e_crc: bool = True
    trend: bool = True
    quality: bool = True
    annunciation: SensorStatus = _NO_STATUS
    order: StatusOctetOrder = StatusOctetOrder.SIG
    pack: int = 4
    capacity: int = 20_000
    run_time_h: int = 336
    stopped: bool = False
    bonding: bool = False
    #: Refuse every pairing request (a sensor bonded elsewhere, not in pairing mode).
    refuse_bonding: bool = False
    ranges: bool = True
    #: A SOCP "start the session" (or `restart()` without arguments) begins a session this old,
    #: with this many of its minutes replayed: 0 / 0 = a fresh session in real time.
    restart_age: float = 0.0
    restart_replay: float = 0.0
    #: Seconds the sensor's calendar is off (its Session Start Time), + ahead / - behind.
    clock_skew: float = 0.0
    #: The calendar was reset to `EPOCH` when the emulator started (overrides `clock_skew`).
    clock_epoch: bool = False
    #: Records that stay damaged in memory: offsets, or "start" / "middle" / "end" of what the
    #: memory holds when the emulator starts.
    damaged: tuple[int | str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.interval <= 0xFE:
            raise ValueError(f"interval {self.interval} is not 1-254 minutes")
        if self.speed < 1 or not 0 <= self.replay <= self.age or self.pack < 1:
            raise ValueError("speed must be >= 1, 0 <= replay <= age and pack >= 1")
        if self.capacity < 1:
            raise ValueError("capacity must be >= 1")
        if any(isinstance(d, str) and d not in POSITIONS for d in self.damaged):
            raise ValueError(f"damaged positions are offsets or one of {POSITIONS}")


@dataclass(frozen=True, slots=True)
class _Session:
    start: datetime
    t0: float  # monotonic time when it began (or the emulator started)
    age: float  # minutes since `start` at t0
    made: float  # minutes of records already made at t0
    index: int = field(default=0)


class CgmsSensor:
    """One emulated sensor; `wall` and `monotonic` are injectable (tests run it on fake time)."""

    def __init__(
        self,
        config: SensorConfig,
        *,
        wall: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._wall = wall
        self._monotonic = monotonic
        self._session = self._begin(config.age, config.replay)
        self.stopped_at: int | None = None
        #: Offsets each past session held when it ended, by start (for tests' expectations).
        self.past: dict[datetime, range] = {}
        #: The sensor's calendar minus the true time (seen in Session Start Time only).
        self.clock_skew = timedelta(seconds=config.clock_skew)
        #: Offsets of the current session whose record stays damaged in memory.
        self.damaged: set[int] = set()
        if config.clock_epoch:
            self.reset_clock()
        self.damage(*config.damaged)
        if config.stopped:
            self.stop()

    # -- session -------------------------------------------------------------------------------

    def _begin(self, age: float, replay: float) -> _Session:
        start = (self._wall() - timedelta(minutes=age)).astimezone(UTC).replace(microsecond=0)
        index = int(start.timestamp()) // 60
        return _Session(start, self._monotonic(), age, age - replay, index)

    @property
    def start(self) -> datetime:
        """When the current session started (UTC, whole seconds)."""
        return self._session.start

    @property
    def stopped(self) -> bool:
        """Whether the session is stopped (no new records)."""
        return self.stopped_at is not None

    def restart(self, age: float | None = None, replay: float | None = None) -> None:
        """Begin a new session `age` minutes old, the last `replay` of them still to be made."""
        age = self.config.restart_age if age is None else age
        replay = self.config.restart_replay if replay is None else replay
        if not 0 <= replay <= age:
            raise ValueError("0 <= replay <= age")
        self.past[self.start] = self.offsets()
        self._session = self._begin(age, replay)
        self.stopped_at = None
        self.damaged.clear()  # a new memory

    def reset_clock(self) -> None:
        """The calendar starts again at `EPOCH` now (a battery change, a firmware reset)."""
        self.clock_skew = EPOCH - self._wall()

    def damage(self, *where: int | str) -> list[int]:
        """Damage the records at these offsets or positions ("start", "middle", "end" of the
        memory now) for good; returns their offsets."""
        held = self.offsets()
        named = {"start": 0, "middle": len(held) // 2, "end": len(held) - 1}
        offsets = [w if isinstance(w, int) else held[named[w]] for w in where]
        self.damaged.update(offsets)
        return offsets

    def stop(self) -> None:
        """Stop the session: the memory keeps what it has, no record is added."""
        if self.stopped_at is None:
            newest = self.newest()
            self.stopped_at = -1 if newest is None else newest

    # -- clocks --------------------------------------------------------------------------------

    def minutes(self) -> float:
        """Status clock: minutes since the session start (wall clock)."""
        return (self._wall() - self.start).total_seconds() / 60.0

    def status_offset(self) -> int:
        """CGM Status time offset: whole minutes since the start."""
        return max(0, min(_MAX_OFFSET, math.floor(self.minutes())))

    def _position(self) -> float:
        """Record clock: minutes since the start up to which records exist."""
        s = self._session
        elapsed = self._monotonic() - s.t0
        made = min(s.made + elapsed * self.config.speed / 60.0, s.age + elapsed / 60.0)
        return min(made, self.minutes())

    def newest(self) -> int | None:
        """Time offset of the newest record in memory (None: none yet)."""
        position = self._position()
        if self.stopped_at is not None:
            position = min(position, self.stopped_at)
        step = self.config.interval
        newest = min(math.floor(position / step) * step, _MAX_OFFSET // step * step)
        return newest if newest >= 0 else None

    def oldest(self) -> int | None:
        """Time offset of the oldest record still in memory."""
        newest = self.newest()
        if newest is None:
            return None
        return max(0, newest - (self.config.capacity - 1) * self.config.interval)

    def offsets(self, low: int | None = None, high: int | None = None) -> range:
        """The offsets in memory within [low, high] (None: unbounded), oldest first."""
        newest, oldest, step = self.newest(), self.oldest(), self.config.interval
        if newest is None or oldest is None:
            return range(0)
        first = oldest if low is None else max(oldest, -(-low // step) * step)
        last = newest if high is None else min(newest, high)
        return range(first, last + 1, step)

    def due_in(self) -> float | None:
        """Real seconds until the next record is made (0: already due; None: stopped)."""
        if self.stopped_at is not None:
            return None
        newest = self.newest()
        target = (newest + self.config.interval) if newest is not None else 0
        if target > _MAX_OFFSET:
            return None
        s = self._session
        elapsed = self._monotonic() - s.t0
        by_replay = (target - s.made) * 60.0 / self.config.speed
        by_real = (target - s.age) * 60.0
        by_wall = (target - self.minutes()) * 60.0
        return max(0.0, max(by_replay, by_real) - elapsed, by_wall)

    # -- values --------------------------------------------------------------------------------

    def record(self, offset: int) -> CgmMeasurement:
        """The record at `offset` of the current session (always the same)."""
        return _record(self.config, self._session.index, self.start, offset)

    def stored(self, offset: int) -> bytes:
        """The record at `offset` as the memory holds it (damaged ones stay damaged)."""
        data = bytearray(self.record(offset).build(self.config.order))
        if offset in self.damaged:
            if self.config.e2e_crc:
                data[2] ^= 0x01  # the CRC no longer matches
            else:  # the Size stays (framing holds); the flags promise trend + quality
                data[1:2] = bytes((data[1] | 0x03,))
                data = data[:6]
                data[0] = 6
        return bytes(data)

    def status_flags(self) -> SensorStatus:
        """CGM Status / annunciation bits right now."""
        flags = self.config.annunciation
        return flags | SensorStatus.SESSION_STOPPED if self.stopped else flags

    def status(self) -> CgmStatus:
        """The CGM Status value."""
        return CgmStatus(self.status_offset(), self.status_flags(), self.config.e2e_crc)

    def feature(self) -> CgmFeature:
        """The CGM Feature value."""
        bits = _BASE_FEATURES | CgmFeatureBits.MULTIPLE_SESSIONS
        if self.config.e2e_crc:
            bits |= CgmFeatureBits.E2E_CRC
        if self.config.trend:
            bits |= CgmFeatureBits.CGM_TREND_INFORMATION
        if self.config.quality:
            bits |= CgmFeatureBits.CGM_QUALITY
        return CgmFeature(bits)

    def session_start_time(self) -> SessionStartTime:
        """The Session Start Time value (UTC, zone 0, no DST)."""
        calendar = self.start + self.clock_skew
        return SessionStartTime.from_datetime(calendar, e2e_crc=self.config.e2e_crc)

    def run_time(self) -> SessionRunTime:
        """The Session Run Time value."""
        return SessionRunTime(self.config.run_time_h, self.config.e2e_crc)


@lru_cache(maxsize=65_536)
def _record(config: SensorConfig, index: int, start: datetime, offset: int) -> CgmMeasurement:
    s = sample(config.seed, index, offset, start.timestamp() + 60.0 * offset)
    status = config.annunciation
    glucose: SFloat | SFloatSpecial
    if s.glucose_mgdl is not None:
        glucose = SFloat(s.glucose_mgdl)
    elif s.out_of_range == "low":
        glucose = SFloatSpecial.NEGATIVE_INFINITY
        status |= SensorStatus.RESULT_BELOW_DEVICE_RANGE
    else:
        glucose = SFloatSpecial.POSITIVE_INFINITY
        status |= SensorStatus.RESULT_ABOVE_DEVICE_RANGE
    return CgmMeasurement(
        glucose=glucose,
        time_offset=offset,
        status=status,
        trend=SFloat.from_float(s.trend_mgdl_min) if config.trend else None,
        quality=SFloat.from_float(s.quality_pct) if config.quality else None,
        e2e_crc=config.e2e_crc,
    )
