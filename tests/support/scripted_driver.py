"""A driver whose sessions play what the test feeds them: the real driver contract (a
`DriverPlugin`, its sessions, the supervisor and the daemon around them) with the device's side
scripted through a queue.

Each device's options are a `Script`; a test puts items in `Script.queue`: a `Reading` (yielded
as it is), a `Make` (a reading built from the session's context: its device id, the hub's
clock), a `Drop` (a malformed packet, counted and logged by the context), an exception (raised
from the session), or `END` (the device drops the link). `scripted_plugin(name)` makes the
plugin under the driver name the test's configs use; `plan_of` wires a config's devices to it as
`gatewayd.daemon.plan` does with the entry points.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from gatewayd.daemon import Plan
from gatewayd.driver import DeviceContext, DriverPlugin
from gatewayd.models import DeviceIdentity, Reading
from gatewayd.ops.config import Config
from gatewayd.options import OptionReader


class End:
    """Queue item: the device drops the link (the session's readings() returns)."""


END = End()


@dataclass(frozen=True)
class Drop:
    """Queue item: a packet the driver discards as malformed (`DeviceContext.drop_packet`)."""

    raw: bytes = b""
    reason: str = "bad crc"


#: Queue item: builds a reading from the session's context (its device id, the hub's clock).
Make = Callable[[DeviceContext["Script"]], Reading]

Item = Reading | Make | Drop | BaseException | End


@dataclass
class Script:
    """One scripted device: what its sessions do, and what the supervisor did with it."""

    serial: str = "SN1"
    #: The seconds between the device's readings (the plugin's `expected_interval`); None: the
    #: health check's default.
    interval: float | None = None
    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    #: Raised by `open()` (a device that refuses, is not found...).
    open_error: Callable[[], BaseException] | None = None
    #: Raised at the start of every session's readings() (a driver bug, say).
    fail: Callable[[], BaseException] | None = None
    #: When set, entering a session waits for it (the "connecting" phase lasts until then).
    gate: asyncio.Event | None = None
    contexts: list[DeviceContext[Script]] = field(default_factory=list)
    entered: int = 0
    closed: int = 0

    def put(self, *items: Item) -> None:
        """Feed `items`, in order, to the device's current or next session."""
        for item in items:
            self.queue.put_nowait(item)


class ScriptedSession:
    """A `DriverSession` playing its script."""

    def __init__(self, ctx: DeviceContext[Script], model: str) -> None:
        self.ctx = ctx
        self.script = ctx.options
        self.identity: DeviceIdentity | None = DeviceIdentity("Test Co", model, self.script.serial)

    async def __aenter__(self) -> Self:
        if self.script.gate is not None:
            await self.script.gate.wait()
        self.script.entered += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.script.closed += 1

    async def readings(self) -> AsyncIterator[Reading]:
        if self.script.fail is not None:
            raise self.script.fail()
        while True:
            item = await self.script.queue.get()
            if isinstance(item, End):
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Drop):
                self.ctx.drop_packet(item.raw, item.reason)
                continue
            yield item if isinstance(item, Reading) else item(self.ctx)


def scripted_plugin(name: str = "scripted") -> DriverPlugin[Script]:
    """The scripted driver under the driver name `name` (its devices' model: "<Name> CGM")."""
    model = f"{name.title()} CGM"

    def parse_options(reader: OptionReader) -> Script:
        interval = (
            reader.number("interval", exclusive_minimum=True, minimum=0)
            if reader.has("interval")
            else None
        )
        return Script(serial=reader.string("serial", "SN1"), interval=interval)

    def open_session(ctx: DeviceContext[Script]) -> ScriptedSession:
        ctx.options.contexts.append(ctx)
        if ctx.options.open_error is not None:
            raise ctx.options.open_error()
        return ScriptedSession(ctx, model)

    return DriverPlugin(
        name=name,
        transport="virtual",
        help="A device whose sessions play what the test feeds them.",
        parse_options=parse_options,
        open=open_session,
        expected_interval=lambda script: script.interval,
    )


def plan_of(config: Config, plugin: DriverPlugin[Script]) -> Plan:
    """What `gatewayd.daemon.plan` does, with `plugin` for every device of `config`."""
    devices = []
    for dev in config.devices:
        reader = config.reader(dev)
        options = plugin.parse_options(reader)
        reader.finish()
        devices.append((dev.id, plugin, options))
    return Plan(config, tuple(devices))


def scripts(plan: Plan) -> dict[str, Script]:
    """Each device's script, by device id."""
    return {device_id: options for device_id, _, options in plan.devices}
