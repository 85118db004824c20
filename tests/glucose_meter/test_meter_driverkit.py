"""The glucose driver against the driver test kit (`gatewayd.testing.driverkit`).

Two kinds of meter: one that keeps the link and notifies new results at once (every check),
and one that closes the link shortly after each report, as most meters do, so every new result
comes with a new connection (every check but "readings arrive", which expects the device to
stay connected). The person tests every 0.1 s (the kit's checks wait for "N more readings"
after an event, as a CGM's steady stream gives them), and takes one more result whenever the
kit drops the link, so the reconnection always has something to backfill.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime

import pytest

from drivers.glucose import plugin
from drivers.glucose.convert import SESSION
from drivers.glucose.emulator import GlucoseMeterEmulator, sample_records
from gatewayd.driver import DriverPlugin
from gatewayd.models import Reading
from gatewayd.testing import driverkit
from gatewayd.transport.ble import BleConfig
from gatewayd.transport.bumble_backend import bumble_session
from gatewayd.transport.bumble_link import in_process_link

pytestmark = pytest.mark.timeout(40)


class MeterKit(driverkit.DriverKit):
    """A meter that keeps the link after a report and notifies new results while connected."""

    #: The emulator's `close_after_transfer` and the driver's `linger`.
    close_after: float | None = None
    linger: float = 30.0
    #: Seconds between the person's fingersticks.
    every: float = 0.1

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
                records=sample_records(3, end=datetime.now(UTC)),
                close_after_transfer=self.close_after,
                notify_new=True,
                require_bonding=self.refusing,
                refuse_bonding=self.refusing,
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

    def expected_sequence(self, readings: Sequence[Reading]) -> Sequence[driverkit.Key]:
        seqs = [r.seq for r in readings]
        low, high = min(seqs), max(seqs)
        return [(SESSION, r.seq) for r in self.meter.records if low <= r.seq <= high]


class ClosingMeterKit(MeterKit):
    """A meter that closes the link 0.2 s after a report; the driver does not linger."""

    close_after = 0.2
    linger = 0.0


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
