"""The emulated G5/G6 transmitter as a process: ``gatewayd simulate --device dexcom-g6``.

    gatewayd simulate --device dexcom-g6 --hci tcp-server:127.0.0.1:0 \\
        --set transmitter_id=8G1234 [--set KEY=VALUE]...

The transmitter (`drivers.dexcom_g6.emulator`) owns a virtual radio link and serves the
gateway's side as HCI on the ``--hci`` socket (port 0: a free one). It prints
``HCI tcp-client:HOST:PORT`` first: the ``[ble] hci`` of the gateway that reads it
(``stack = "bumble"``), with a ``[[devices]]`` table ``driver = "dexcom_g6"`` and the same
``transmitter_id`` (another id fails authentication: the gateway parks the device). It wakes
every `interval` seconds, advertises as ``Dexcom`` + the id's last two characters, serves one
connection for at most `window` seconds, and sleeps again.

Options (``--set KEY=VALUE``):

  transmitter_id  the emulated transmitter's id (default "8G1234")
  seed            the simulated person (default: derived from the id)
  age             seconds since the transmitter's activation at start (default 864000)
  session_age     seconds since the sensor session began at start, <= age (default 86400);
                  within the first `warmup` seconds records carry no glucose
  session         false: no sensor session runs (no glucose at all; default true)
  history         seconds of the past replayed `speed` times faster than real time before the
                  transmitter runs in real time (default 0); its clock never passes the wall
                  clock. While it replays, the gateway (on real time) places readings at its
                  own now minus the transmitter's age of the record: times are compressed.
  speed           replay acceleration, >= 1 (default 1)
  interval        seconds between measurements / wake-ups, >= 10 (default 300)
  warmup          seconds of warm-up of a new sensor session (default 7200)
  memory          seconds of records kept for backfill (default 86400, at most 170000: one
                  backfill carries at most 573 records)
  window          seconds a wake-up lasts (advertising + one connection), > 0 (default 10)
  require_bond    Control needs an encrypted (bonded) link (default true)
  refuse_bonding  refuse every pairing request (default false; with require_bond the gateway
                  parks the transmitter: "bonding refused by the transmitter")
  outage          wake-ups SIGUSR2 makes the transmitter sleep through (default 6)

Faults (docs/dexcom-g6.md, "Clocks" and "Damaged records"):

  damaged         records damaged for good in memory, among those of the last `memory`
                  seconds at start: "start", "middle", "end", comma-separated (default none)
  clock_skew      seconds the transmitter's clock is off from the start, >= -age (negative:
                  behind, e.g. -18403200 for 7 months; -age: back to its epoch; default 0)
  reset_after     wake-ups after which the transmitter resets: clock at 0, memory erased, a
                  new sensor session (default 0: never)
  disorder        backfills that carry every record twice, newest first (default 0)
  drop_in_backfill  frames of the first backfill before the link drops (default: none)

Signals: SIGUSR1 = drop the link now; SIGUSR2 = miss the next `outage` wake-ups (the hub is
out of range; the transmitter keeps measuring); SIGHUP = a new sensor session (warm-up again).
SIGTERM / SIGINT / ``--duration`` stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drivers.dexcom_g6.clock import AcceleratedClock
from drivers.dexcom_g6.emulator import G6Emulator
from drivers.dexcom_g6.transmitter import (
    INTERVAL,
    MEMORY,
    SESSION_AGE,
    TRANSMITTER_AGE,
    WARMUP,
    Transmitter,
)
from gatewayd.plugin import OptionReader, UsageError
from protocols.dexcom_g6.auth import normalize_transmitter_id
from protocols.dexcom_g6.framing import advertised_name

if TYPE_CHECKING:
    from gatewayd.plugin import SimulateContext

__all__ = ["TransmitterSettings", "parse_emulator_options", "simulate"]

#: The most memory one backfill can carry at 5-minute records (573 records, §2.6).
MAX_MEMORY = 170_000


@dataclass(frozen=True, slots=True)
class TransmitterSettings:
    """The emulated transmitter's options (see the module docstring)."""

    transmitter_id: str = "8G1234"
    seed: int | None = None
    age: float = TRANSMITTER_AGE
    session_age: float = SESSION_AGE
    session: bool = True
    history: float = 0.0
    speed: float = 1.0
    interval: int = INTERVAL
    warmup: int = WARMUP
    memory: int = MEMORY
    window: float = 10.0
    require_bond: bool = True
    refuse_bonding: bool = False
    outage: int = 6
    damaged: tuple[str, ...] = ()
    clock_skew: int = 0
    reset_after: int = 0
    disorder: int = 0
    drop_in_backfill: int | None = None


