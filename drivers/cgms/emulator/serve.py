"""Running the CGMS emulator: on an in-process virtual link (tests) or as its own process.

* `emulated_cgms(config)` - an async context manager yielding `(link, peripheral)`: a Bumble
  `InProcessLink` whose `central` host a gateway in this process uses, and the advertising
  `CgmsPeripheral` with its test hooks.
* `simulate(context)` - the runner of ``gatewayd simulate --device cgms --hci
  tcp-server:HOST:PORT`` (`gatewayd.emulators`): serves the gateway's controller on that socket,
  prints ``HCI tcp-client:HOST:PORT`` first, and maps SIGUSR1 / SIGUSR2 / SIGHUP to the hooks
  (drop the link / damage the next record / new sensor session) until SIGTERM.
* `parse_emulator_options(reader)` - the options (see `drivers.cgms.emulator`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from drivers.cgms.emulator.peripheral import CgmsPeripheral
from drivers.cgms.emulator.sensor import POSITIONS, CgmsSensor, SensorConfig
from gatewayd.plugin import OptionReader, SimulateContext, UsageError
from gatewayd.plugin.emulation import InProcessLink, in_process_link, serve_sibling_link
from protocols.cgms.measurement import StatusOctetOrder
from protocols.cgms.state import SensorStatus

__all__ = ["EmulatorOptions", "emulated_cgms", "parse_emulator_options", "simulate"]

_STATUS_NAMES = {str(flag.name).lower(): flag for flag in SensorStatus}


@dataclass(frozen=True, slots=True)
class EmulatorOptions:
    """The emulated sensor and its advertised name."""

    sensor: SensorConfig
    name: str = "CGMS Emulator"
    #: Seconds a SIGUSR1 drop keeps the sensor out of range (not advertising).
    away: float = 0.0
    #: Times two new live records go out newest first, the older one twice.
    disorder: int = 0
    #: Records of the first RACP report after which the link drops (None: no drop).
    drop_in_report: int | None = None
    #: RACP reports that begin with the newest record, notified as a live one in flight.
    in_flight: int = 0

    def arm(self, peripheral: CgmsPeripheral) -> None:
        """Set the peripheral's one-shot faults."""
        peripheral.disorder_next(self.disorder)
        peripheral.in_flight_next(self.in_flight)
        if self.drop_in_report is not None:
            peripheral.drop_in_report(self.drop_in_report)


def parse_emulator_options(reader: OptionReader) -> EmulatorOptions:
    """Read the emulator's options (unknown keys are refused)."""
    d = SensorConfig()
    names = reader.raw("annunciation", [])
    if not isinstance(names, list) or not all(n in _STATUS_NAMES for n in names):
        choices = ", ".join(_STATUS_NAMES)
        raise reader.error("annunciation", f"must be a list of status names ({choices})")
    flags = SensorStatus(0)
    for name in names:
        flags |= _STATUS_NAMES[name]
    damaged = reader.raw("damaged", [])
    if not isinstance(damaged, list) or not all(
        d in POSITIONS or (isinstance(d, int) and 0 <= d <= 0xFFFF) for d in damaged
    ):
        raise reader.error("damaged", f"must be a list of offsets or of {', '.join(POSITIONS)}")
    age = reader.number("age", d.age, minimum=0)
    replay = reader.number("replay", d.replay, minimum=0, maximum=age)
    sensor = SensorConfig(
        serial=reader.string("serial", d.serial),
        interval=reader.integer("interval", d.interval, minimum=1, maximum=254),
        age=age,
        replay=replay,
        speed=reader.number("speed", d.speed, minimum=1),
        seed=reader.integer("seed", d.seed),
        e2e_crc=reader.boolean("e2e_crc", d.e2e_crc),
        trend=reader.boolean("trend", d.trend),
        quality=reader.boolean("quality", d.quality),
        annunciation=flags,
        order=StatusOctetOrder(reader.choice("order", ("sig", "nordic"), d.order.value)),
        pack=reader.integer("pack", d.pack, minimum=1, maximum=64),
        capacity=reader.integer("capacity", d.capacity, minimum=1, maximum=1_000_000),
        run_time_h=reader.integer("run_time_h", d.run_time_h, minimum=0, maximum=0xFFFF),
        stopped=reader.boolean("stopped", d.stopped),
        bonding=reader.boolean("bonding", d.bonding),
        refuse_bonding=reader.boolean("refuse_bonding", d.refuse_bonding),
        ranges=reader.boolean("ranges", d.ranges),
        restart_age=reader.number("restart_age", d.restart_age, minimum=0),
        restart_replay=reader.number("restart_replay", d.restart_replay, minimum=0),
        clock_skew=reader.number("clock_skew", d.clock_skew),
        clock_epoch=reader.boolean("clock_epoch", d.clock_epoch),
        damaged=tuple(damaged),
    )
    if sensor.restart_replay > sensor.restart_age:
        raise reader.error("restart_replay", "must be <= restart_age")
    drop = reader.raw("drop_in_report", None)
    options = EmulatorOptions(
        sensor,
        reader.string("name", "CGMS Emulator"),
        reader.number("away", 0.0, minimum=0),
        reader.integer("disorder", 0, minimum=0),
        None if drop is None else reader.integer("drop_in_report", minimum=1),
        reader.integer("in_flight", 0, minimum=0),
    )
    reader.finish()
    return options


