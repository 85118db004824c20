"""The emulated glucose meter as a process of its own: ``gatewayd simulate --device glucose``.

    gatewayd simulate --device glucose --hci tcp-server:127.0.0.1:0 [--set KEY=VALUE]...

The meter (`drivers.glucose.emulator`) owns a virtual radio link and serves the gateway's side
as HCI on the ``--hci`` socket (port 0: a free one). It prints ``HCI tcp-client:HOST:PORT``
first: the ``[ble] hci`` of the gateway that reads it (``stack = "bumble"``), with a
``[[devices]]`` table ``driver = "glucose"`` and ``tz`` = the meter's `tz`; then a line with that
config and the hooks.

Options (``--set KEY=VALUE``):

  records        sample results in the meter's memory at start, >= 0 (default 20)
  interval       seconds between new results the meter takes by itself, >= 0 (default 0: none)
  serial         serial number (default "GLS-EMU-0001")
  name           advertised name (default "meter+EMU0001")
  tz             the zone of the meter's clock (default "UTC"; "local" = this machine's)
  close_after    seconds the meter keeps the link after a report, >= 0 (default 0.5)
  bonding        true: the meter requires an encrypted (bonded) link (default false)
  refuse_bonding true: the meter refuses every pairing request (default false; with bonding
                 the gateway parks it: "bonding refused by the meter")
  current_time   true: the meter serves the Current Time Service (default false)
  clock          seconds the meter's calendar is off (+ ahead, - behind), its records
                 stamped by it too (default 0; e.g. 3600, -18403200 for seven months)
  clock_reset    true: the calendar restarted at the meter's epoch (2000-01-01) at start,
                 after the records in memory were stored (default false)
  damaged        sequence numbers of records damaged in memory, comma separated ("1,10,20"):
                 sent one byte short on every read (default none)
  drop_after     the link drops after this many records were sent, once (mid-report; 0: no)
  in_flight      times a report begins with the newest record, as a live notification the
                 meter had queued when it read the request (default 0)
  commands       true: test commands on stdin, one per line, each answered with one line on
                 stdout (``ok ...`` or ``error ...``): ``add MGDL``, ``high``, ``low``, ``drop``,
                 ``drop-after N``, ``corrupt SEQ [TIMES]``, ``damage SEQ``, ``clock SECONDS``,
                 ``clock-reset``, ``reset-memory`` (sequence numbers start again), ``count``
                 (answers ``ok RECORDS CONNECTIONS``); the end of stdin stops the meter

Signals: SIGUSR1 = a new result, SIGUSR2 = drop the link; SIGTERM / SIGINT / ``--duration``
stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from drivers.glucose.emulator import SERIAL, GlucoseMeterEmulator, sample_records
from drivers.glucose.options import zone
from gatewayd.plugin import OptionReader, SimulateContext, UsageError

__all__ = ["MeterSettings", "command", "parse_meter_options", "simulate"]


@dataclass(frozen=True, slots=True)
class MeterSettings:
    """The emulated meter's options (see the module docstring)."""

    records: int = 20
    interval: float = 0.0
    serial: str = SERIAL
    name: str = "meter+EMU0001"
    tz: str = "UTC"
    close_after: float = 0.5
    bonding: bool = False
    refuse_bonding: bool = False
    current_time: bool = False
    clock: float = 0.0
    clock_reset: bool = False
    damaged: frozenset[int] = frozenset()
    drop_after: int = 0
    in_flight: int = 0
    commands: bool = False


def parse_meter_options(reader: OptionReader) -> MeterSettings:
    """Read the meter's options (unknown keys are refused)."""
    d = MeterSettings()
    tz = reader.string("tz", d.tz)
    try:
        zone(tz)
    except ValueError as exc:
        raise reader.error("tz", str(exc)) from None
    settings = MeterSettings(
        records=reader.integer("records", d.records, minimum=0, maximum=0xFFFF),
        interval=reader.number("interval", d.interval, minimum=0),
        serial=reader.string("serial", d.serial),
        name=reader.string("name", d.name),
        tz=tz,
        close_after=reader.number("close_after", d.close_after, minimum=0),
        bonding=reader.boolean("bonding", d.bonding),
        refuse_bonding=reader.boolean("refuse_bonding", d.refuse_bonding),
        current_time=reader.boolean("current_time", d.current_time),
        clock=reader.number("clock", d.clock),
        clock_reset=reader.boolean("clock_reset", d.clock_reset),
        damaged=_sequence_numbers(reader),
        drop_after=reader.integer("drop_after", d.drop_after, minimum=0),
        in_flight=reader.integer("in_flight", d.in_flight, minimum=0),
        commands=reader.boolean("commands", d.commands),
    )
    reader.finish()
    return settings