def parse_emulator_options(reader: OptionReader) -> TransmitterSettings:
    """Read the emulator's options (unknown keys are refused)."""
    d = TransmitterSettings()
    raw = reader.raw("transmitter_id", d.transmitter_id)
    text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
    if not isinstance(text, str):
        raise reader.error("transmitter_id", f"must be 6 letters or digits, got {raw!r}")
    try:
        transmitter_id = normalize_transmitter_id(text)
    except ValueError as exc:
        raise reader.error("transmitter_id", str(exc)) from None
    age = reader.number("age", d.age, minimum=0)
    settings = TransmitterSettings(
        transmitter_id=transmitter_id,
        seed=reader.integer("seed") if reader.has("seed") else None,
        age=age,
        session_age=reader.number("session_age", d.session_age, minimum=0, maximum=age),
        session=reader.boolean("session", d.session),
        history=reader.number("history", d.history, minimum=0),
        speed=reader.number("speed", d.speed, minimum=1),
        interval=reader.integer("interval", d.interval, minimum=10),
        warmup=reader.integer("warmup", d.warmup, minimum=0),
        memory=reader.integer("memory", d.memory, minimum=10, maximum=MAX_MEMORY),
        window=reader.number("window", d.window, minimum=0, exclusive_minimum=True),
        require_bond=reader.boolean("require_bond", d.require_bond),
        refuse_bonding=reader.boolean("refuse_bonding", d.refuse_bonding),
        outage=reader.integer("outage", d.outage, minimum=0),
        damaged=_positions(reader),
        clock_skew=reader.integer("clock_skew", d.clock_skew, minimum=-int(age)),
        reset_after=reader.integer("reset_after", d.reset_after, minimum=0),
        disorder=reader.integer("disorder", d.disorder, minimum=0),
        drop_in_backfill=(
            reader.integer("drop_in_backfill", minimum=0)
            if reader.has("drop_in_backfill")
            else None
        ),
    )
    reader.finish()
    if settings.memory < settings.interval:
        raise reader.error("memory", f"must be >= interval ({settings.interval})")
    return settings


def _positions(reader: OptionReader) -> tuple[str, ...]:
    raw = reader.raw("damaged", "")
    if not isinstance(raw, str):
        raise reader.error("damaged", f"must be start, middle and/or end, got {raw!r}")
    where = tuple(p.strip() for p in raw.split(",") if p.strip())
    wrong = [p for p in where if p not in ("start", "middle", "end")]
    if wrong:
        raise reader.error("damaged", f"unknown positions {wrong}: use start, middle, end")
    return where


def _tcp_server(hci: str | None) -> tuple[str, int]:
    scheme, _, spec = (hci or "").partition(":")
    host, _, port = spec.rpartition(":")
    if scheme != "tcp-server" or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError("--hci", f"the G5/G6 emulator serves tcp-server:HOST:PORT, got {hci!r}")
    return host, int(port)


def make_transmitter(settings: TransmitterSettings) -> Transmitter:
    """The transmitter of `settings`, on an `AcceleratedClock`."""
    clock = AcceleratedClock(history=settings.history, speed=settings.speed)
    return Transmitter(
        settings.transmitter_id,
        clock=clock,
        seed=settings.seed,
        transmitter_age=settings.age,
        session_age=settings.session_age if settings.session else None,
        interval=settings.interval,
        warmup=settings.warmup,
        memory=settings.memory,
    )


def _faults(emulator: G6Emulator, settings: TransmitterSettings) -> None:
    """Set the faults of `settings` on a transmitter about to run."""
    tx = emulator.transmitter
    if settings.damaged:
        now = tx.elapsed()
        tx.damage(settings.damaged, now - tx.memory, now)
    if settings.clock_skew:
        tx.jump_clock(max(settings.clock_skew, -(tx.elapsed() + 1)))
    emulator.reset_at_wakeup = settings.reset_after or None
    emulator.disorder_backfills = settings.disorder
    emulator.drop_in_backfill = settings.drop_in_backfill


@contextlib.asynccontextmanager
async def _signals(emulator: G6Emulator, outage: int) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def drop() -> None:
        task = loop.create_task(emulator.drop_link())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def miss() -> None:
        emulator.skip_wakeups += outage

    def new_session() -> None:
        emulator.transmitter.start_session()

    handlers = {signal.SIGUSR1: drop, signal.SIGUSR2: miss, signal.SIGHUP: new_session}
    for signum, handler in handlers.items():
        loop.add_signal_handler(signum, handler)
    try:
        yield
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
        await asyncio.gather(*tasks, return_exceptions=True)


async def simulate(context: SimulateContext) -> None:
    """`gatewayd simulate --device dexcom-g6`: serve a transmitter until `context.stop`."""
    from gatewayd.plugin.emulation import serve_sibling_link

    host, port = _tcp_server(context.hci)
    settings = parse_emulator_options(OptionReader(dict(context.options), "--set", ""))
    name = advertised_name(settings.transmitter_id)
    async with serve_sibling_link(bind=host, port=port, peripheral_name=name) as link:
        emulator = G6Emulator(
            link.peripheral,
            make_transmitter(settings),
            window=settings.window,
            require_bond=settings.require_bond,
            refuse_bonding=settings.refuse_bonding,
        )
        _faults(emulator, settings)
        context.announce(f"HCI {link.hci}")
        wakeups = asyncio.create_task(emulator.run(), name="dexcom-g6-wakeups")
        try:
            async with _signals(emulator, settings.outage):
                await context.stop.wait()
        finally:
            wakeups.cancel()
            await asyncio.gather(wakeups, return_exceptions=True)
            await emulator.close()