@contextlib.asynccontextmanager
async def emulated_cgms(
    config: SensorConfig | None = None,
    *,
    name: str = "CGMS Emulator",
    wall: Callable[[], datetime] | None = None,
) -> AsyncIterator[tuple[InProcessLink, CgmsPeripheral]]:
    """An advertising emulated sensor on a virtual link in this process."""
    sensor = CgmsSensor(config or SensorConfig(), wall=wall or (lambda: datetime.now(UTC)))
    async with in_process_link(peripheral_name=name) as link:
        peripheral = CgmsPeripheral(link.peripheral, sensor, name=name)
        await peripheral.start()
        try:
            yield link, peripheral
        finally:
            await peripheral.close()


def _tcp_server(hci: str | None) -> tuple[str, int]:
    scheme, _, spec = (hci or "").partition(":")
    host, _, port = spec.rpartition(":")
    if scheme != "tcp-server" or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError("--hci", f"the cgms emulator serves tcp-server:HOST:PORT, got {hci!r}")
    return host, int(port)


async def simulate(context: SimulateContext) -> None:
    """`gatewayd simulate --device cgms`: serve until `context.stop` is set."""
    host, port = _tcp_server(context.hci)
    options = parse_emulator_options(OptionReader(context.options, "--set", ""))
    # stdout carries the announced lines a parent process reads; the log goes to stderr
    log = structlog.wrap_logger(structlog.PrintLogger(sys.stderr)).bind(component="cgms_emulator")
    async with serve_sibling_link(bind=host, port=port, peripheral_name=options.name) as link:
        peripheral = CgmsPeripheral(link.peripheral, CgmsSensor(options.sensor), name=options.name)
        options.arm(peripheral)
        await peripheral.start()
        loop = asyncio.get_running_loop()
        hooks: dict[signal.Signals, Callable[[], object]] = {
            signal.SIGUSR1: lambda: peripheral.drop_link_soon(options.away),
            signal.SIGUSR2: peripheral.corrupt_next,
            signal.SIGHUP: peripheral.restart_session,
        }
        for signum, hook in hooks.items():
            loop.add_signal_handler(signum, _logged(log, signum, hook))
        try:
            context.announce(f"HCI {link.hci}")
            context.announce(
                f'gateway config: [ble] stack = "bumble", hci = "{link.hci}"; hooks: kill -USR1 '
                f"{os.getpid()} drops the link, -USR2 damages the next record, -HUP starts a "
                "new sensor session"
            )
            log.info("cgms_emulator_ready", hci=link.hci, serial=options.sensor.serial)
            await context.stop.wait()
        finally:
            for signum in hooks:
                loop.remove_signal_handler(signum)
            await peripheral.close()


def _logged(
    log: structlog.typing.FilteringBoundLogger, signum: signal.Signals, hook: Callable[[], object]
) -> Callable[[], None]:
    def run() -> None:
        log.info("cgms_emulator_hook", signal=signum.name)
        hook()

    return run
