"""`gatewayd simulate --device dexcom-receiver [--pty-link PATH]`: an emulated receiver on a pty.

Prints the `path` to configure (PATH, default $TMPDIR/gatewayd-dexcom-receiver: a symlink to
the pty that survives unplug/replug) and a ``[[devices]]`` table, then serves until Ctrl-C,
SIGTERM or ``--duration``.

Options (``--set KEY=VALUE``):

  model     "g4" (13-byte EGV records, default) or "g6" (25-byte records)
  serial    the receiver's SerialNumber (default "SM10000001")
  seed      the simulated person (drivers.simulator.physiology; default 1)
  interval  receiver seconds between EGV records, >= 1 (default 300)
  history   seconds of the past the receiver's clock starts at, >= 0 (default 0); the first
            `history / speed` real seconds replay it `speed` times faster
  speed     replay acceleration, >= 1 (default 1)

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
from gatewayd.options import OptionReader
from gatewayd.simulate import SimulateContext

#: Where the pty symlink goes without --pty-link.
DEFAULT_LINK = Path(tempfile.gettempdir()) / "gatewayd-dexcom-receiver"


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
    r.finish()
    link = context.pty_link or DEFAULT_LINK
    clock = ReplayClock(history=history, speed=speed)
    emulator = ReceiverEmulator(
        link, clock=clock, model=model, seed=seed, interval=interval, serial=serial
    )
    loop = asyncio.get_running_loop()
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
