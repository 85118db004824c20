"""Wiring: config → store → publisher → supervisor, and a clean stop on SIGTERM/SIGINT.

On a stop signal the device loops are cancelled first (their sessions close), every device is
reported `stopped`, then the publisher gets `flush_timeout` seconds to deliver what the outbox
still holds and to say `offline`; whatever it could not deliver stays in the store for next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gatewayd.driver import DriverPlugin
from gatewayd.errors import ConfigError, PluginError, StoreError, StorePathError, TlsFileError
from gatewayd.mqtt.publisher import Publisher, tls_context
from gatewayd.ops.config import Config
from gatewayd.ops.health.watchdog import Watchdog, WatchdogOptions
from gatewayd.registry import load
from gatewayd.services import Service, ServiceContext, ServiceSpec, parse_all
from gatewayd.store import Store, StoreFull
from gatewayd.store.full_disk import FullDiskOptions
from gatewayd.supervisor import Device, Supervisor
from gatewayd.timesync import Timekeeper, TimeSyncOptions

#: How often old history is pruned.
_PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated config with its drivers loaded and their options parsed."""

    config: Config
    devices: tuple[tuple[str, DriverPlugin[Any], Any], ...]
    services: tuple[tuple[ServiceSpec[Any], Any], ...] = ()
    #: The `[ble]` table (a BleConfig) when the file has one or a BLE driver is configured.
    ble: Any = None


def _ble_config(config: Config, plugins: dict[str, DriverPlugin[Any]]) -> Any:
    """Parse `[ble]` (imports bleak) only when it is set or some configured driver uses BLE."""
    reader = config.section("ble")
    if reader is None and all(p.transport != "ble" for p in plugins.values()):
        return None
    from gatewayd.options import OptionReader
    from gatewayd.transport.ble import parse_ble_config

    return parse_ble_config(reader or OptionReader({}, config.file, "ble"))


def plan(config: Config) -> Plan:
    """Load the configured drivers, validate every device's options and read the TLS files
    (fails at start, one line each; `gatewayd status` does not need them and does not read them).
    """
    try:  # the same loading the publisher does before every connection attempt
        tls_context(config.mqtt)
    except TlsFileError as exc:
        raise ConfigError(config.file, f"mqtt.{exc.key}", f"{exc.path}: {exc.reason}") from None
    enabled = [d for d in config.devices if d.enabled]
    plugins: dict[str, DriverPlugin[Any]] = {}
    for device in enabled:
        if device.driver not in plugins:
            try:
                plugins[device.driver] = load(device.driver)
            except PluginError as exc:
                raise PluginError(f"{config.file}: {device.key}.driver: {exc}") from exc
    devices = []
    for device in enabled:
        plugin = plugins[device.driver]
        reader = config.reader(device)
        options = plugin.parse_options(reader)
        reader.finish()
        devices.append((device.id, plugin, options))
    return Plan(config, tuple(devices), tuple(parse_all(config)), _ble_config(config, plugins))


