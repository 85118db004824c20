"""`gatewayd simulate --device dexcom-receiver [--pty-link PATH]`: an emulated receiver on a pty.

Prints the `path` to configure (PATH, default $TMPDIR/gatewayd-dexcom-receiver: a symlink to
the pty that survives unplug/replug) and a ``[[devices]]`` table, then serves until Ctrl-C,
SIGTERM or ``--duration``.

Options (``--set KEY=VALUE``):

  model     "g4" (13-byte EGV records, default) or "g6" (25-byte records)
  serial    the receiver's SerialNumber (default "SM10000001")
  seed      the simulated person (drivers.emulation.physiology; default 1)
  interval  receiver seconds between EGV records, >= 1 (default 300)
  history   seconds of the past the receiver's clock starts at, >= 0 (default 0); the first
            `history / speed` real seconds replay it `speed` times faster
  speed     replay acceleration, >= 1 (default 1; above 1 the receiver's clock runs fast
            while it replays, and the driver sees it jump at every poll)

Faults real receivers have (record and page counts are taken back from the newest at start):

  clock_error        seconds the receiver's clock is off since its first record (3600: an
                     hour fast; -18144000: seven months slow; default 0)
  reset_clock_after  real seconds after which its clock restarts at its epoch, 2009-01-01
  erase_after        real seconds after which its EGV database is erased (records start again)
  damaged_pages      pages whose header CRC fails on every read, e.g. [0, 5] (0: the newest)
  damaged_records    records whose CRC fails on every read, e.g. [2, 40]
  duplicates         records stored twice, e.g. [3]
  late               records stored three records late (out of order), e.g. [9]
  drop_after_pages   pull the cable once this many EGV pages were asked for (a link drop in the
                     middle of a backfill); it is plugged back in 2 s later

Hooks (signals to the process): SIGUSR1 unplugs the receiver, or plugs it back in; SIGUSR2
corrupts the CRC of the next answer; SIGHUP stalls it (requests unanswered), or ends the stall.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import cast

from drivers.dexcom_receiver.emulator import Model, ReceiverEmulator, ReplayClock
from drivers.dexcom_receiver.session import DRIVER
from gatewayd.plugin import OptionReader, SimulateContext

#: Where the pty symlink goes without --pty-link.
DEFAULT_LINK = Path(tempfile.gettempdir()) / "gatewayd-dexcom-receiver"
#: Seconds the cable stays out after `drop_after_pages`.
_AWAY = 2.0
#: Records a `late` record is stored after.
_LATE_BY = 3


def _counts(r: OptionReader, name: str) -> list[int]:
    """A list of counts back from the newest (non-negative integers)."""
    value = r.raw(name, [])
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise r.error(name, f"must be a list of integers >= 0, got {value!r}")
    return value


def _damage(emulator: ReceiverEmulator, r: OptionReader) -> None:
    """The memory faults of the options, placed back from the newest record and page."""
    db, now = emulator.database, emulator.clock.now()
    newest, size = db.newest(now), db.size(now)
    pages = db.page_range(now)
    last = -1 if pages is None else pages[1]
    db.damaged_pages |= {last - k for k in _counts(r, "damaged_pages")}
    for k in _counts(r, "damaged_records"):
        db.damaged_records.update(db.indices(size - 1 - k, 1, now))
    for k in _counts(r, "duplicates"):
        db.duplicate(newest - k)
    for k in _counts(r, "late"):
        db.store_late(newest - k, newest - k + _LATE_BY)


def _toggle_plug(emulator: ReceiverEmulator) -> None:
    if emulator.plugged:
        emulator.unplug()
    else:
        emulator.replug()


def _toggle_stall(emulator: ReceiverEmulator) -> None:
    emulator.stalled = not emulator.stalled


async def simulate(context: SimulateContext) -> None:
    """Serve an emulated receiver until `context.stop` is set."""
    r = OptionReader(context.options, None, "--set")
    model = cast(Model, r.choice("model", ("g4", "g6"), "g4"))
    serial = r.string("serial", "SM10000001")
    seed = r.integer("seed", 1)
    interval = r.integer("interval", 300, minimum=1)
    history = r.number("history", 0.0, minimum=0)
    speed = r.number("speed", 1.0, minimum=1)
    clock_error = r.integer("clock_error", 0)
    timers = {
        name: r.number(name, -1.0, minimum=0) if r.has(name) else None
        for name in ("reset_clock_after", "erase_after")
    }
    drop = r.integer("drop_after_pages", 0, minimum=0)
    link = context.pty_link or DEFAULT_LINK
    clock = ReplayClock(history=history, speed=speed)
    emulator = ReceiverEmulator(
        link,
        clock=clock,
        model=model,
        seed=seed,
        interval=interval,
        serial=serial,
        clock_error=clock_error,
    )
    _damage(emulator, r)
    r.finish()
    loop = asyncio.get_running_loop()
    actions = {"reset_clock_after": emulator.reset_clock, "erase_after": emulator.erase}
    for name, after in timers.items():
        if after is not None:
            loop.call_later(after, actions[name])
    if drop:
        emulator.unplug_after(drop, replug_after=_AWAY)
    hooks: dict[signal.Signals, Callable[[], None]] = {
        signal.SIGUSR1: lambda: _toggle_plug(emulator),
        signal.SIGUSR2: emulator.corrupt_next,
        signal.SIGHUP: lambda: _toggle_stall(emulator),
    }
    async with emulator:
        for signum, hook in hooks.items():
            loop.add_signal_handler(signum, hook)
        try:
            context.announce(f"Dexcom receiver emulator ({model}, serial {serial}): {link}")
            context.announce(f'path = "{link}"')
            context.announce(
                f'gateway config: [[devices]] id = "receiver", driver = "{DRIVER}", '
                f'path = "{link}"; hooks: kill -USR1 {os.getpid()} unplugs / replugs, -USR2 '
                "corrupts the next answer, -HUP stalls / resumes"
            )
            await context.stop.wait()
        finally:
            for signum in hooks:
                loop.remove_signal_handler(signum)
