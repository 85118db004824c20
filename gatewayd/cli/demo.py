"""`gatewayd demo`: the whole job on one machine, with nothing to set up.

Simulated CGMs → the gateway daemon → an embedded MQTT broker (amqtt, in this event loop) on
127.0.0.1 → a live viewer subscribed to the hub's topics, printing every reading until Ctrl-C.
The broker listens on loopback only and lets anyone in (nothing leaves the machine); while it
runs, any MQTT client can watch too::

    mosquitto_sub -h 127.0.0.1 -p 1883 -t 'gatewayd/#' -v

The store lives in a temporary directory that is removed at exit. amqtt speaks MQTT 3.1.1 only
(it refuses a v5 CONNECT), so the demo's gateway connects with ``protocol = "3.1.1"``.

Stopping (Ctrl-C, SIGTERM, or ``duration`` elapsed): the daemon stops cleanly first (devices
`stopped`, outbox flushed, hub `offline`), then the viewer, then the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import aiomqtt

from gatewayd.errors import GatewayError
from gatewayd.models import Direction

#: The demo's hub id and topic root: readings appear under `gatewayd/demo-hub/<device>/reading`.
HUB_ID = "demo-hub"
TOPIC_ROOT = "gatewayd"
#: The broker only ever listens here: the demo lets anyone in, so it must not be reachable.
HOST = "127.0.0.1"
#: When the asked-for port is taken, the next ports up to this many above it are tried.
PORT_TRIES = 20
#: Simulated CGMs: one reading per 5 minutes each, one day of past replayed at `speed`.
INTERVAL_S = 300
HISTORY_S = 86_400
MAX_DEVICES = 50
#: Exit status for arguments or a missing extra (as `gatewayd.cli.EXIT_USAGE`).
EXIT_USAGE = 2
#: How long the viewer may take to subscribe, and to see the hub's last word after a stop.
_SUBSCRIBE_TIMEOUT_S = 10.0
_FAREWELL_TIMEOUT_S = 3.0

_INSTALL_HINT = (
    "gatewayd demo: the embedded MQTT broker (amqtt) is not installed; "
    "run ./scripts/demo, or: pip install 'gatewayd[demo]'"
)

_ARROWS = {
    Direction.DOUBLE_UP: "↑↑",
    Direction.SINGLE_UP: "↑",
    Direction.FORTY_FIVE_UP: "↗",
    Direction.FLAT: "→",
    Direction.FORTY_FIVE_DOWN: "↘",
    Direction.SINGLE_DOWN: "↓",
    Direction.DOUBLE_DOWN: "↓↓",
}
#: The same in ASCII, for a terminal whose encoding has no arrows.
_ASCII_ARROWS = {
    Direction.DOUBLE_UP: "^^",
    Direction.SINGLE_UP: "^",
    Direction.FORTY_FIVE_UP: "/",
    Direction.FLAT: "->",
    Direction.FORTY_FIVE_DOWN: "\\",
    Direction.SINGLE_DOWN: "v",
    Direction.DOUBLE_DOWN: "vv",
}


async def run_demo(
    *,
    devices: int = 2,
    speed: float = 60.0,
    port: int = 1883,
    duration: float | None = None,
) -> int:
    """Run the demo until Ctrl-C/SIGTERM (or `duration` seconds); return the exit status.

    `devices` simulated CGMs `cgm-1`..`cgm-N` replay one day `speed` times faster, then run in
    real time; the broker binds 127.0.0.1:`port`, or the next free port up to `port` + 20.
    """
    problem = _check_arguments(devices, speed, port, duration)
    if problem is not None:
        print(f"gatewayd demo: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from amqtt.broker import Broker  # noqa: F401 - only checking the extra is installed
    except ImportError:
        print(_INSTALL_HINT, file=sys.stderr)
        return EXIT_USAGE
    _quiet_broker_logging()

    from gatewayd.ops import logs

    logs.configure(level="error", fmt="console", stream=sys.stderr)
    return await _Demo(devices, speed, port, duration, sys.stdout).run()


def _check_arguments(devices: int, speed: float, port: int, duration: float | None) -> str | None:
    if not 1 <= devices <= MAX_DEVICES:
        return f"--devices must be 1..{MAX_DEVICES}, got {devices}"
    if not speed >= 1:  # also refuses NaN
        return f"--speed must be at least 1 (1 = real time), got {speed}"
    if not 1 <= port <= 65535:
        return f"--port must be 1..65535, got {port}"
    if duration is not None and not duration > 0:
        return f"--duration must be a positive number of seconds, got {duration}"
    return None


def _quiet_broker_logging() -> None:
    """amqtt logs every connection at INFO; its state machine (`transitions`) chats too."""
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def _silenced(name: str) -> Iterator[None]:
    """Mute a stdlib logger for a moment (amqtt logs a traceback for every failed bind)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def demo_config(devices: int, speed: float, port: int, store: Path) -> dict[str, Any]:
    """The daemon's config as the TOML document it would be (for `gatewayd.ops.config.parse`)."""
    return {
        "hub": {"id": HUB_ID},
        "store": {"path": str(store), "synchronous": "normal"},
        "mqtt": {
            "url": f"mqtt://{HOST}:{port}",
            "protocol": "3.1.1",  # amqtt is an MQTT 3.1.1 broker
            "topic_root": TOPIC_ROOT,
        },
        "log": {"level": "warning", "format": "console"},
        "devices": [
            {
                "driver": "simulator",
                "id": f"cgm-{n}",
                "interval": INTERVAL_S,
                "speed": speed,
                "history": HISTORY_S,
                "warmup": 0,  # a demo always shows readings (sensor changes still happen)
                "seed": n,
            }
            for n in range(1, devices + 1)
        ],
    }


