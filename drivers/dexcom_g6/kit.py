"""Test harnesses of the Dexcom G5/G6 driver, on its emulator over an in-process Bumble link.

* `rig()` / `Rig`: one emulated transmitter whose clock (a `ManualClock` starting a day in the
  past) the driver shares as `DeviceContext.clock`, so both agree on every timestamp.
  `Rig.connect()` is one wake-up served to one unmodified driver session (bleak over Bumble);
  its readings are kept by id as the store keeps them, and the next session resumes from the
  newest by time, as the supervisor does. `Rig.wakeup()` / `Rig.skip(n)` move the clock to the
  next measurement (a missed wake-up: the transmitter measures on, nobody connects).
* `G6Kit`: the driver's `gatewayd.testing.driverkit.DriverKit`. The transmitter runs its wake-ups
  (`G6Emulator.run()`) on a `SteppingClock` started a day ago: each wake-up comes as soon as the
  gateway is done with the last one. A forced link drop cuts the link being served and makes the
  transmitter sleep through the next wake-ups (the gateway misses them: backfill); corruption
  flips a byte of the next backfill (the summary CRC no longer matches).
* `held(transmitter, start, end)`: every (session, seq) the transmitter holds a value for.
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
from drivers.dexcom_g6.convert import session_id
from drivers.dexcom_g6.emulator import G6Emulator
from drivers.dexcom_g6.options import G6Options, parse_options
from drivers.dexcom_g6.transmitter import Transmitter
from gatewayd.driver import DeviceContext, DriverPlugin, ResumePoint
from gatewayd.models import Reading
from gatewayd.options import OptionReader
from gatewayd.testing.driverkit import DriverKit, Target
from gatewayd.transport.ble import BleConfig
from gatewayd.transport.bumble_link import InProcessLink, in_process_link
from gatewayd.transport.bumble_registry import bumble_session

__all__ = ["BLE", "TXID", "G6Kit", "Rig", "held", "rig"]

TXID = "8G1234"
#: `DeviceContext.ble` of in-process tests: the loop's Bumble host (the link's central) is used,
#: this transport is never opened.
BLE = BleConfig(stack="bumble", hci="tcp-client:127.0.0.1:1")
#: Seed of the simulated person in tests.
SEED = 7
Key = tuple[str, int]


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
            clock=self.clock.now,
            ble=BLE,
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
        self.transmitter_kwargs = transmitter
        self.emulator: G6Emulator | None = None
        self.refusing = False

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
            model = Transmitter(txid, clock=SteppingClock(start), **kwargs)
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
        """Every (session, seq) the transmitter held from the oldest to the newest reading."""
        if not readings:
            return []
        times = [r.seq for r in readings]
        return held(self._emulator().transmitter, min(times), max(times))
