"""The glucose driver against the driver test kit (`gatewayd.plugin.kit`).

Two kinds of meter: one that keeps the link and notifies new results at once (every check),
and one that closes the link shortly after each report, as most meters do, so every new result
comes with a new connection (every check but "readings arrive", which expects the device to
stay connected). The person tests every 0.1 s (the kit's checks wait for "N more readings"
after an event, as a CGM's steady stream gives them), and takes one more result whenever the
kit drops the link, so the reconnection always has something to backfill.

Both serve the Current Time Service, so every fault check of the kit runs
(`driverkit.FAULT_CHECKS`): records damaged in memory, the meter's calendar an hour ahead,
seven months behind or reset to its epoch, a memory reset, a new result notified late and the
next one twice, a 3,000-record memory and a link drop in the middle of the first report. A
meter without it (`NoClockMeterKit`) cannot have its records anchored: the clock checks skip
for it (`set_device_clock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from drivers.glucose import plugin
from drivers.glucose.convert import SESSION
from drivers.glucose.emulator import GlucoseMeterEmulator, MeterRecord, sample_records
from gatewayd.driver import DriverPlugin
from gatewayd.models import Reading
from gatewayd.plugin import kit as driverkit
from gatewayd.transport.ble import BleConfig
from gatewayd.transport.bumble.backend import bumble_session
from gatewayd.transport.bumble.link import in_process_link

pytestmark = pytest.mark.timeout(40)

#: The meter's calendar per `driverkit.CLOCK_FAULTS` (None: reset to its epoch).
CALENDAR: dict[str, timedelta | None] = {
    "ahead_1h": timedelta(hours=1),
    "behind_7_months": -timedelta(days=213),
    "epoch": None,
    "right": timedelta(0),
}
#: Records in memory for `damage_in_memory` and `drop_in_report`, and where the link drops.
MEMORY = 12
REPORT = 100
DROP_AFTER = 40


class MeterKit(driverkit.DriverKit):
    """A meter that keeps the link after a report and notifies new results while connected."""

    #: The emulator's `close_after_transfer` and the driver's `linger`.
    close_after: float | None = None
    linger: float = 30.0
    #: Seconds between the person's fingersticks.
    every: float = 0.1
    #: Whether the meter serves the Current Time Service.
    current_time: bool = True

    def __init__(self) -> None:
        self.rng = random.Random(7)
        self._meter: GlucoseMeterEmulator | None = None
        self.refusing = False

    def refuse_bonding(self) -> None:
        self.refusing = True

    @property
    def meter(self) -> GlucoseMeterEmulator:
        assert self._meter is not None, "the emulator is not running"
        return self._meter

    def make_plugin(self) -> DriverPlugin[object]:
        return plugin  # type: ignore[return-value]

    @contextlib.asynccontextmanager
    async def start_emulator(self) -> AsyncIterator[driverkit.Target]:
        async with in_process_link(peripheral_name="meter") as link:
            meter = GlucoseMeterEmulator(
                link.peripheral,
                records=sample_records(MEMORY, end=datetime.now(UTC)),
                close_after_transfer=self.close_after,
                notify_new=True,
                require_bonding=self.refusing,
                refuse_bonding=self.refusing,
                current_time=self.current_time,
            )
            await meter.start()
            self._meter = meter
            person = asyncio.create_task(self._fingersticks(meter))
            try:
                yield driverkit.Target(
                    options={"tz": "UTC", "scan_timeout": 5, "linger": self.linger},
                    ble=BleConfig(stack="bumble", hci="in-process"),
                    radio=lambda: bumble_session(link.central),
                    idle=meter.wait_idle,
                )
            finally:
                person.cancel()
                await asyncio.gather(person, return_exceptions=True)
                await meter.stop()

    async def _fingersticks(self, meter: GlucoseMeterEmulator) -> None:
        while True:
            await asyncio.sleep(self.every)  # the person's pace, not a synchronisation
            meter.add_measurement(self.rng.randint(60, 250))

    async def force_link_drop(self) -> None:
        await self.meter.drop_link()
        # a result taken while the hub is away: the reconnection backfills it
        self.meter.add_measurement(self.rng.randint(60, 250))

    async def corrupt_next(self) -> None:
        self.meter.corrupt_next()

    def _memories(self, readings: Sequence[Reading]) -> dict[str, list[MeterRecord]]:
        """The meter's memory behind each session of `readings`: "gls" the first, each later
        session (named by the time its reset was seen) the next."""
        meter = self.meter
        memories = [*meter.erased, meter.records]
        later = sorted({r.session for r in readings} - {SESSION})
        self.memories = dict(zip([SESSION, *later], memories[-len(later) - 1 :], strict=True))
        return self.memories

    def expected_sequence(self, readings: Sequence[Reading]) -> Sequence[driverkit.Key]:
        keys: list[driverkit.Key] = []
        for session, memory in self._memories(readings).items():
            seqs = [r.seq for r in readings if r.session == session]
            if not seqs:
                continue
            low, high = min(seqs), max(seqs)
            keys += [
                (session, r.seq)
                for r in memory
                if low <= r.seq <= high and (session, r.seq) not in self.damaged
            ]
        return keys

    # -- fault hooks -----------------------------------------------------------------------------

    damaged: frozenset[driverkit.Key] = frozenset()

    #: The memory behind each session, as `expected_sequence` found them (all readings known).
    memories: dict[str, list[MeterRecord]] | None = None

    def true_time(self, reading: Reading) -> datetime:
        memory = (self.memories or self._memories([reading]))[reading.session]
        record = next(r for r in memory if r.seq == reading.seq)
        return self.meter.true_time(record)

    def _fill(self, count: int) -> list[MeterRecord]:
        """Before the first connection: `count` records in memory, five minutes apart."""
        records = sample_records(count, end=datetime.now(UTC), spacing=timedelta(minutes=5))
        self.meter.records = records
        return records

    async def damage_in_memory(self, where: Sequence[str]) -> Sequence[driverkit.Key]:
        records = self._fill(MEMORY)
        place = {"start": 0, "middle": MEMORY // 2, "end": MEMORY - 1}
        seqs = [records[place[w]].seq for w in where]
        self.meter.damaged.update(seqs)
        self.damaged = frozenset((SESSION, seq) for seq in seqs)
        return sorted(self.damaged)

    async def set_device_clock(self, fault: str) -> float:
        meter = self.meter
        skew = CALENDAR[fault]
        if skew is None:
            meter.reset_calendar()
        else:  # before the first connection: the records already stored carry it too
            meter.set_calendar(skew, since_start=meter.connections == 0)
        return (meter.calendar() - meter.clock()).total_seconds()

    async def reset_memory(self) -> None:
        self.meter.reset_memory()

    async def disorder_records(self) -> None:
        self.meter.disorder_next()

    async def fill_memory(self, count: int) -> None:
        self._fill(count)

    async def drop_in_report(self) -> None:
        self._fill(REPORT)
        self.meter.drop_after(DROP_AFTER)

    async def records_in_flight(self, reports: int) -> None:
        self.meter.in_flight_next(reports)


class ClosingMeterKit(MeterKit):
    """A meter that closes the link 0.2 s after a report; the driver does not linger."""

    close_after = 0.2
    linger = 0.0


class NoClockMeterKit(MeterKit):
    """A meter without the Current Time Service: its records keep its calendar."""

    current_time = False
    reports_clock_offset = False

    async def set_device_clock(self, fault: str) -> float:
        """Unsupported: without a Current Time the hub cannot read the meter's calendar, so a
        wrong calendar cannot be told from a right one (the readings carry the status
        ``device_clock_unverified``): the clock checks do not apply."""
        raise driverkit.FaultUnsupportedError("set_device_clock")


Check = Callable[[driverkit.DriverKit], Awaitable[None]]


OnStack = Callable[[driverkit.DriverKit], driverkit.DriverKit]


@pytest.mark.parametrize("check", driverkit.CHECKS, ids=driverkit.check_name)
async def test_a_meter_that_keeps_the_link_honours_the_contract(
    check: Check, on_stack: OnStack
) -> None:
    await check(on_stack(MeterKit()))


@pytest.mark.parametrize(
    "check",
    [c for c in driverkit.CHECKS if c is not driverkit.check_readings_arrive],
    ids=driverkit.check_name,
)
async def test_a_meter_that_closes_the_link_honours_the_contract(
    check: Check, on_stack: OnStack
) -> None:
    await check(on_stack(ClosingMeterKit()))


@pytest.mark.parametrize("check", driverkit.BOND_CHECKS, ids=driverkit.check_name)
async def test_a_meter_that_refuses_to_bond_is_parked(check: Check) -> None:
    await check(ClosingMeterKit())


@pytest.mark.slow
@pytest.mark.parametrize("check", driverkit.FAULT_CHECKS, ids=driverkit.check_name)
async def test_a_meter_that_keeps_the_link_survives_the_kit_faults(check: Check) -> None:
    await check(MeterKit())


@pytest.mark.slow
@pytest.mark.parametrize("check", driverkit.FAULT_CHECKS, ids=driverkit.check_name)
async def test_a_meter_that_closes_the_link_survives_the_kit_faults(check: Check) -> None:
    await check(ClosingMeterKit())


CLOCK_CHECKS = [c for c in driverkit.FAULT_CHECKS if c.__name__.startswith("check_device_clock")]


@pytest.mark.parametrize("check", CLOCK_CHECKS, ids=driverkit.check_name)
async def test_a_meter_without_current_time_skips_the_clock_checks(check: Check) -> None:
    with pytest.raises(pytest.skip.Exception, match="set_device_clock"):
        await check(NoClockMeterKit())
