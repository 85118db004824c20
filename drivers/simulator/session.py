"""The simulator's driver session: backfill from the sensor's memory, then live readings.

`SensorRegistry` keeps one `SimulatedSensor` per device (and options) for the life of the
process, so a session opened after a dropout talks to the same sensor, with the same memory and
the same simulated clock. A session is one connection attempt, exactly like a radio driver's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from types import TracebackType
from typing import Self

from drivers.emulation.clock import SimClock, from_us, to_us
from drivers.emulation.physiology import stable_int
from drivers.simulator.sensor import (
    Grid,
    LinkEvent,
    Record,
    SimulatedSensor,
    sensor_serial,
    session_id,
)
from gatewayd.plugin import (
    DeviceContext,
    DeviceIdentity,
    DeviceNotFound,
    Direction,
    LinkLost,
    OptionReader,
    Reading,
)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


DRIVER = "simulator"
#: What the simulated sensor reports as its firmware revision.
FIRMWARE = "sim-1.0"


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """The simulator's keys of a ``[[devices]]`` table (see the package docstring)."""

    interval: float = 300.0
    speed: float = 1.0
    history: float = 0.0
    #: None: derived from the device id when the sensor is created.
    seed: int | None = None
    dropout_rate: float = 0.002
    dropout_readings: int = 3
    missed_rate: float = 0.005
    session_days: float = 10.0
    warmup: float = 7200.0


def parse_options(reader: OptionReader) -> SimulatorOptions:
    """Read and check the simulator's options."""
    d = SimulatorOptions()
    return SimulatorOptions(
        interval=reader.number("interval", d.interval, minimum=0, exclusive_minimum=True),
        speed=reader.number("speed", d.speed, minimum=1),
        history=reader.number("history", d.history, minimum=0),
        seed=reader.integer("seed") if reader.has("seed") else None,
        dropout_rate=reader.number("dropout_rate", d.dropout_rate, minimum=0, maximum=1),
        dropout_readings=reader.integer("dropout_readings", d.dropout_readings, minimum=0),
        missed_rate=reader.number("missed_rate", d.missed_rate, minimum=0, maximum=1),
        session_days=reader.number(
            "session_days", d.session_days, minimum=0, exclusive_minimum=True
        ),
        warmup=reader.number("warmup", d.warmup, minimum=0),
    )


def default_seed(device_id: str) -> int:
    """The seed of a device that sets none: stable for its id."""
    return stable_int("seed", device_id) % 2**31


class SensorRegistry:
    """The simulated sensors of this process, keyed by device id and options.

    `monotonic` and `sleep` are handed to every sensor's `SimClock` (inject virtual time in
    tests); the clock's anchor is the context's wall clock when the sensor is first opened.
    """

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._monotonic = monotonic
        self._sleep = sleep
        self._sensors: dict[tuple[str, SimulatorOptions], SimulatedSensor] = {}
        self._latest: dict[str, SimulatedSensor] = {}

    def sensor(self, ctx: DeviceContext[SimulatorOptions]) -> SimulatedSensor:
        """The sensor of `ctx`'s device, created (and its clock anchored) on first use."""
        seed = ctx.options.seed if ctx.options.seed is not None else default_seed(ctx.device_id)
        opts = replace(ctx.options, seed=seed)
        key = (ctx.device_id, opts)
        if (found := self._sensors.get(key)) is None:
            found = self._create(ctx, opts, seed)
            self._sensors[key] = found
        self._latest[ctx.device_id] = found
        return found

    def _create(
        self, ctx: DeviceContext[SimulatorOptions], opts: SimulatorOptions, seed: int
    ) -> SimulatedSensor:
        wall = ctx.now()
        serial = sensor_serial(ctx.device_id, seed)
        history = opts.history
        if ctx.resume is not None and ctx.resume.serial == serial:
            # A restarted gateway: never replay time the store already has (nothing would come
            # until the clock got there); the replay starts at the newest stored reading.
            history = min(history, max(0.0, (wall - ctx.resume.time).total_seconds()))
        clock = SimClock(
            wall, history=history, speed=opts.speed, monotonic=self._monotonic, sleep=self._sleep
        )
        ctx.log.info("simulator_started", serial=serial, seed=seed, clock=clock.now())
        return SimulatedSensor(
            device_id=ctx.device_id,
            seed=seed,
            clock=clock,
            grid=Grid.create(seed, opts.interval, opts.session_days, opts.warmup),
            dropout_rate=opts.dropout_rate,
            dropout_readings=opts.dropout_readings,
            missed_rate=opts.missed_rate,
        )

    def get(self, device_id: str) -> SimulatedSensor:
        """Test hook: the sensor last opened for `device_id` (KeyError when none was)."""
        return self._latest[device_id]