def _sequence_numbers(reader: OptionReader) -> frozenset[int]:
    value = reader.raw("damaged", "")  # one number comes as a number
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str):
        raise reader.error("damaged", f"not comma-separated sequence numbers: {value!r}")
    try:
        seqs = frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise reader.error("damaged", f"not comma-separated sequence numbers: {text!r}") from None
    if any(not 0 <= seq <= 0xFFFF for seq in seqs):
        raise reader.error("damaged", "sequence numbers are 0..65535")
    return seqs


async def command(meter: GlucoseMeterEmulator, line: str) -> str:
    """Carry out one test command (see the module docstring); the answer line."""
    answer = "ok"
    try:
        match line.split():
            case ["add", mgdl]:
                answer = f"ok {meter.add_measurement(float(mgdl)).seq}"
            case ["high" | "low" as side]:
                answer = f"ok {meter.add_measurement(out_of_range=side).seq}"
            case ["drop"]:
                await meter.drop_link()
            case ["drop-after", count]:
                meter.drop_after(int(count))
            case ["corrupt", seq, *times]:
                meter.corrupt(int(seq), int(times[0]) if times else 1)
            case ["damage", seq]:
                meter.damaged.add(int(seq))
            case ["clock", seconds]:
                meter.set_calendar(timedelta(seconds=float(seconds)))
            case ["clock-reset"]:
                meter.reset_calendar()
            case ["reset-memory"]:
                meter.reset_memory()
            case ["count"]:
                answer = f"ok {len(meter.records)} {meter.connections}"
            case _:
                answer = f"error unknown command {line.strip()!r}"
    except ValueError as exc:
        answer = f"error {exc}"
    return answer


def _tcp_server(hci: str | None) -> tuple[str, int]:
    scheme, _, spec = (hci or "").partition(":")
    host, _, port = spec.rpartition(":")
    if scheme != "tcp-server" or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError("--hci", f"the glucose meter serves tcp-server:HOST:PORT, got {hci!r}")
    return host, int(port)


@contextlib.asynccontextmanager
async def _signals(meter: GlucoseMeterEmulator, rng: random.Random) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def drop() -> None:
        task = loop.create_task(meter.drop_link())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGUSR1, lambda: meter.add_measurement(rng.randint(60, 250)))
    loop.add_signal_handler(signal.SIGUSR2, drop)
    try:
        yield
    finally:
        for signum in (signal.SIGUSR1, signal.SIGUSR2):
            loop.remove_signal_handler(signum)
        await asyncio.gather(*tasks, return_exceptions=True)


async def _take_results(meter: GlucoseMeterEmulator, interval: float, rng: random.Random) -> None:
    while True:
        await asyncio.sleep(interval)
        meter.add_measurement(rng.randint(60, 250))


async def _commands(meter: GlucoseMeterEmulator, context: SimulateContext) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while line := (await reader.readline()).decode():
            context.announce(await command(meter, line))
    finally:
        transport.close()
    context.stop.set()


async def simulate(context: SimulateContext) -> None:
    """`gatewayd simulate --device glucose`: serve a meter until `context.stop` is set."""
    from gatewayd.plugin.emulation import serve_sibling_link

    host, port = _tcp_server(context.hci)
    settings = parse_meter_options(OptionReader(context.options, "--set", ""))
    tz = zone(settings.tz)
    rng = random.Random(settings.serial)
    async with serve_sibling_link(bind=host, port=port, peripheral_name=settings.name) as link:
        meter = GlucoseMeterEmulator(
            link.peripheral,
            records=sample_records(settings.records, tz=tz),
            serial=settings.serial,
            name=settings.name,
            tz=tz,
            close_after_transfer=settings.close_after,
            require_bonding=settings.bonding,
            refuse_bonding=settings.refuse_bonding,
            current_time=settings.current_time,
        )
        if settings.clock:
            meter.set_calendar(timedelta(seconds=settings.clock), since_start=True)
        if settings.clock_reset:
            meter.reset_calendar()
        meter.damaged.update(settings.damaged)
        if settings.drop_after:
            meter.drop_after(settings.drop_after)
        meter.in_flight_next(settings.in_flight)
        await meter.start()
        context.announce(f"HCI {link.hci}")
        context.announce(
            f'gateway config: [ble] stack = "bumble", hci = "{link.hci}"; '
            f'[[devices]] driver = "glucose", tz = "{settings.tz}"; hooks: kill -USR1 '
            f"{os.getpid()} takes a new result, kill -USR2 {os.getpid()} drops the link"
        )
        tasks = []
        if settings.interval > 0:
            tasks.append(asyncio.create_task(_take_results(meter, settings.interval, rng)))
        if settings.commands:
            tasks.append(asyncio.create_task(_commands(meter, context)))
        try:
            async with _signals(meter, rng):
                await context.stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await meter.stop()
