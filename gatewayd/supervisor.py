"""One loop per configured device: connect, take readings into the store, reconnect.

Each device runs in its own task of one `asyncio.TaskGroup`, so a device that fails — even by
a bug in its driver — never stops the others. After the link drops the loop waits a capped,
jittered, exponentially growing delay (reset once a connection delivered something) and opens
a new session whose `resume` point is the newest stored reading, so the driver backfills the gap
from the device's memory. A non-retryable error (`DeviceRefused`: bonding refused, wrong key)
parks the device: it is reported and left alone instead of being hammered.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog

from gatewayd.backoff import Backoff
from gatewayd.cancellation import honour_cancellation
from gatewayd.device_status import DeviceStatus, LinkState
from gatewayd.driver import DeviceContext, DeviceFindings, DriverPlugin
from gatewayd.errors import DeviceError, StoreError
from gatewayd.models import Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.ops.config import SupervisorConfig
from gatewayd.store import Hold, Store, StoreFull
from gatewayd.store.full_disk import FULL_REASON, FullDiskOptions, Intake, Outcome
from gatewayd.timesync import Timekeeper


@dataclass(slots=True)
class Device:
    """A configured device with its loaded driver and parsed options."""

    id: str
    plugin: DriverPlugin[Any]
    options: Any
    dropped: Counter[str] = field(default_factory=Counter)
    #: Damaged records passed over and the device clock's offset, across connections.
    findings: DeviceFindings = field(default_factory=DeviceFindings)
    received: int = 0
    stored: int = 0
    status: DeviceStatus | None = None


class Supervisor:
    """Runs every device loop; the store gets each reading before anything else sees it."""

    def __init__(
        self,
        devices: list[Device],
        store: Store,
        publisher: Publisher,
        config: SupervisorConfig,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        ble: Any = None,
        timekeeper: Timekeeper | None = None,
        full_disk: FullDiskOptions | None = None,
    ) -> None:
        self.devices = devices
        self.store = store
        self.publisher = publisher
        self.config = config
        self.clock = clock
        #: The hub's BleConfig, handed to every driver session (None: BlueZ defaults).
        self.ble = ble
        #: Called with every newly stored reading (alerts, summaries, sinks); must not block.
        #: Readings held for the hub's clock reach them once re-dated (gatewayd.timesync).
        self.listeners: list[Callable[[Reading], None]] = []
        #: Called with a device id when the device reports a new identity (model, firmware),
        #: once it is in the store (`Store.identity`); must not block.
        self.identity_listeners: list[Callable[[str], None]] = []
        #: The clock policy of the accept step (None: the wall clock is taken as it is).
        self.timekeeper = timekeeper
        if timekeeper is not None:
            timekeeper.device_clock.update(
                d.plugin.name for d in devices if getattr(d.plugin, "time_base", "hub") == "device"
            )
        #: Stores every reading; holds them in memory while the disk is full.
        self.intake = Intake(
            store, full_disk, on_stored=self._stored, on_full=self._store_full_changed
        )
        self._by_id = {device.id: device for device in devices}
        for device in devices:
            device.findings.changed = partial(self._refresh, device)
        self.log = structlog.get_logger().bind(component="supervisor")

    async def run(self) -> None:
        """Run every device loop until cancelled (the clock is judged once before any)."""
        if self.timekeeper is not None:
            self._released(self.timekeeper.poll())
        async with asyncio.TaskGroup() as tasks:
            for device in self.devices:
                tasks.create_task(self._loop(device), name=f"device:{device.id}")
            tasks.create_task(self.intake.run(), name="store-intake")
            if self.timekeeper is not None:
                tasks.create_task(self.timekeeper.run(self._released), name="timekeeper")

    def mark_stopped(self) -> None:
        """Report every device as cleanly stopped (after `run()` was cancelled)."""
        for device in self.devices:
            self._report(device, LinkState.STOPPED, "gateway stopped")

    def _report(
        self,
        device: Device,
        state: LinkState,
        reason: str | None = None,
        retry_in: float | None = None,
    ) -> None:
        if state is LinkState.CONNECTED and reason is None and self.intake.full:
            reason = FULL_REASON
        device.status = DeviceStatus(
            device.id,
            device.plugin.name,
            state,
            self.clock(),
            reason,
            retry_in,
            device.findings.unreadable,
            device.findings.clock_offset_s,
        )
        self.publisher.set_status(device.status)

    def _refresh(self, device: Device) -> None:
        """Republish a device's status after its findings changed (same state, same since)."""
        status = device.status
        if status is None:
            return
        device.status = replace(
            status,
            records_unreadable=device.findings.unreadable,
            clock_offset_s=device.findings.clock_offset_s,
        )
        self.publisher.set_status(device.status)

    async def _loop(self, device: Device) -> None:
        log = structlog.get_logger().bind(device=device.id, driver=device.plugin.name)
        backoff = Backoff(self.config.backoff_min, self.config.backoff_max)
        while True:
            self._report(device, LinkState.CONNECTING)
            before = device.stored
            try:
                reason = await self._session(device, log)
            except StoreError:
                raise  # the store is the daemon's, not the device's: stop and let systemd restart
            except DeviceError as exc:
                if not exc.retryable:
                    log.error("device_parked", reason=str(exc), error=type(exc).__name__)  # noqa: TRY400
                    self._report(device, LinkState.PARKED, str(exc))
                    await asyncio.Event().wait()  # parked until the daemon stops
                reason = str(exc) or type(exc).__name__
                log.warning("device_link_lost", reason=reason, error=type(exc).__name__)
            except Exception as exc:
                reason = f"driver error: {type(exc).__name__}: {exc}"
                log.exception("driver_failed")
            # A stopping daemon whose cancel a library swallowed on the way out of the session
            # ends here instead of going round the reconnect loop.
            honour_cancellation()
            if device.stored > before:
                backoff.reset()
            delay = backoff.next()
            self._report(device, LinkState.BACKOFF, reason, retry_in=delay)
            await asyncio.sleep(delay)

    async def _session(self, device: Device, log: structlog.typing.FilteringBoundLogger) -> str:
        ctx: DeviceContext[Any] = DeviceContext(
            device_id=device.id,
            driver=device.plugin.name,
            options=device.options,
            resume=self.store.resume_point(device.id),
            log=log,
            dropped=device.dropped,
            clock=self.clock,
            ble=self.ble,
            findings=device.findings,
        )
        async with device.plugin.open(ctx) as session:
            identity = session.identity
            if identity is not None and self.store.remember_identity(device.id, identity):
                for listener in self.identity_listeners:
                    listener(device.id)
            log.info(
                "device_connected",
                model=identity.model if identity else None,
                firmware=identity.firmware if identity else None,
            )
            self._report(device, LinkState.CONNECTED)
            async for reading in session.readings():
                await self._accept(device, reading, log)
        log.info("device_link_closed")
        return "link closed by the device"

    async def _accept(
        self, device: Device, reading: Reading, log: structlog.typing.FilteringBoundLogger
    ) -> None:
        """Store a reading before the driver is asked for the next one (its commit off the
        event loop, grouped with other devices' readings)."""
        device.received += 1
        if reading.device != device.id:
            raise DeviceError(f"driver produced a reading for {reading.device!r}", device=device.id)
        hold = None
        if self.timekeeper is not None:
            reading, hold = self.timekeeper.place(reading)
        outcome = await self.intake.accept(reading, hold)
        if outcome is Outcome.DUPLICATE:
            log.debug("reading_duplicate", seq=reading.seq)
        elif outcome is Outcome.QUEUED:
            log.debug("reading_queued", seq=reading.seq, queued=self.intake.queued())

    def _stored(self, reading: Reading, hold: Hold | None) -> None:
        """A reading landed in the store (now, or later after a full disk); the store itself
        tells the publisher (`Store.on_commit`)."""
        device = self._by_id.get(reading.device)
        if device is not None:
            device.stored += 1
        self.log.debug(
            "reading_stored",
            device=reading.device,
            seq=reading.seq,
            backfilled=reading.backfilled,
            held=hold is not None,
        )
        if hold is None:
            self._tell_listeners(reading)

    def _released(self, readings: list[Reading]) -> None:
        """Readings held for the clock were re-dated: publish them, then tell the services."""
        if not readings:
            return
        self.publisher.notify()
        for reading in readings:
            self._tell_listeners(reading)

    def _tell_listeners(self, reading: Reading) -> None:
        for listener in self.listeners:
            try:
                listener(reading)
            except StoreFull:
                # The reading is stored; a service that cannot write now must not stop the
                # daemon (a restart would lose what waits in memory).
                self.log.warning(
                    "reading_listener_store_full", listener=repr(listener), device=reading.device
                )
            except StoreError:
                raise
            except Exception:
                self.log.exception(
                    "reading_listener_failed", listener=repr(listener), device=reading.device
                )

    def _store_full_changed(self, full: bool) -> None:
        """Say on every connected device's status that the store refuses writes (or no more)."""
        for device in self.devices:
            if device.status is not None and device.status.state is LinkState.CONNECTED:
                self._report(device, LinkState.CONNECTED, FULL_REASON if full else None)