def broker_config(port: int) -> dict[str, Any]:
    """amqtt 0.12 `BrokerConfig` as a dict: one TCP listener on loopback, anonymous allowed.

    Only the anonymous-auth plugin is loaded: no packet/event logging plugins and no `$SYS`
    plugin (which would publish broker stats and warn about psutil).
    """
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


def _address_in_use(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


async def start_broker(port: int, tries: int = PORT_TRIES) -> tuple[Any, int]:
    """An embedded amqtt broker on 127.0.0.1:`port`, or the next free port up to +`tries`."""
    from amqtt.broker import Broker
    from amqtt.errors import BrokerError

    last = min(port + tries, 65535)
    for candidate in range(port, last + 1):
        broker = Broker(broker_config(candidate))
        try:
            with _silenced("amqtt"):
                await broker.start()
        except BrokerError as exc:
            with contextlib.suppress(Exception):
                await broker.plugins_manager.close()
            if _address_in_use(exc):
                continue
            reason = exc.__cause__ or exc
            raise GatewayError(
                f"cannot start the embedded MQTT broker on {HOST}:{candidate}: {reason}"
            ) from None
        return broker, candidate
    raise GatewayError(f"ports {port}-{last} on {HOST} are all in use; choose one with --port")


async def stop_broker(broker: Any) -> None:
    """Shut the embedded broker down (its sessions, listener and plugins)."""
    await broker.shutdown()


# -- the live display ---------------------------------------------------------------------


class _Style:
    """ANSI styles, or nothing when the output is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, *codes: str) -> str:
        if not self.enabled or not codes:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"


_DIM, _BOLD, _RED, _GREEN, _YELLOW = "2", "1", "31", "32", "33"
_DEVICE_COLOURS = ("36", "35", "34", "96", "95", "94")


class Display:
    """Turns the hub's MQTT messages into aligned terminal lines and counts readings."""

    def __init__(self, out: TextIO, device_ids: Sequence[str], *, colour: bool) -> None:
        self.out = out
        self.style = _Style(colour)
        self.unicode = _encodes(out, "↑↗→↘↓·")
        self.arrows = _ARROWS if self.unicode else _ASCII_ARROWS
        self.bullet = "·" if self.unicode else "-"
        self.device_ids = tuple(device_ids)
        self.width = max([len("device"), *(len(d) for d in device_ids)])
        self.counts: Counter[str] = Counter(dict.fromkeys(device_ids, 0))
        self.hub_offline = asyncio.Event()
        self._status: dict[str, tuple[str, str | None]] = {}
        self._header_shown = False
        self.closed = False
        #: Called once if the output is closed by its reader.
        self.on_closed: Callable[[], None] | None = None

    def line(self, text: str = "") -> None:
        """One line of output, flushed (the demo is often piped or teed).

        When the reader goes away (`gatewayd demo | head`), the demo stops instead of failing.
        """
        if self.closed:
            return
        try:
            print(text, file=self.out, flush=True)
        except BrokenPipeError:
            self.closed = True
            _discard(self.out)
            if self.on_closed is not None:
                self.on_closed()

    def message(self, topic: str, payload: bytes) -> None:
        """Show one message from `gatewayd/demo-hub/#`."""
        parts = topic.split("/")
        prefix = [TOPIC_ROOT, HUB_ID]
        if parts[:2] != prefix:
            return
        rest = parts[2:]
        try:
            if rest == ["status"]:
                self.hub_status(payload.decode())
            elif len(rest) == 2 and rest[1] == "reading":
                self.reading(json.loads(payload))
            elif len(rest) == 2 and rest[1] == "status":
                self.device_status(json.loads(payload))
            # `state` (the newest reading, retained) repeats a reading already shown.
        except (ValueError, KeyError, TypeError) as exc:
            self.line(self.style(f"  ! unreadable message on {topic}: {exc}", _YELLOW))

    def _device(self, device: str) -> str:
        index = self.device_ids.index(device) if device in self.device_ids else -1
        colour = _DEVICE_COLOURS[index % len(_DEVICE_COLOURS)] if index >= 0 else ""
        padded = device.ljust(self.width)
        return self.style(padded, colour) if colour else padded

    def header(self) -> None:
        """Column titles, once, before the first reading."""
        if self._header_shown:
            return
        self._header_shown = True
        title = (
            f"  {'time (local)':<16}  {'device':<{self.width}}  {'mg/dL':>5}  {'mmol/L':>6}  trend"
        )
        self.line(self.style(title, _DIM))

    def reading(self, payload: dict[str, Any]) -> None:
        """One line per reading: time, device, value in both units, arrow, markers."""
        self.header()
        device = str(payload["device"])
        self.counts[device] += 1
        when = datetime.fromisoformat(payload["time"]).astimezone().strftime("%Y-%m-%d %H:%M")
        mgdl = payload["glucose_mgdl"]
        out_of_range = payload.get("out_of_range")
        if mgdl is None:
            word = "LOW" if out_of_range == "low" else "HIGH"
            mgdl_text = self.style(f"{word:>5}", _BOLD, _RED if word == "LOW" else _YELLOW)
            mmol_text = f"{'-':>6}"
        else:
            value = float(mgdl)
            colour = _RED if value < 70 else _YELLOW if value > 180 else _GREEN
            mgdl_text = self.style(f"{value:>5.0f}", colour)
            mmol = payload.get("glucose_mmoll")
            mmol_text = f"{float(mmol):>6.1f}" if mmol is not None else f"{'-':>6}"
        try:
            arrow = self.arrows.get(Direction(str(payload.get("direction"))), "?")
        except ValueError:
            arrow = "?"
        marks = []
        if payload.get("backfilled"):
            marks.append(self.style("backfilled", _DIM))
        self.line(
            f"  {self.style(when, _DIM)}  {self._device(device)}  {mgdl_text}  {mmol_text}"
            f"  {arrow:<2}  {' '.join(marks)}".rstrip()
        )

    def device_status(self, payload: dict[str, Any]) -> None:
        """A line when a device's link state (or its reason) changes."""
        device = str(payload["device"])
        state = str(payload["state"])
        reason = payload.get("reason")
        if self._status.get(device) == (state, reason):
            return
        self._status[device] = (state, reason)
        text = state
        if reason:
            text += f": {reason}"
        retry = payload.get("retry_in_s")
        if retry is not None:
            text += f" (retry in {float(retry):.1f} s)"
        colour = (
            _GREEN if state == "connected" else _YELLOW if state in {"backoff", "parked"} else ""
        )
        shown = self.style(text, colour) if colour else text
        self.line(f"  {self.bullet} {self._device(device)}  {shown}")

    def hub_status(self, text: str) -> None:
        """A line for the hub's availability (`online`, or `offline` as it stops)."""
        colour = _GREEN if text == "online" else _YELLOW
        self.line(f"  {self.bullet} hub {HUB_ID} {self.style(text, _BOLD, colour)}")
        if text == "offline":
            self.hub_offline.set()
        else:
            self.hub_offline.clear()

    def summary(self) -> str:
        """Readings shown per device."""
        total = sum(self.counts.values())
        per_device = ", ".join(
            f"{d} {n}" for d, n in sorted(self.counts.items(), key=lambda item: _natural(item[0]))
        )
        return f"gatewayd demo: stopped; {total} readings shown ({per_device})"


def _discard(out: TextIO) -> None:
    """Point a closed pipe's descriptor at /dev/null so the final flush at exit cannot fail."""
    try:
        fd = out.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):
        return
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _encodes(out: TextIO, text: str) -> bool:
    """Whether `out` can print `text` (a C-locale or cp1252 console cannot print arrows)."""
    try:
        text.encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _natural(device: str) -> tuple[str, int]:
    """`cgm-10` sorts after `cgm-9`."""
    stem, _, number = device.rpartition("-")
    return (stem, int(number)) if number.isdigit() else (device, 0)