class Daemon:
    """The running gateway."""

    def __init__(
        self,
        plan: Plan,
        *,
        flush_timeout: float = 5.0,
        watchdog: WatchdogOptions | None = None,
        timesync: TimeSyncOptions | None = None,
        full_disk: FullDiskOptions | None = None,
    ) -> None:
        cfg = plan.config
        self.log = structlog.get_logger().bind(component="daemon", hub=cfg.hub.id)
        try:
            self.store = Store(
                cfg.store.path,
                retention_days=cfg.store.retention_days,
                synchronous=cfg.store.synchronous,
                recover_corrupt=True,  # a corrupt store is moved aside: never a restart loop
            )
        except StorePathError as exc:  # a bad value like any other: one line, exit 2
            raise ConfigError(cfg.file, "store.path", f"{exc.path}: {exc.reason}") from None
        #: Whether the hub's clock is trusted; holds and re-dates readings until it is.
        self.timekeeper = Timekeeper(self.store, timesync)
        self.publisher = Publisher(cfg.mqtt, cfg.hub.id, self.store)
        devices = [
            Device(device_id, plugin, options) for device_id, plugin, options in plan.devices
        ]
        self.supervisor = Supervisor(
            devices,
            self.store,
            self.publisher,
            cfg.supervisor,
            clock=self.timekeeper.wall,
            ble=plan.ble,
            timekeeper=self.timekeeper,
            full_disk=full_disk,
        )
        self.ble = plan.ble
        context = ServiceContext(
            cfg,
            self.store,
            self.publisher,
            self.publisher.topics,
            tuple(d.id for d in devices),
            tuple(devices),
            self.supervisor.identity_listeners,
        )
        self.services = [spec.create(options, context) for spec, options in plan.services]
        self.supervisor.listeners.extend(service.on_reading for service in self.services)
        self.flush_timeout = flush_timeout
        #: READY/WATCHDOG/STATUS/STOPPING to systemd (a no-op without $NOTIFY_SOCKET).
        self.watchdog = Watchdog(devices, self.publisher, watchdog)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Begin a clean stop (what SIGTERM and SIGINT do)."""
        self._stop.set()

    async def run(self, *, on_ready: Callable[[], None] | None = None) -> None:
        """Run until `stop()` or a signal; close the store on the way out."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        self.log.info(
            "gateway_starting",
            devices=len(self.supervisor.devices),
            broker=self.publisher.config.urls,
            outbox=self.store.outbox_depth(),
            held_for_clock=self.store.held_depth(),
        )
        try:
            async with self._radio(), asyncio.TaskGroup() as tasks:
                publishing = tasks.create_task(self.publisher.run(), name="publisher")
                supervising = tasks.create_task(self.supervisor.run(), name="supervisor")
                pruning = tasks.create_task(self._prune_forever(), name="prune")
                watching = tasks.create_task(self.watchdog.run(), name="watchdog")
                background = [
                    tasks.create_task(
                        self._run_service(service), name=f"service:{type(service).__name__}"
                    )
                    for service in self.services
                ]
                if on_ready is not None:
                    on_ready()
                await self._stop.wait()
                self.log.info("gateway_stopping")
                self.watchdog.stopping()
                for task in (supervising, pruning, watching, *background):
                    task.cancel()
                await asyncio.wait([supervising, pruning, watching, *background])
                self.supervisor.intake.close()
                self.supervisor.mark_stopped()
                # A reading whose commit was under way when its device was stopped is still
                # stored: the publisher's last drain must see it.
                with contextlib.suppress(TimeoutError, StoreError):
                    await asyncio.wait_for(self.store.committed(), self.flush_timeout)
                self.publisher.stop()
                done, _ = await asyncio.wait([publishing], timeout=self.flush_timeout)
                if not done:
                    publishing.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self.store.settle()
            depth = self.store.outbox_depth()
            self.store.close()
            self.log.info("gateway_stopped", outbox=depth, delivered=self.publisher.delivered)

    def _radio(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The BLE stack for this loop (Bumble: opens the HCI transport), when BLE is used."""
        if self.ble is None:
            return contextlib.nullcontext()
        from gatewayd.transport.ble import ble_session

        return ble_session(self.ble)

    async def _prune_forever(self) -> None:
        while True:
            self._prune()
            await asyncio.sleep(_PRUNE_EVERY_S)

    def _prune(self) -> None:
        """Prune by the wall clock, only while it is trusted: a clock years ahead would
        otherwise delete the whole history (gatewayd.timesync)."""
        if not self.timekeeper.trusted:
            return
        try:
            deleted, undelivered = self.store.prune(self.timekeeper.wall())
        except StoreFull:
            self.log.warning("store_prune_deferred", reason="store full")
            return
        if deleted:
            self.log.info("store_pruned", deleted=deleted)
        if undelivered:
            self.log.warning("store_pruned_undelivered", count=undelivered)

    async def _run_service(self, service: Service) -> None:
        """A service's `run()`, restarted after a full disk stopped it (instead of the daemon:
        a restart would lose the readings waiting in memory, gatewayd.store.full_disk)."""
        while True:
            try:
                await service.run()
            except StoreFull as exc:
                self.log.error(  # noqa: TRY400 - expected on a full disk: no traceback needed
                    "service_store_full", service=type(service).__name__, error=str(exc)
                )
                await asyncio.sleep(self.supervisor.intake.options.retry_s)
            else:
                return
