"""The simulated sensor: a record grid, a record memory and a radio link that can fail.

Sensor sessions are aligned to a fixed, seed-derived epoch: session `n` is a warm-up of
`warmup` seconds (no records) followed by `session_days` of records every `interval` seconds,
seq counting from 0, and the next session starts right after. A record is a pure function of
(seed, session, seq), so the sensor's memory needs no storage: it is "every grid point of the
previous and the current session up to the simulated now". A restarted process therefore sees
the same session ids, seqs and values for the same times, and can backfill what it missed.

The link is the only state: dropouts and lost notifications are drawn per record from a hash of
(seed, session, seq) — reproducible, independent of timing — or forced by the test hooks
`force_dropout` and `force_miss`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from drivers.emulation.clock import SimClock, from_us
from drivers.emulation.physiology import Sample, sample, stable_int

#: What happens to a live notification besides arriving: the link drops, it is lost, it arrives
#: damaged, it arrives again after the next one ("twice"), or only after it ("late").
LinkEvent = Literal["drop", "miss", "corrupt", "twice", "late"]

_US = 1_000_000
_DAY_US = 86_400 * _US
_SESSION_RE = re.compile(r"s(-?\d+)")


def session_id(index: int) -> str:
    """The sensor session id of session `index` (`s00002041`).

    Zero-padded so that ids sort in time order as strings too (8 digits last for 60 years
    even with 100-second sessions).
    """
    return f"s{index:08d}"


def parse_session(session: str) -> int | None:
    """The index of a session id, or None when it is not one of ours."""
    m = _SESSION_RE.fullmatch(session)
    return int(m.group(1)) if m else None


def sensor_serial(device_id: str, seed: int) -> str:
    """The serial number of the simulated sensor of `device_id` with `seed` (`SIM1A2B3C4D`)."""
    return f"SIM{stable_int('serial', device_id, seed) % 16**8:08X}"


@dataclass(frozen=True, slots=True)
class Record:
    """One record in the sensor's memory."""

    session_index: int
    seq: int
    time_us: int
    sample: Sample

    @property
    def session(self) -> str:
        """The session id."""
        return session_id(self.session_index)

    @property
    def time(self) -> datetime:
        """When it was measured, aware UTC."""
        return from_us(self.time_us)


