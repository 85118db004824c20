"""An emulated G5/G6 transmitter without its radio: id, clock, sensor sessions, record memory.

Transmitter time is whole seconds since activation, read from a `Clock` (activation =
`transmitter_age` before the clock's now when the transmitter is made). The transmitter measures
every `interval` seconds on a seed-derived phase, each measurement a second early now and then
(the verified capture has 300/300/299/300 s spacing, protocols.md §2.6). A measurement is a
record when a sensor session runs: for the first `warmup` seconds of a session its state is
warm-up (no glucose); after that the value is the simulated person's
(`drivers.emulation.physiology.sample(seed, session index, measurement index, wall time)`), state
OK, with the sensor's rate as trend; below 40 mg/dL it is 39 ("LOW"), above 400 it is 401.

The memory holds the records of the last `memory` seconds (default 24 h): a backfill gets the
ones in its range, and nothing that is not in memory. Everything is a pure function of the seed,
the sessions and the time, except the test hooks: `start_session()` (a new sensor: warm-up
again), `override(transmitter_time, state=..., display_only=..., glucose=...)` (e.g. a
needs-calibration or display-only record) and `status` (0x81: low battery).

Clock faults: measurements, sessions and warm-up follow the *true* time since activation
(`elapsed()`, `measurement_time`, `index_at`, `wall`); what the transmitter says (`now()`, the
time message, record timestamps) is that plus the counter's `skew` of the moment.
`jump_clock(skew)` changes it from now on (a counter that jumped; a negative skew down to
`-elapsed()`: reset to its epoch). A session start is reported as true start + skew (0 when
that is negative). A record keeps the timestamp it was measured with; when the counter goes
back, the memory is erased (the only way a G5/G6 clock goes back is a reset, a new activation,
which starts an empty memory; ours). `reset()`: the counter restarts at 0, the memory is
erased and a new sensor session starts. `damaged`: timestamps of records whose
stored bytes rotted (the emulator sends them with a bad buffer CRC).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from drivers.dexcom_g6.clock import Clock
from drivers.emulation.physiology import sample, stable_int
from protocols.dexcom_g6.auth import normalize_transmitter_id
from protocols.dexcom_g6.framing import NO_SESSION, STATUS_OK, TREND_NONE
from protocols.dexcom_g6.glucose import CalibrationState, GlucoseRecord, TransmitterTimeRx

INTERVAL: Final = 300
WARMUP: Final = 7200
MEMORY: Final = 86_400
TRANSMITTER_AGE: Final = 10 * 86_400
SESSION_AGE: Final = 86_400
#: What the transmitter reports for a reliable value below 40 / above 400 mg/dL (CGMBLEKit
#: treats >= 39 as a value and clamps to 40..400, protocols.md §2.5).
LOW_VALUE: Final = 39
HIGH_VALUE: Final = 401
#: The high nibble of the glucose word of a display-only value (`0x4058` in the capture).
DISPLAY_ONLY_FLAGS: Final = 0x4


@dataclass(frozen=True, slots=True)
class Override:
    """A test's change to one record (None: as computed)."""

    state: int | None = None
    display_only: bool | None = None
    glucose: int | None = None


