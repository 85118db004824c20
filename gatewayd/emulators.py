"""`gatewayd simulate --device NAME`: run a driver's emulated device standalone, in this process.

A device maker or integrator points a gateway (or any program) at the emulator exactly as at
the real device, with no hardware:

    gatewayd simulate --device NAME [--hci SPEC] [--pty-link PATH] [--duration S] [--set K=V]...

* BLE emulators (`cgms`, `glucose`) serve the gateway's controller as HCI on a socket
  (``--hci tcp-server:127.0.0.1:PORT``) and announce the ``[ble] hci`` to configure.
* Serial emulators (`dexcom-receiver`) serve a pseudo-terminal behind the symlink
  ``--pty-link PATH`` (it survives unplug/replug) and announce the ``path`` to configure.

A runner is ``async def simulate(context: SimulateContext) -> None`` next to its driver: it
reads its options from `context.options` (``--set KEY=VALUE``, each VALUE a TOML value when it
parses as one, else a string; read them with `gatewayd.options.OptionReader`), prints what to
configure with `context.announce(line)` (one flushed line on stdout, so a parent process can
read it), and serves until `context.stop` is set (SIGTERM, SIGINT, or `--duration`).

Adding a device: the driver's plugin declares it,
``DriverPlugin(..., emulator=Emulator("NAME", "package.module:function"))``. The emulators are
found through the installed driver plugins (the entry points of ``gatewayd.drivers``, as the
daemon finds drivers), and a runner is imported only when chosen: gatewayd never imports a
driver package itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import sys
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gatewayd import registry
from gatewayd.driver import Emulator
from gatewayd.errors import PluginError, UsageError


@dataclass(slots=True)
class SimulateContext:
    """What a runner is given: the device, where to serve it, its options, when to stop."""

    device: str
    hci: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    pty_link: Path | None = None
    duration: float | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    out: TextIO = field(default_factory=lambda: sys.stdout)

    def announce(self, line: str) -> None:
        """Print one line for the person (or the parent process) and flush it at once."""
        print(line, file=self.out, flush=True)


Runner = Callable[[SimulateContext], Awaitable[None]]


def emulators() -> dict[str, Emulator]:
    """The emulators the installed driver plugins declare, by device name.

    A plugin that fails to load is passed over here (`gatewayd drivers` shows it as BROKEN);
    two plugins declaring the same device name are a `PluginError`.
    """
    found: dict[str, tuple[str, Emulator]] = {}
    for entry in registry.installed():
        try:
            plugin = registry.load(entry.name)
        except PluginError:
            continue
        emulator = plugin.emulator
        if emulator is None:
            continue
        if emulator.name in found:
            other = found[emulator.name][0]
            raise PluginError(
                f"emulator {emulator.name!r} is declared by two drivers: {other}, {plugin.name}"
            )
        found[emulator.name] = (plugin.name, emulator)
    return {name: emulator for name, (_, emulator) in found.items()}


def resolve(name: str) -> Runner:
    """The runner of device `name`; `UsageError` naming the known devices otherwise."""
    known = emulators()
    emulator = known.get(name)
    if emulator is None:
        names = ", ".join(sorted(known)) or "none installed"
        raise UsageError("--device", f"no emulator called {name!r} (known: {names})")
    module, _, function = emulator.runner.partition(":")
    try:
        runner: Runner = getattr(importlib.import_module(module), function)
    except ImportError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "bumble":
            raise
        raise UsageError(
            "--device",
            f"the {name} emulator runs on the optional Bumble stack, which is not installed "
            "(pip install 'gatewayd[bumble]')",
        ) from exc
    return runner


def parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as options: VALUE as a TOML value when it is one, else a string."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError("--set", f"expected KEY=VALUE, got {pair!r}")
        try:
            value: Any = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        settings[key.strip()] = value
    return settings


async def simulate(context: SimulateContext, runner: Runner) -> None:
    """Run `runner` until it returns; SIGTERM, SIGINT and `duration` set `context.stop`."""
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, context.stop.set)
            handled.append(signum)
    timer = (
        None if context.duration is None else loop.call_later(context.duration, context.stop.set)
    )
    try:
        await runner(context)
    finally:
        if timer is not None:
            timer.cancel()
        for signum in handled:
            loop.remove_signal_handler(signum)


def run_simulate(
    device: str,
    *,
    hci: str | None = None,
    pty_link: Path | None = None,
    duration: float | None = None,
    settings: Sequence[str] = (),
) -> int:
    """`gatewayd simulate`: the exit status (options are checked before anything starts)."""
    if duration is not None and not duration > 0:
        raise UsageError("--duration", f"must be > 0, got {duration}")
    runner = resolve(device)
    context = SimulateContext(device, hci, parse_settings(settings), pty_link, duration)
    asyncio.run(simulate(context, runner))
    return 0