@dataclass(frozen=True, slots=True)
class Grid:
    """Where records fall in time (all values in microseconds since the Unix epoch)."""

    interval_us: int
    active_us: int
    warmup_us: int
    offset_us: int

    @classmethod
    def create(cls, seed: int, interval: float, session_days: float, warmup: float) -> Grid:
        """The grid of a sensor with these options; the epoch offset is derived from `seed`."""
        interval_us = max(1, round(interval * _US))
        active_us = max(interval_us, round(session_days * _DAY_US))
        warmup_us = round(warmup * _US)
        offset = stable_int("epoch", seed) % (active_us + warmup_us)
        return cls(interval_us, active_us, warmup_us, offset)

    @property
    def period_us(self) -> int:
        """Length of one session including its warm-up."""
        return self.active_us + self.warmup_us

    def session_at(self, t_us: int) -> int:
        """The session whose period (warm-up included) contains `t_us`."""
        return (t_us - self.offset_us) // self.period_us

    def first_us(self, n: int) -> int:
        """Time of record 0 of session `n` (the end of its warm-up)."""
        return self.offset_us + n * self.period_us + self.warmup_us

    def end_us(self, n: int) -> int:
        """When session `n` ends (and the next one's warm-up begins)."""
        return self.offset_us + (n + 1) * self.period_us

    def count(self, n: int) -> int:
        """How many records session `n` holds (every session holds the same number)."""
        del n
        return -(-self.active_us // self.interval_us)

    def time_us(self, n: int, seq: int) -> int:
        """Time of record `seq` of session `n`."""
        return self.first_us(n) + seq * self.interval_us

    def next_after(self, t_us: int) -> tuple[int, int]:
        """(session, seq) of the first record strictly after `t_us`."""
        n = self.session_at(t_us)
        first = self.first_us(n)
        if t_us < first:
            return n, 0
        seq = (t_us - first) // self.interval_us + 1
        return (n, seq) if seq < self.count(n) else (n + 1, 0)

    def after(self, after_us: int) -> Iterator[tuple[int, int]]:
        """(session, seq) of every record with after_us < time, oldest first, without end."""
        n, seq = self.next_after(after_us)
        count = self.count(n)
        while True:
            yield n, seq
            seq += 1
            if seq >= count:
                n, seq = n + 1, 0

    def between(self, after_us: int, until_us: int) -> Iterator[tuple[int, int]]:
        """(session, seq) of every record with after_us < time <= until_us, oldest first."""
        for n, seq in self.after(after_us):
            if self.time_us(n, seq) > until_us:
                return
            yield n, seq

    def active_session(self, t_us: int) -> int | None:
        """The session producing records at `t_us`, or None during a warm-up."""
        n = self.session_at(t_us)
        return n if t_us >= self.first_us(n) else None


class SimulatedSensor:
    """One simulated CGM: outlives driver sessions, so a reconnect sees the same memory."""

    def __init__(
        self,
        *,
        device_id: str,
        seed: int,
        grid: Grid,
        clock: SimClock,
        dropout_rate: float = 0.0,
        dropout_readings: int = 3,
        missed_rate: float = 0.0,
    ) -> None:
        self.device_id = device_id
        self.seed = seed
        self.grid = grid
        self.clock = clock
        self.serial = sensor_serial(device_id, seed)
        self.dropout_rate = dropout_rate
        self.dropout_readings = dropout_readings
        self.missed_rate = missed_rate
        self._down_until_us: int | None = None
        self._forced: list[LinkEvent | None] = []

    # -- memory ------------------------------------------------------------------------------

    def record(self, n: int, seq: int) -> Record:
        """Record `seq` of session `n` (computed, so always the same)."""
        t_us = self.grid.time_us(n, seq)
        return Record(n, seq, t_us, sample(self.seed, n, seq, t_us / _US))

    def memory_start_us(self, now_us: int) -> int:
        """Time of the oldest record still in memory (record 0 of the previous session)."""
        return self.grid.first_us(self.grid.session_at(now_us) - 1)

    def records(self, after_us: int, until_us: int) -> Iterator[Record]:
        """Stored records with after_us < time <= until_us, oldest first (the RACP query).

        Records older than the memory (before the previous session) are gone.
        """
        after_us = max(after_us, self.memory_start_us(until_us) - 1)
        for n, seq in self.grid.between(after_us, until_us):
            yield self.record(n, seq)

    def position_us(self, session: str, seq: int) -> int | None:
        """The time of record (session, seq), or None when the session id is not ours."""
        n = parse_session(session)
        return None if n is None else self.grid.time_us(n, seq)

    def records_after(self, after_us: int) -> Iterator[Record]:
        """Every record measured after `after_us`, oldest first, without end (the live ones:
        a record is computed when asked for, most are not due yet)."""
        for n, seq in self.grid.after(after_us):
            yield self.record(n, seq)

    # -- link --------------------------------------------------------------------------------

    def advertising(self) -> bool:
        """Whether the sensor can be connected to (not while a dropout lasts)."""
        return self._down_until_us is None or self.clock.now_us() >= self._down_until_us

    @property
    def down_until(self) -> datetime | None:
        """Simulated time when the current dropout ends, None when the link is up."""
        return (
            None
            if self.advertising() or self._down_until_us is None
            else from_us(self._down_until_us)
        )

    def drop_link(self, at_us: int) -> None:
        """The link drops at `at_us` and stays down for `dropout_readings` intervals."""
        self._down_until_us = at_us + self.dropout_readings * self.grid.interval_us

    def link_event(self, record: Record) -> LinkEvent | None:
        """What happens to the live notification of `record`: delivered (None), lost, dropped."""
        if self._forced:
            return self._forced.pop(0)
        if self.dropout_rate <= 0 and self.missed_rate <= 0:  # no draw can fall below them
            return None
        draw = stable_int("link", self.seed, record.session_index, record.seq) / 2**64
        if draw < self.dropout_rate:
            return "drop"
        if draw < self.dropout_rate + self.missed_rate:
            return "miss"
        return None

    def force_dropout(self) -> None:
        """Test hook: the link drops at the next live record (which stays in memory)."""
        self._forced.append("drop")

    def force_miss(self) -> None:
        """Test hook: the next live notification is lost (the record stays in memory)."""
        self._forced.append("miss")

    def force(self, *events: LinkEvent | None) -> None:
        """Test hook: what happens to the next live notifications, in order (None: arrives)."""
        self._forced.extend(events)
