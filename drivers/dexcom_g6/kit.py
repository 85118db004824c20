"""Test harnesses of the Dexcom G5/G6 driver, on its emulator over an in-process Bumble link.

* `rig()` / `Rig`: one emulated transmitter whose clock (a `ManualClock` starting a day in the
  past) the driver shares as `DeviceContext.clock`, so both agree on every timestamp.
  `Rig.connect()` is one wake-up served to one unmodified driver session (bleak over Bumble);
  its readings are kept by id as the store keeps them, and the next session resumes from the
  newest by time, as the supervisor does. `Rig.wakeup()` / `Rig.skip(n)` move the clock to the
  next measurement (a missed wake-up: the transmitter measures on, nobody connects).
* `G6Kit`: the driver's `gatewayd.plugin.kit.DriverKit`. The transmitter runs its wake-ups
  (`G6Emulator.run()`) on a `SteppingClock` started a day ago, which the gateway shares as its
  clock (`Target.clock`): each wake-up comes as soon as the gateway is done with the last one.
  A forced link drop cuts the link being served and makes the transmitter sleep through the
  next wake-ups (the gateway misses them: backfill); corruption flips a byte of the next
  backfill (the summary CRC no longer matches).
* `held(transmitter, start, end)`: every (session, seq) the transmitter holds a value for.

`G6Kit` implements every fault hook of the kit (`driverkit.FAULT_CHECKS`) on the emulator:
records damaged in memory (`Transmitter.damaged`: the backfill's CRC fails on each read), the
transmitter's clock jumping (`Transmitter.jump_clock`: +1 h, -7 months, back to its epoch;
the transmitter is 8 months old so that it can be 7 months behind), a reset (the clock
restarts at 0, memory erased, a new sensor session), backfills with every record twice and
newest first, a memory of 3,000 records (see `fill_memory`) and a link drop in the middle of
the first backfill. A G5/G6 has no calendar: "the device's clock" is the activation the hub
anchored the stored readings with plus the transmitter's time (`DexcomG6Session`), so the
offset measured is the jump of the transmitter's clock since the hub last anchored it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from drivers.dexcom_g6.clock import ManualClock, SteppingClock
from drivers.dexcom_g6.convert import parse_session, session_id
from drivers.dexcom_g6.emulator import G6Emulator
from drivers.dexcom_g6.options import G6Options, parse_options
from drivers.dexcom_g6.transmitter import Transmitter
from gatewayd.plugin import (
    BleConfig,
    DeviceContext,
    DeviceFindings,
    DriverPlugin,
    OptionReader,
    Reading,
    ResumePoint,
)
from gatewayd.plugin.emulation import InProcessLink, bumble_session, in_process_link
from gatewayd.plugin.kit import DriverKit, Target

__all__ = ["BLE", "TXID", "G6Kit", "Rig", "held", "rig"]

TXID = "8G1234"
#: `DeviceContext.ble` of in-process tests: the loop's Bumble host (the link's central) is used,
#: this transport is never opened.
BLE = BleConfig(stack="bumble", hci="tcp-client:127.0.0.1:1")
#: Seed of the simulated person in tests.
SEED = 7
Key = tuple[str, int]
#: The transmitter's clock per `driverkit.CLOCK_FAULTS` (seconds ahead of true time; None:
#: back to its epoch - 0 at the first such fault, the same skew after).
CLOCK_SKEWS: dict[str, int | None] = {
    "ahead_1h": 3600,
    "behind_7_months": -213 * 86_400,
    "epoch": None,
    "right": 0,
}
#: The kit's transmitter: 8 months old (it can be 7 months behind; G6 firmwares that can be
#: reset run past 180 days, protocols.md §2.4).
KIT_TRANSMITTER_AGE = 240 * 86_400
#: Frames of the first backfill before `drop_in_report` drops the link (of ~130 for a day).
DROP_IN_REPORT = 60


def held(transmitter: Transmitter, start: int, end: int) -> list[Key]:
    """(session, transmitter time) of every record with a glucose value in start..end."""
    keys = []
    for record in transmitter.measured(start, end):
        session = transmitter.session_of(record.timestamp)
        if session is not None and record.reliable:
            keys.append((session_id(session), record.timestamp))
    return keys


def _plugin() -> DriverPlugin[G6Options]:
    from drivers.dexcom_g6 import plugin

    return plugin


@dataclass
class Rig:
    """One emulated transmitter, its clock, and what the gateway kept of it."""

    link: InProcessLink
    clock: ManualClock
    transmitter: Transmitter
    emulator: G6Emulator
    #: What a store would hold: readings by id (the first one of an id wins).
    stored: dict[str, Reading] = field(default_factory=dict)
    #: Everything the driver yielded, in order.
    yielded: list[Reading] = field(default_factory=list)
    #: Reasons of the packets the driver dropped.
    dropped: list[str] = field(default_factory=list)
    #: What the sessions found (damaged records, the clock offset), kept across connections
    #: as the supervisor keeps it.
    findings: DeviceFindings = field(default_factory=DeviceFindings)
    #: How far the hub's clock is ahead of the transmitter's world (default: none).
    hub_ahead: timedelta = timedelta(0)

    def options(self, **overrides: Any) -> G6Options:
        """The driver's options: this transmitter, no first-contact history, unless overridden."""
        table: dict[str, Any] = {"transmitter_id": TXID, "history": 0, "scan_timeout": 5}
        table.update(overrides)
        reader = OptionReader(table, "test", "devices[0]")
        options = parse_options(reader)
        reader.finish()
        return options

    def resume(self) -> ResumePoint | None:
        """The newest stored reading by time, as the store gives it."""
        if not self.stored:
            return None
        newest = max(self.stored.values(), key=lambda r: (r.time, r.seq))
        return ResumePoint(newest.serial, newest.session, newest.seq, newest.time)

    def context(self, options: G6Options) -> DeviceContext[G6Options]:
        """A session's context: device "g6", the rig's clock, resuming from what is stored."""
        ctx: DeviceContext[G6Options] = DeviceContext(
            device_id="g6",
            driver="dexcom_g6",
            options=options,
            resume=self.resume(),
            log=structlog.get_logger().bind(device="g6"),
            clock=lambda: self.clock.now() + self.hub_ahead,
            ble=BLE,
            findings=self.findings,
        )
        return ctx

    async def connect(self, **overrides: Any) -> list[Reading]:
        """One wake-up served to one driver session: what it yielded (also when it raised)."""
        ctx = self.context(self.options(**overrides))
        wake = asyncio.create_task(self.emulator.wake())
        got: list[Reading] = []
        try:
            async with _plugin().open(ctx) as session:
                async for reading in session.readings():
                    got.append(reading)
                    self.yielded.append(reading)
                    self.stored.setdefault(reading.id, reading)
        finally:
            self.dropped.extend(ctx.dropped.elements())
            await wake
        return got

    def wakeup(self) -> int:
        """Move the clock to the next measurement (the next wake-up); its transmitter time."""
        tx = self.transmitter
        ts = tx.next_measurement()
        self.clock.set(tx.wall(ts))
        return ts

    def skip(self, wakeups: int) -> None:
        """The hub misses `wakeups` wake-ups: the transmitter measures on."""
        for _ in range(wakeups):
            self.wakeup()

    def held(self, readings: Iterable[Reading]) -> list[Key]:
        """Every key the transmitter held from the oldest to the newest of `readings`."""
        times = [r.seq for r in readings]
        return held(self.transmitter, min(times), max(times))

    def keys(self) -> list[Key]:
        """(session, seq) of what is stored, sorted."""
        return sorted((r.session, r.seq) for r in self.stored.values())


