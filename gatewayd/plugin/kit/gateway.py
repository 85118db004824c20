"""The gateway a check runs: the real `Supervisor` + `Store` (+ `Publisher`) around the driver,
recording what it yields and stores (`run_gateway`, `KitGateway`).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from gatewayd.device_status import DeviceStatus
from gatewayd.driver import DeviceContext, DriverPlugin, DriverSession
from gatewayd.models import Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.ops.config import MqttConfig, SupervisorConfig
from gatewayd.options import OptionReader
from gatewayd.plugin.kit.kit import Key, Target
from gatewayd.store import Store
from gatewayd.supervisor import Device, Supervisor


class _Recording:
    """A session wrapper that records what the driver yields and whether it was closed."""

    def __init__(self, inner: DriverSession, gateway: KitGateway) -> None:
        self._inner, self._gateway = inner, gateway
        self.identity = inner.identity
        gateway.changed(attempted=1)

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        self.identity = self._inner.identity
        self._gateway.changed(opened=1)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            return await self._inner.__aexit__(kind, exc, tb)
        finally:
            self._gateway.changed(closed=1)

    async def readings(self) -> AsyncIterator[Reading]:
        async for reading in self._inner.readings():
            self._gateway.yielded.append(reading)
            yield reading


class KitGateway:
    """The running gateway of a check: what was yielded and stored, and ways to wait for it."""

    def __init__(self, device: Device, supervisor: Supervisor, store: Store) -> None:
        self.device, self.supervisor, self.store = device, supervisor, store
        self.stored: list[Reading] = []
        self.yielded: list[Reading] = []
        #: Connection attempts (sessions created), sessions opened and closed.
        self.attempts = self.opened = self.closed = 0
        #: Every device status the supervisor reported, in order (attempts, backoff, parking).
        self.statuses: list[DeviceStatus] = []
        self._changed = asyncio.Event()

    def changed(self, *, attempted: int = 0, opened: int = 0, closed: int = 0) -> None:
        """Count sessions and wake the waiter (called by the session wrapper)."""
        self.attempts += attempted
        self.opened += opened
        self.closed += closed
        self._changed.set()

    def on_stored(self, reading: Reading) -> None:
        """The supervisor's listener: a reading newly stored."""
        self.stored.append(reading)
        self._changed.set()

    async def wait_until(self, condition: Callable[[], bool], what: str, timeout: float) -> None:  # noqa: ASYNC109
        """Wait (woken by every stored reading, session and status change) until `condition()`
        holds."""
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    self._changed.clear()
                    if not condition():
                        await self._changed.wait()
        except TimeoutError:
            state = self.device.status.state if self.device.status else None
            dropped = dict(self.device.dropped)
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}: {len(self.stored)} stored, "
                f"{self.opened} sessions opened, device {state}, dropped {dropped}"
            ) from None

    async def wait_for(
        self,
        count: int,
        timeout: float = 20.0,  # noqa: ASYNC109
        *,
        live: bool = False,
    ) -> None:
        """Wait until at least `count` readings (live ones only: `live`) are stored."""
        what = f"{count} {'live ' if live else ''}readings"
        await self.wait_until(lambda: self.count(live=live) >= count, what, timeout)

    def count(self, *, live: bool = False) -> int:
        """Readings stored (live ones only: `live`)."""
        return sum(not r.backfilled for r in self.stored) if live else len(self.stored)

    async def wait_for_session(self, after: int, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        """Wait until more than `after` sessions were opened (a reconnect)."""
        await self.wait_until(lambda: self.opened > after, f"session {after + 1}", timeout)

    def keys(self) -> list[Key]:
        """(session, seq) of the stored readings, in storing order."""
        return [(r.session, r.seq) for r in self.stored]


@contextlib.asynccontextmanager
async def run_gateway(
    plugin: DriverPlugin[Any],
    target: Target,
    *,
    device_id: str = "kit-device",
    store_path: Path | None = None,
    mqtt: MqttConfig | None = None,
    backoff: tuple[float, float] = (0.05, 0.5),
) -> AsyncIterator[KitGateway]:
    """Supervisor + Store (+ Publisher when `mqtt` is given) running `plugin` against `target`."""
    reader = OptionReader(dict(target.options), "driverkit", "devices[0]")
    options = plugin.parse_options(reader)
    reader.finish()
    with contextlib.ExitStack() as stack:
        if store_path is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="driverkit-"))
            store_path = Path(folder) / "gatewayd.db"
        store = Store(store_path, synchronous="normal")
        stack.callback(store.close)
        holder: list[KitGateway] = []
        publisher = _Publisher(mqtt or MqttConfig(), "driverkit-hub", store, holder)
        recording = replace(plugin, open=lambda ctx: _Recording(_open(plugin, ctx), holder[0]))
        device = Device(device_id, recording, options)
        config = SupervisorConfig(backoff_min=backoff[0], backoff_max=backoff[1])
        clock = target.clock or (lambda: datetime.now(UTC))
        supervisor = Supervisor([device], store, publisher, config, clock=clock, ble=target.ble)
        gateway = KitGateway(device, supervisor, store)
        holder.append(gateway)
        supervisor.listeners.append(gateway.on_stored)
        async with _radio(target):
            tasks = [asyncio.create_task(supervisor.run(), name="driverkit-supervisor")]
            if mqtt is not None:
                tasks.append(asyncio.create_task(publisher.run(), name="driverkit-publisher"))
            try:
                yield gateway
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                supervisor.mark_stopped()


class _Publisher(Publisher):
    """Wakes the checks on every device status change (connecting, backoff, parked...)."""

    def __init__(
        self, config: MqttConfig, hub: str, store: Store, gateway: list[KitGateway]
    ) -> None:
        super().__init__(config, hub, store)
        self._gateway = gateway

    def set_status(self, status: DeviceStatus) -> None:
        super().set_status(status)
        if self._gateway:
            self._gateway[0].statuses.append(status)
            self._gateway[0].changed()


def _open(plugin: DriverPlugin[Any], ctx: DeviceContext[Any]) -> DriverSession:
    return plugin.open(ctx)


def _radio(target: Target) -> contextlib.AbstractAsyncContextManager[Any]:
    if target.radio is not None:
        return target.radio()
    if target.ble is not None:
        from gatewayd.transport.ble import ble_session

        return ble_session(target.ble)
    return contextlib.nullcontext()


# -- checks ----------------------------------------------------------------------------------------
