"""The CGMS driver's `DriverKit`s (`gatewayd.plugin.kit`): its emulator, two topologies.

* `CgmsKit` - the emulator on an in-process virtual link (hooks called directly);
* `SiblingCgmsKit` - the emulator as ``gatewayd simulate --device cgms`` in its own process,
  reached over HCI on TCP (hooks are signals: SIGUSR1 drop, SIGUSR2 corrupt).

Both default to a fast sensor: one record a minute, two hours of memory, then a day replayed at
600x (a record every 0.1 s); a forced drop keeps it out of range for 0.5 s (records to
backfill). `CgmsKit` implements every fault hook of the kit (`driverkit.FAULT_CHECKS`): records
damaged in memory, the sensor's calendar (Session Start Time) off or reset to its epoch, a
memory reset (a new sensor session: offsets start again), duplicated and out-of-order live
records, a large memory (replayed at 600x) and a drop in the middle of the first report; the
sibling process takes them as ``--set`` options at start (`drivers.cgms.emulator`).
`sibling_emulator(settings)` starts the process alone (for end-to-end tests): it yields the
process and the ``tcp-client:...`` transport a gateway opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from drivers.cgms.convert import parse_session_key, session_key
from drivers.cgms.emulator.peripheral import CgmsPeripheral
from drivers.cgms.emulator.sensor import SensorConfig
from drivers.cgms.emulator.serve import emulated_cgms
from gatewayd.plugin import BleConfig, DriverPlugin, Reading
from gatewayd.plugin.emulation import BumbleHost, InProcessLink, bumble_session
from gatewayd.plugin.kit import DriverKit, Target

__all__ = ["FAST", "FAST_SETTINGS", "CgmsKit", "SiblingCgmsKit", "sibling_emulator"]

#: A sensor for tests: 1-minute records, two hours stored, then a day replayed at 600x.
FAST = SensorConfig(interval=1, age=1560.0, replay=1440.0, speed=600.0, pack=4)
#: The same as `gatewayd simulate` settings (a SIGUSR1 drop keeps it away 0.5 s).
FAST_SETTINGS = ("interval=1", "age=1560", "replay=1440", "speed=600", "pack=4", "away=0.5")
#: Seconds a forced drop keeps the sensor away: about five records to backfill.
AWAY = 0.5
#: Seconds the emulator process may take to serve.
START_TIMEOUT = 20.0
#: The sensor's calendar per `driverkit.CLOCK_FAULTS` (None: reset to its epoch).
CLOCK_SKEWS: dict[str, timedelta | None] = {
    "ahead_1h": timedelta(hours=1),
    "behind_7_months": -timedelta(days=213),
    "epoch": None,
    "right": timedelta(0),
}
#: Records a memory reset or a large memory replays live (at 600x) after what it holds.
REPLAYED = 30
#: Records of the first report before `drop_in_report` drops the link.
DROP_IN_REPORT = 60


def _plugin() -> DriverPlugin[Any]:
    from drivers.cgms import plugin

    return plugin


def _expected(
    readings: Sequence[Reading], held: Mapping[str, Sequence[int]]
) -> list[tuple[str, int]]:
    """The offsets the sensor held between the oldest and newest stored one, per session."""
    keys = []
    for session in {r.session for r in readings}:
        seqs = [r.seq for r in readings if r.session == session]
        offsets = held.get(session, range(0))
        keys += [(session, o) for o in offsets if min(seqs) <= o <= max(seqs)]
    return keys


def _central(link: InProcessLink) -> BumbleHost:
    """The link's gateway host, or a new one on its controller once a gateway closed it."""
    return (
        link.central if link.central.is_open else BumbleHost.on_controller(link.central_controller)
    )