@contextlib.asynccontextmanager
async def rig(
    start: datetime | None = None, *, window: float = 10.0, **transmitter: Any
) -> AsyncIterator[Rig]:
    """A `Rig` on a fresh in-process link, the clock at the first wake-up after `start`
    (default: a day ago); `transmitter` keywords go to `Transmitter` (seed defaults to 7)."""
    start = start or (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    txid = transmitter.pop("transmitter_id", TXID)
    transmitter.setdefault("seed", SEED)
    async with in_process_link() as link, bumble_session(link.central):
        clock = ManualClock(start)
        model = Transmitter(txid, clock=clock, **transmitter)
        emulator = G6Emulator(link.peripheral, model, window=window)
        harness = Rig(link, clock, model, emulator)
        harness.wakeup()
        try:
            yield harness
        finally:
            await emulator.close()


class G6Kit(DriverKit):
    """The driver test kit's view of the G5/G6 driver and its emulator (see the module)."""

    #: Wake-ups a forced link drop makes the gateway miss.
    missed: int = 3

    def __init__(self, options: Mapping[str, Any] | None = None, **transmitter: Any) -> None:
        self.table: dict[str, Any] = {
            "transmitter_id": TXID,
            "history": 1500,  # a first contact backfills the last ~5 records
            "scan_timeout": 10,
        }
        self.table.update(options or {})
        transmitter.setdefault("transmitter_age", KIT_TRANSMITTER_AGE)
        self.transmitter_kwargs = transmitter
        self.emulator: G6Emulator | None = None
        self.refusing = False
        self.epoch_skew: int | None = None

    def refuse_bonding(self) -> None:
        """The next transmitter started refuses every pairing request (Control needs a bond)."""
        self.refusing = True

    def make_plugin(self) -> DriverPlugin[Any]:
        """The plugin, as the daemon loads it."""
        return _plugin()

    @contextlib.asynccontextmanager
    async def start_emulator(self) -> AsyncIterator[Target]:
        """The transmitter waking on a `SteppingClock` (a day ago) on an in-process link."""
        kwargs = dict(self.transmitter_kwargs)
        kwargs.setdefault("seed", SEED)
        txid = kwargs.pop("transmitter_id", TXID)
        start = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
        async with in_process_link() as link:
            clock = SteppingClock(start)
            model = Transmitter(txid, clock=clock, **kwargs)
            emulator = self.emulator = G6Emulator(
                link.peripheral, model, refuse_bonding=self.refusing
            )
            wakeups = asyncio.create_task(emulator.run(), name="g6-kit-wakeups")
            try:
                yield Target(
                    options=self.table,
                    ble=BLE,
                    radio=lambda: bumble_session(link.central),
                    idle=emulator.wait_idle,
                    clock=clock.now,  # the hub dates readings on the transmitter's timeline
                )
            finally:
                wakeups.cancel()
                await asyncio.gather(wakeups, return_exceptions=True)
                await emulator.close()

    def _emulator(self) -> G6Emulator:
        if self.emulator is None:
            raise RuntimeError("the emulator is not running")
        return self.emulator

    async def force_link_drop(self) -> None:
        """Cut the link being served, and sleep through the next `missed` wake-ups."""
        emulator = self._emulator()
        emulator.skip_wakeups += self.missed
        await emulator.drop_link()

    async def corrupt_next(self) -> None:
        """Flip a byte of the next backfill stream."""
        self._emulator().corrupt_backfills += 1

    def expected_sequence(self, readings: Sequence[Reading]) -> Sequence[Key]:
        """Per stored session: every (session, seq) with a value the transmitter measured
        under it between its oldest and newest stored reading, except damaged ones."""
        tx = self._emulator().transmitter
        keys: list[Key] = []
        for session in {r.session for r in readings}:
            start = parse_session(session)
            times = [self._true(r) for r in readings if r.session == session]
            first, last = tx.index_at(min(times) - 1) + 1, tx.index_at(max(times))
            for index in range(first, last + 1):
                record = tx.record(index)
                if record is None or not record.reliable or record.timestamp in tx.damaged:
                    continue
                if tx.reported_session(tx.measurement_time(index)) == start:
                    keys.append((session, record.timestamp))
        return keys

    def _true(self, reading: Reading) -> int:
        """The true transmitter time a stored reading was measured at: of the clock's eras,
        the one where its timestamp is a measurement, nearest the time the hub gave it."""
        tx = self._emulator().transmitter
        found: list[int] = []
        for _begin, skew in tx.eras:
            true = reading.seq - skew
            if true < 0 or tx.skew_at(true) != skew:
                continue
            if tx.measurement_time(tx.index_at(true)) == true:
                found.append(true)
        if not found:
            raise AssertionError(f"the transmitter measured nothing at {reading.seq}")
        return min(found, key=lambda true: abs(tx.wall(true) - reading.time))

    # -- fault hooks -----------------------------------------------------------------------------

    def true_time(self, reading: Reading) -> datetime:
        """When the transmitter truly measured `reading`."""
        return self._emulator().transmitter.wall(self._true(reading))

    async def damage_in_memory(self, where: Sequence[str]) -> Sequence[Key]:
        """Damage records of the first backfill (the `history` before the first wake-up):
        its first, middle and last record with a value (the last: the live one too)."""
        tx = self._emulator().transmitter
        wake = tx.next_measurement()
        stamps = tx.damage(list(where), wake - int(self.table["history"]), wake)
        return [(session_id(tx.reported_session(wake) or 0), ts) for ts in stamps]

    async def set_device_clock(self, fault: str) -> float:
        """Jump the transmitter's clock (`CLOCK_SKEWS`); seconds ahead of true time."""
        tx = self._emulator().transmitter
        skew = CLOCK_SKEWS[fault]
        if skew is None:
            if self.epoch_skew is None:
                self.epoch_skew = -(tx.elapsed() + 1)  # 0 from the next second
            skew = self.epoch_skew
        tx.jump_clock(skew)
        return float(skew)

    async def reset_memory(self) -> None:
        """A transmitter reset: its clock restarts at 0, memory erased, a new sensor
        session (warm-up first: shortened to 15 minutes, so the check waits 3 wake-ups for
        values, not 24)."""
        tx = self._emulator().transmitter
        tx.warmup = min(tx.warmup, 900)
        tx.reset()

    async def disorder_records(self) -> None:
        """The next three backfills carry every record twice, newest first."""
        self._emulator().disorder_backfills += 3

    async def fill_memory(self, count: int) -> None:
        """`count` records in memory on first contact, all asked for (`history`).

        A G5/G6 is believed to keep about a day (288 records; [L], protocols.md says nothing
        of its memory): 3,000 records are more than a real one holds. The check still
        exercises what matters here - a first contact longer than one backfill message
        (573 records) is asked for in pieces, in order - with a memory of `count` records.
        """
        tx = self._emulator().transmitter
        span = (count + 2) * tx.interval
        tx.memory = span
        tx.sessions[-1] = min(tx.sessions[-1], tx.elapsed() - span - tx.warmup)
        self.table["history"] = span

    async def drop_in_report(self) -> None:
        """The first backfill (a day of memory) stops after `DROP_IN_REPORT` frames."""
        self.table["history"] = self._emulator().transmitter.memory
        self._emulator().drop_in_backfill = DROP_IN_REPORT