class SimulatorSession:
    """One connection to a simulated sensor."""

    def __init__(self, ctx: DeviceContext[SimulatorOptions], registry: SensorRegistry) -> None:
        self.identity: DeviceIdentity | None = None
        self._ctx = ctx
        self._registry = registry
        self._sensor: SimulatedSensor | None = None

    async def __aenter__(self) -> Self:
        sensor = self._registry.sensor(self._ctx)
        if not sensor.advertising():
            self._ctx.log.info("device_not_advertising", until=_iso(sensor.down_until))
            raise DeviceNotFound("not advertising", device=self._ctx.device_id)
        self._sensor = sensor
        self.identity = DeviceIdentity(
            manufacturer="gatewayd",
            model="Simulated CGM",
            serial=sensor.serial,
            firmware=FIRMWARE,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sensor = None

    def _reading(self, record: Record, *, backfilled: bool) -> Reading:
        assert self._sensor is not None  # noqa: S101 - readings() checked it
        s = record.sample
        return Reading(
            device=self._ctx.device_id,
            driver=DRIVER,
            serial=self._sensor.serial,
            session=record.session,
            seq=record.seq,
            time=record.time,
            received=self._ctx.now(),
            glucose_mgdl=s.glucose_mgdl,
            out_of_range=s.out_of_range,
            trend_mgdl_min=s.trend_mgdl_min,
            direction=Direction.from_rate(s.trend_mgdl_min),
            quality_pct=s.quality_pct,
            backfilled=backfilled,
        )

    def _start_after(self, sensor: SimulatedSensor) -> int:
        """Time after which records are new to the store (the resume point, or now)."""
        now_us = sensor.clock.now_us()
        resume = self._ctx.resume
        if resume is None:  # first contact: nothing old, live from now on
            return now_us
        if resume.serial == sensor.serial:
            position = sensor.position_us(resume.session, resume.seq)
            if position is not None:
                return position
        self._ctx.log.info("resume_other_sensor", serial=resume.serial, session=resume.session)
        return to_us(resume.time)

    def _from_memory(self, sensor: SimulatedSensor, after: int) -> Iterator[Record]:
        """Stored records after `after`, asking again until memory has nothing newer."""
        oldest = sensor.memory_start_us(sensor.clock.now_us())
        if after < oldest - 1:
            self._ctx.log.warning(
                "backfill_gap", lost_from=from_us(after), lost_until=from_us(oldest)
            )
        while True:
            newest = after
            for record in sensor.records(after, sensor.clock.now_us()):
                yield record
                newest = record.time_us
            if newest == after:
                return
            after = newest

    def _arrives(
        self, sensor: SimulatedSensor, record: Record, event: LinkEvent, again: list[Record]
    ) -> bool:
        """Whether the live notification of `record` arrives now although `event` happens to
        it (`again` collects those that arrive after the next one)."""
        log = self._ctx.log
        if event == "drop":
            sensor.drop_link(record.time_us)
            log.warning(
                "link_lost", session=record.session, seq=record.seq, until=_iso(sensor.down_until)
            )
            raise LinkLost("simulated link loss", device=self._ctx.device_id)
        if event == "miss":
            log.info("notification_missed", session=record.session, seq=record.seq)
            return False
        if event == "corrupt":  # a damaged notification: the record is fetched from memory
            self._ctx.drop_packet(record.seq.to_bytes(4, "little"), "simulated_damage")
            return False
        if event == "late":  # it comes after the next one (fetched in order before that)
            again.append(record)
            return False
        return True

    async def readings(self) -> AsyncIterator[Reading]:
        """Backfill everything after the resume point, then live records until the link drops."""
        sensor = self._sensor
        if sensor is None:
            raise RuntimeError("readings() outside `async with`")
        log = self._ctx.log
        after = self._start_after(sensor)
        if self._ctx.resume is not None:  # on first contact nothing is old: live from now on
            count = 0
            for record in self._from_memory(sensor, after):
                yield self._reading(record, backfilled=True)
                after = record.time_us
                count += 1
            log.info("backfill_done", count=count, until=from_us(after))
        delivered = after  # the newest record the consumer has (or where it started)
        current = sensor.grid.active_session(after)
        again: list[Record] = []  # notifications that arrive again, or late
        for record in sensor.records_after(after):
            if current is not None and record.session_index != current:
                await sensor.clock.sleep_until(sensor.grid.end_us(current))
                log.info("sensor_session_ended", session=session_id(current), serial=sensor.serial)
                log.info("sensor_warmup", until=record.time, session=record.session)
            current = record.session_index
            await sensor.clock.sleep_until(record.time_us)
            # The consumer lacks the record before this one (its notification was lost, damaged
            # or late): what it lacks is fetched from memory before this one.
            gap = delivered < after
            after = record.time_us
            event = sensor.link_event(record)
            if event is not None and not self._arrives(sensor, record, event, again):
                continue
            if gap:
                for missed in sensor.records(delivered, record.time_us - 1):
                    yield self._reading(missed, backfilled=True)
            yield self._reading(record, backfilled=False)
            delivered = record.time_us
            if event == "twice":
                again.append(record)
            for notified in again:  # arriving now: one already delivered (or passed) is stale
                if notified.time_us <= delivered:
                    log.info("notification_stale", session=notified.session, seq=notified.seq)
                else:
                    yield self._reading(notified, backfilled=False)
                    delivered = notified.time_us
            again.clear()