class CgmsKit(DriverKit):
    """The CGMS driver against its emulator on an in-process virtual link."""

    live = True  # a CGM streams: each event comes once the backfill is done and records flow

    def __init__(
        self, config: SensorConfig = FAST, *, options: Mapping[str, Any] | None = None
    ) -> None:
        self.config = config
        self.options = dict(options or {})
        self.peripheral: CgmsPeripheral | None = None

    def make_plugin(self) -> DriverPlugin[Any]:
        return _plugin()

    @contextlib.asynccontextmanager
    async def start_emulator(self) -> AsyncIterator[Target]:
        async with emulated_cgms(self.config) as (link, peripheral):
            self.peripheral = peripheral
            yield Target(
                options=self.options,
                ble=BleConfig(stack="bumble", hci="in-process"),
                radio=lambda: bumble_session(_central(link)),
                idle=peripheral.wait_idle,
            )

    def emulator(self) -> CgmsPeripheral:
        """The running emulator."""
        if self.peripheral is None:
            raise RuntimeError("the emulator is not running")
        return self.peripheral

    def refuse_bonding(self) -> None:
        self.config = replace(self.config, bonding=True, refuse_bonding=True)

    async def force_link_drop(self) -> None:
        await self.emulator().drop_link(AWAY)

    async def corrupt_next(self) -> None:
        self.emulator().corrupt_next()

    def _true_start(self, session: str) -> datetime:
        """The emulator's true start of the sensor session a stored `session` names (the
        nearest: the driver derives it from the hub's clock)."""
        sensor = self.emulator().sensor
        named = parse_session_key(session) or sensor.start
        return min([sensor.start, *sensor.past], key=lambda start: abs(start - named))

    def expected_sequence(self, readings: Sequence[Reading]) -> list[tuple[str, int]]:
        sensor = self.emulator().sensor
        held = {}
        for session in {r.session for r in readings}:
            start = self._true_start(session)
            if start == sensor.start:
                held[session] = [o for o in sensor.offsets() if o not in sensor.damaged]
            else:
                held[session] = list(sensor.past[start])
        return _expected(readings, held)

    # -- fault hooks -----------------------------------------------------------------------------

    def true_time(self, reading: Reading) -> datetime:
        return self._true_start(reading.session) + timedelta(minutes=reading.seq)

    async def damage_in_memory(self, where: Sequence[str]) -> list[tuple[str, int]]:
        sensor = self.emulator().sensor
        return [(session_key(sensor.start), offset) for offset in sensor.damage(*where)]

    async def set_device_clock(self, fault: str) -> float:
        sensor = self.emulator().sensor
        skew = CLOCK_SKEWS[fault]
        if skew is None:
            sensor.reset_clock()
        else:
            sensor.clock_skew = skew
        return sensor.clock_skew.total_seconds()

    async def reset_memory(self) -> None:
        step = self.config.interval
        self.emulator().restart_session(REPLAYED * step, REPLAYED * step)

    async def disorder_records(self) -> None:
        self.emulator().disorder_next(3)

    async def fill_memory(self, count: int) -> None:
        step = self.config.interval
        self.emulator().restart_session((count + REPLAYED) * step, REPLAYED * step)

    async def drop_in_report(self) -> None:
        self.emulator().drop_in_report(DROP_IN_REPORT)

    async def records_in_flight(self, reports: int) -> None:
        self.emulator().in_flight_next(reports)


@contextlib.asynccontextmanager
async def sibling_emulator(
    settings: Sequence[str] = FAST_SETTINGS,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``gatewayd simulate --device cgms`` on a free port; yields (process, hci for a gateway)."""
    args = [f"--set={s}" for s in settings]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatewayd", "simulate", "--device", "cgms",
        "--hci", "tcp-server:127.0.0.1:0", *args,
        stdout=asyncio.subprocess.PIPE,
        # tracing every allocation makes the emulator's start-up take ~10 s instead of ~0.3 s
        env={k: v for k, v in os.environ.items() if k != "PYTHONTRACEMALLOC"},
    )  # fmt: skip
    assert process.stdout is not None  # noqa: S101 - stdout=PIPE
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while not (line := (await process.stdout.readline()).decode()).startswith("HCI "):
                if not line:
                    raise RuntimeError("the CGMS emulator exited before serving")
        yield process, line.split()[1]
    finally:
        if process.returncode is None:
            process.terminate()  # a clean stop
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


class SiblingCgmsKit(DriverKit):
    """The CGMS driver against ``gatewayd simulate --device cgms`` in its own process."""

    timeout = 45.0
    live = True

    def __init__(
        self, settings: Sequence[str] = FAST_SETTINGS, *, config: SensorConfig = FAST
    ) -> None:
        self.settings = tuple(settings)
        self.config = config  # what the settings say: the record grid of the expectations
        self.process: asyncio.subprocess.Process | None = None

    def make_plugin(self) -> DriverPlugin[Any]:
        return _plugin()

    @contextlib.asynccontextmanager
    async def start_emulator(self) -> AsyncIterator[Target]:
        async with sibling_emulator(self.settings) as (process, hci):
            self.process = process
            yield Target(ble=BleConfig(stack="bumble", hci=hci))

    def refuse_bonding(self) -> None:
        self.settings = (*self.settings, "bonding=true", "refuse_bonding=true")

    def _signal(self, signum: signal.Signals) -> None:
        if self.process is None or self.process.returncode is not None:
            raise RuntimeError("the emulator process is not running")
        self.process.send_signal(signum)

    async def force_link_drop(self) -> None:
        self._signal(signal.SIGUSR1)

    async def corrupt_next(self) -> None:
        self._signal(signal.SIGUSR2)

    def expected_sequence(self, readings: Sequence[Reading]) -> list[tuple[str, int]]:
        # the emulator's records lie on the interval grid from offset 0, all of them kept
        step = self.config.interval
        held = {}
        for session in {r.session for r in readings}:
            if parse_session_key(session) is not None:
                newest = max(r.seq for r in readings if r.session == session)
                held[session] = range(0, newest + 1, step)
        return _expected(readings, held)