async def _view(port: int, display: Display, subscribed: asyncio.Event) -> None:
    """Subscribe to the hub's topics and show every message until cancelled."""
    async with aiomqtt.Client(
        HOST,
        port,
        identifier="gatewayd-demo-viewer",
        protocol=aiomqtt.ProtocolVersion.V311,
    ) as client:
        await client.subscribe(f"{TOPIC_ROOT}/{HUB_ID}/#", qos=1)
        subscribed.set()
        async for message in client.messages:
            payload = message.payload
            data = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
            display.message(str(message.topic), bytes(data))


# -- the run ------------------------------------------------------------------------------


class _Demo:
    def __init__(
        self, devices: int, speed: float, port: int, duration: float | None, out: TextIO
    ) -> None:
        self.devices = devices
        self.speed = speed
        self.port = port
        self.duration = duration
        self.out = out
        self.device_ids = [f"cgm-{n}" for n in range(1, devices + 1)]
        self.display = Display(out, self.device_ids, colour=out.isatty())
        self._stop = asyncio.Event()
        self._on_stop: Callable[[], None] | None = None
        self.display.on_closed = self.request_stop

    def request_stop(self) -> None:
        """Ctrl-C/SIGTERM before or after the daemon runs (while it runs, it has its own)."""
        self._stop.set()
        if self._on_stop is not None:
            self._on_stop()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self._run(loop, signals)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
        self.display.line(self.display.summary())
        return 0

    async def _run(
        self, loop: asyncio.AbstractEventLoop, signals: Sequence[signal.Signals]
    ) -> None:
        from gatewayd.daemon import Daemon, plan
        from gatewayd.ops.config import parse

        async with contextlib.AsyncExitStack() as stack:
            tmp = Path(
                stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="gatewayd-demo-", ignore_cleanup_errors=True)
                )
            )
            broker, port = await start_broker(self.port)
            stack.push_async_callback(stop_broker, broker)
            validated = plan(parse(demo_config(self.devices, self.speed, port, tmp / "demo.db")))
            self._introduce(port)

            # Subscribe before the gateway starts: readings are not retained, none may be missed.
            subscribed = asyncio.Event()
            viewer = asyncio.create_task(_view(port, self.display, subscribed), name="viewer")
            stack.push_async_callback(_cancel, viewer)
            await self._until_subscribed(viewer, subscribed)

            daemon = Daemon(validated)
            self._on_stop = daemon.stop
            if self._stop.is_set():  # stopped while starting: run() starts and stops at once
                daemon.stop()
            timer = loop.call_later(self.duration, daemon.stop) if self.duration else None
            try:
                await daemon.run()  # installs its own SIGINT/SIGTERM handlers → daemon.stop()
            finally:
                if timer is not None:
                    timer.cancel()
                # Daemon.run removed the handlers; keep a late Ctrl-C from interrupting cleanup.
                for sig in signals:
                    loop.add_signal_handler(sig, self.request_stop)
            # The publisher said `offline` before it disconnected; let the viewer show it.
            if not viewer.done():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_FAREWELL_TIMEOUT_S):
                        await self.display.hub_offline.wait()

    async def _until_subscribed(
        self, viewer: asyncio.Task[None], subscribed: asyncio.Event
    ) -> None:
        waiting = asyncio.create_task(subscribed.wait())
        try:
            done, _ = await asyncio.wait(
                {viewer, waiting}, timeout=_SUBSCRIBE_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiting.cancel()
        if viewer in done:
            exc = viewer.exception()
            raise GatewayError(f"the demo viewer could not subscribe to the embedded broker: {exc}")
        if not done:
            raise GatewayError("the demo viewer could not subscribe to the embedded broker in time")

    def _introduce(self, port: int) -> None:
        line = self.display.line
        to = "→" if self.display.unicode else "->"
        if port != self.port:
            line(f"gatewayd demo: port {self.port} on {HOST} is in use; using port {port} instead")
        n = self.devices
        cgms = f"{n} simulated CGM{'s' if n != 1 else ''} ({', '.join(self.device_ids)})"
        line(
            f"gatewayd demo: {cgms}"
            f" {to} gateway (hub {HUB_ID}) {to} MQTT broker on {HOST}:{port}"
            " (embedded; loopback only, no login)"
        )
        line(
            f"  replaying one simulated day at {self.speed:g}x speed, then real time"
            f" (one reading every {INTERVAL_S // 60} min per CGM)"
        )
        line("  watch the raw MQTT messages from another terminal:")
        line(f"    mosquitto_sub -h {HOST} -p {port} -t '{TOPIC_ROOT}/#' -v")
        stop = (
            f"stops after {self.duration:g} s or on Ctrl-C" if self.duration else "Ctrl-C to stop"
        )
        line(f"  {stop}.")
        line()


async def _cancel(task: asyncio.Task[None]) -> None:
    """Stop the viewer; say so if it had died on its own (the demo went on without it)."""
    if task.done() and not task.cancelled() and task.exception() is not None:
        print(f"gatewayd demo: the viewer stopped early: {task.exception()}", file=sys.stderr)
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`gatewayd demo`'s options."""
    parser.add_argument("--devices", type=int, default=2, help="simulated CGMs, 1-50 (default 2)")
    parser.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="simulated time factor while replaying the past day (default 60)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=1883,
        help="broker port on 127.0.0.1 (default 1883; the next free one if taken)",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="stop after SECONDS (default: until Ctrl-C)"
    )


def main(args: argparse.Namespace) -> int:
    """Run `gatewayd demo` with the parsed options."""
    return asyncio.run(
        run_demo(devices=args.devices, speed=args.speed, port=args.port, duration=args.duration)
    )