class Transmitter:
    """A G5/G6 transmitter's clock, sessions and records (see the module docstring)."""

    def __init__(
        self,
        transmitter_id: str,
        *,
        clock: Clock,
        seed: int | None = None,
        transmitter_age: float = TRANSMITTER_AGE,
        session_age: float | None = SESSION_AGE,
        interval: int = INTERVAL,
        warmup: int = WARMUP,
        memory: int = MEMORY,
    ) -> None:
        self.transmitter_id = normalize_transmitter_id(transmitter_id)
        self.clock = clock
        self.seed = stable_int("dexcom_g6", self.transmitter_id) % 2**31 if seed is None else seed
        if interval < 10 or warmup < 0 or memory < interval or transmitter_age < 0:
            raise ValueError("need interval >= 10 s, warmup >= 0, memory >= interval, age >= 0")
        if session_age is not None and not 0 <= session_age <= transmitter_age:
            raise ValueError("the sensor session cannot be older than the transmitter")
        self.interval = interval
        self.warmup = warmup
        self.memory = memory
        self.activation = clock.now() - timedelta(seconds=int(transmitter_age))
        self.phase = stable_int(self.seed, "phase") % interval
        #: Session starts, in transmitter seconds, oldest first.
        self.sessions: list[int] = []
        if session_age is not None:
            self.sessions.append(int(transmitter_age) - int(session_age))
        self.overrides: dict[int, Override] = {}
        #: Transmitter status byte of time and glucose answers (0x81: low battery).
        self.status = STATUS_OK
        #: (true time from, counter skew), oldest first.
        self.eras: list[tuple[int, int]] = [(0, 0)]
        #: True time before which the memory was erased (`reset`).
        self.floor = 0
        #: Timestamps of records damaged in memory.
        self.damaged: set[int] = set()

    # -- time --------------------------------------------------------------------------------

    def elapsed(self) -> int:
        """True time: whole seconds since activation."""
        return (self.clock.now() - self.activation) // timedelta(seconds=1)

    def skew_at(self, true_time: int) -> int:
        """The counter's skew at a true time."""
        return next(skew for start, skew in reversed(self.eras) if start <= true_time)

    def counter(self, true_time: int) -> int:
        """What the transmitter's clock said at a true time."""
        return true_time + self.skew_at(true_time)

    def now(self) -> int:
        """Transmitter time: what its clock says now (`elapsed()` unless it jumped)."""
        return self.counter(self.elapsed())

    def wall(self, transmitter_time: int) -> datetime:
        """The wall time of a true transmitter time."""
        return self.activation + timedelta(seconds=transmitter_time)

    @property
    def session_start(self) -> int | None:
        """Start of the running sensor session as the transmitter says it (None: none)."""
        if not self.sessions:
            return None
        return max(0, self.sessions[-1] + self.skew_at(self.elapsed()))

    def reported_session(self, true_time: int) -> int | None:
        """The session start the transmitter gave at a true time (None: no session)."""
        start = self.session_of(true_time)
        return None if start is None else max(0, start + self.skew_at(true_time))

    def time_message(self) -> TransmitterTimeRx:
        """The answer to a time request."""
        start = self.session_start
        return TransmitterTimeRx(self.status, self.now(), NO_SESSION if start is None else start)

    # -- measurements ------------------------------------------------------------------------

    def measurement_time(self, index: int) -> int:
        """Transmitter time of measurement `index` (>= 0); now and then a second early."""
        early = 1 if index > 0 and stable_int(self.seed, "early", index) % 4 == 0 else 0
        return self.phase + index * self.interval - early

    def index_at(self, transmitter_time: int) -> int:
        """The last measurement at or before `transmitter_time` (-1: none yet)."""
        index = max((transmitter_time - self.phase) // self.interval, -1)
        while self.measurement_time(index + 1) <= transmitter_time:
            index += 1
        while index >= 0 and self.measurement_time(index) > transmitter_time:
            index -= 1
        return index

    def next_measurement(self) -> int:
        """True time of the next measurement (the next wake-up)."""
        return self.measurement_time(self.index_at(self.elapsed()) + 1)

    def _session_index(self, transmitter_time: int) -> int | None:
        position = bisect.bisect_right(self.sessions, transmitter_time)
        return position - 1 if position else None

    def record(self, index: int) -> GlucoseRecord | None:
        """Measurement `index` as stored (None outside a sensor session)."""
        ts = self.measurement_time(index)
        session = self._session_index(ts)
        if index < 0 or session is None:
            return None
        if ts - self.sessions[session] < self.warmup:
            record = GlucoseRecord(ts, 0, CalibrationState.WARMUP, TREND_NONE)
        else:
            unix = self.wall(ts).timestamp()
            s = sample(self.seed, session, index, unix)
            value = s.glucose_mgdl
            if value is None:
                value = LOW_VALUE if s.out_of_range == "low" else HIGH_VALUE
            trend = max(-126, min(126, round(s.trend_mgdl_min * 10)))
            record = GlucoseRecord(ts, value, CalibrationState.OK, trend)
        return replace(self._overridden(record), timestamp=self.counter(ts))

    def _overridden(self, record: GlucoseRecord) -> GlucoseRecord:
        change = self.overrides.get(record.timestamp)
        if change is None:
            return record
        if change.state is not None:
            record = replace(record, state=change.state)
        if change.glucose is not None:
            record = replace(record, glucose=change.glucose)
        if change.display_only is not None:
            record = replace(record, flags=DISPLAY_ONLY_FLAGS if change.display_only else 0)
        return record

    def latest(self) -> tuple[int, GlucoseRecord] | None:
        """(sequence in its session, record) of the newest measurement, None without one."""
        index = self.index_at(self.elapsed())
        record = self.record(index)
        if record is None:
            return None
        session = self._session_index(self.measurement_time(index))
        assert session is not None  # noqa: S101 - record() found one
        first = self.index_at(self.sessions[session] - 1) + 1
        return index - first + 1, record

    def records(self, start: int, end: int) -> list[GlucoseRecord]:
        """The records in memory with transmitter time in start..end, oldest first."""
        if len(self.eras) == 1 and not self.floor:
            now = self.now()
            return self.measured(max(start, now - self.memory, 0), min(end, now))
        elapsed = self.elapsed()
        lo = max(elapsed - self.memory, self.floor, 0)
        found = []
        for index in range(self.index_at(lo - 1) + 1, self.index_at(elapsed) + 1):
            record = self.record(index)
            if record is not None and start <= record.timestamp <= end:
                found.append(record)
        return found

    def measured(self, start: int, end: int) -> list[GlucoseRecord]:
        """Every record with true time in start..end, in memory or not (tests: what the
        transmitter held), oldest first."""
        found = []
        for index in range(self.index_at(start - 1) + 1, self.index_at(end) + 1):
            record = self.record(index)
            if record is not None:
                found.append(record)
        return found

    def session_of(self, transmitter_time: int) -> int | None:
        """Start of the sensor session a transmitter time falls in (None: before any)."""
        index = self._session_index(transmitter_time)
        return None if index is None else self.sessions[index]

    # -- test hooks ----------------------------------------------------------------------------

    def start_session(self) -> int:
        """A new sensor session starts now (warm-up first); returns its start."""
        start = self.elapsed()
        if self.sessions and start <= self.sessions[-1]:
            raise ValueError("a new session must start after the current one")
        self.sessions.append(start)
        return start

    def jump_clock(self, skew: int) -> None:
        """From the next second on, the transmitter's clock says true time + `skew` (>= -the
        true time then; what was measured this second keeps the old clock); a clock that goes
        back erases the memory."""
        since = self.elapsed() + 1
        if skew < -since:
            raise ValueError("the transmitter's clock cannot go below 0")
        if skew < self.skew_at(since):
            self.floor = since
        self.eras = [era for era in self.eras if era[0] < since] + [(since, skew)]

    def reset(self) -> int:
        """A reset: from the next second the clock restarts at 0, the memory is erased, and a
        new sensor session starts (its warm-up included); returns the true time of the reset."""
        since = self.elapsed() + 1
        self.jump_clock(-since)
        if not self.sessions or self.sessions[-1] < since:
            self.sessions.append(since)
        return since

    def damage(self, where: tuple[str, ...] | list[str], start: int, end: int) -> list[int]:
        """Damage for good the records with a value measured in true times start..end at
        `where` ("start", "middle", "end": the first, middle and last); their timestamps."""
        records = [r for r in self.measured(start, end) if r.reliable]
        if not records:
            raise ValueError("no record with a value to damage in that time")
        at = {"start": 0, "middle": len(records) // 2, "end": len(records) - 1}
        stamps = [records[at[w]].timestamp for w in where]
        self.damaged.update(stamps)
        return stamps

    def override(
        self,
        transmitter_time: int,
        *,
        state: int | None = None,
        display_only: bool | None = None,
        glucose: int | None = None,
    ) -> None:
        """Change the record measured at `transmitter_time` (see `measurement_time`)."""
        self.overrides[transmitter_time] = Override(state, display_only, glucose)
