"""The daemon's systemd link: READY once up, WATCHDOG pings only while the data path is healthy.

`Watchdog.run()` is one task on the daemon's event loop:

1. READY: once the broker link is up (`publisher.connected`), or after `ready_timeout` seconds
   without it. A hub that boots while the broker or the network is down still starts: its
   devices are read and every reading waits in the store, so holding back READY would only
   make systemd fail the start (TimeoutStartSec) and restart a gateway that works. The unit's
   TimeoutStartSec must exceed `ready_timeout` plus the start-up time.
2. Every tick (half of `$WATCHDOG_USEC`; 15 s without a watchdog) the `HealthModel` judges a
   sample of the device loops and the publisher. Healthy: `WATCHDOG=1`. Wedged: no ping, so
   systemd kills and restarts the daemon after `WatchdogSec`. The `STATUS=` line is sent when
   it changes, and a change of health is logged (`health_wedged` / `health_restored`).
3. `stopping()` says `STOPPING=1` when the daemon begins its clean stop.

Pings come from the event loop itself, so a blocked loop (a synchronous call that never
returns) also stops them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from gatewayd.mqtt.publisher import Publisher
from gatewayd.ops.health.model import (
    DeviceSample,
    HealthModel,
    HealthPolicy,
    PublisherSample,
    Verdict,
)
from gatewayd.ops.health.notify import Notifier, watchdog_interval
from gatewayd.supervisor import Device

#: Seconds between health checks (and STATUS updates) when systemd asked for no watchdog.
_TICK_WITHOUT_WATCHDOG = 15.0
#: Default seconds to wait for the broker before READY=1 anyway.
READY_TIMEOUT = 30.0


def expected_interval(device: Device, default: float) -> float:
    """Seconds between a connected device's readings: the driver's `expected_interval`
    hook, else the options' `interval`, else `default`. A failing hook counts as absent."""
    hook = device.plugin.expected_interval
    if hook is not None:
        try:
            value = hook(device.options)
        except Exception:  # noqa: BLE001 - a third-party hook must not stop the daemon
            structlog.get_logger().exception(
                "expected_interval_failed", device=device.id, driver=device.plugin.name
            )
            value = None
        if isinstance(value, int | float) and value > 0:
            return float(value)
    interval: Any = getattr(device.options, "interval", None)
    if isinstance(interval, int | float) and not isinstance(interval, bool) and interval > 0:
        return float(interval)
    return default


def sample_devices(devices: list[Device], intervals: dict[str, float]) -> list[DeviceSample]:
    """One `DeviceSample` per device loop (attribute reads only)."""
    return [
        DeviceSample(
            id=d.id,
            state=d.status.state if d.status is not None else None,
            since=d.status.since if d.status is not None else None,
            received=d.received,
            expected_interval=intervals[d.id],
        )
        for d in devices
    ]


def sample_publisher(publisher: Publisher) -> PublisherSample:
    """The publisher's link state and counters, and the outbox depth (one COUNT query)."""
    return PublisherSample(
        connected=publisher.connected.is_set(),
        delivered=publisher.delivered,
        reconnects=publisher.reconnects,
        outbox=publisher.store.outbox_depth(),
    )


@dataclass(frozen=True, slots=True)
class WatchdogOptions:
    """How the daemon talks to systemd (the defaults read the environment systemd sets)."""

    policy: HealthPolicy = field(default_factory=HealthPolicy)
    #: Seconds to wait for the broker before READY=1 anyway.
    ready_timeout: float = READY_TIMEOUT
    #: Seconds between pings; None: half of `$WATCHDOG_USEC` (no pings when that is unset).
    interval: float | None = None
    #: None: `Notifier.from_env()` (`$NOTIFY_SOCKET`).
    notifier: Notifier | None = None
    clock: Callable[[], float] = time.monotonic


class Watchdog:
    """Tells systemd when the daemon is ready, alive and stopping."""

    def __init__(
        self, devices: list[Device], publisher: Publisher, options: WatchdogOptions | None = None
    ) -> None:
        opts = options or WatchdogOptions()
        self.devices = devices
        self.publisher = publisher
        self.notifier = opts.notifier if opts.notifier is not None else Notifier.from_env()
        self.model = HealthModel(opts.policy)
        #: Seconds between readings per device (options do not change while running).
        self.intervals = {d.id: expected_interval(d, opts.policy.default_interval) for d in devices}
        self.ready_timeout = opts.ready_timeout
        #: Seconds between pings; None: systemd expects none (health is still logged).
        self.interval = opts.interval if opts.interval is not None else watchdog_interval()
        self.clock = opts.clock
        self.log = structlog.get_logger().bind(component="watchdog")
        #: Pings delivered so far.
        self.pings = 0
        self.verdict: Verdict | None = None
        self._status: str | None = None
        self._ready_sent = False

    def check(self) -> Verdict:
        """Sample the data path and judge it (one tick without notifying)."""
        devices = sample_devices(self.devices, self.intervals)
        return self.model.observe(self.clock(), devices, sample_publisher(self.publisher))

    async def run(self) -> None:
        """READY, then one health check per tick until cancelled."""
        try:
            async with asyncio.timeout(self.ready_timeout):
                await self.publisher.connected.wait()
        except TimeoutError:
            self.log.warning(
                "ready_without_broker", waited_s=self.ready_timeout, url=self.publisher.config.url
            )
        verdict = self.check()
        self.log.info(
            "gateway_ready",
            status=verdict.status,
            watchdog_s=None if self.interval is None else round(self.interval * 2, 3),
        )
        tick = self.interval if self.interval is not None else _TICK_WITHOUT_WATCHDOG
        while True:
            self._tick(verdict)
            await asyncio.sleep(tick)
            verdict = self.check()

    def _tick(self, verdict: Verdict) -> None:
        before = self.verdict
        self.verdict = verdict
        if before is not None and before.healthy != verdict.healthy:
            if verdict.healthy:
                self.log.info("health_restored", status=verdict.status)
            else:
                self.log.error(
                    "health_wedged",
                    problems=list(verdict.problems),
                    action="watchdog pings withheld" if self.interval else "none (no watchdog)",
                )
        fields: dict[str, str | int] = {}
        if not self._ready_sent:
            fields["READY"] = 1  # pings start with the next tick: systemd arms the watchdog now
        elif verdict.healthy and self.interval is not None:
            fields["WATCHDOG"] = 1
        if verdict.status != self._status:
            fields["STATUS"] = verdict.status
            self._status = verdict.status
        if not fields:
            return
        if not self.notifier.send(**fields):
            self._status = None  # not delivered (READY included): sent again next tick
        elif "READY" in fields:
            self._ready_sent = True
        elif "WATCHDOG" in fields:
            self.pings += 1

    def stopping(self) -> None:
        """The daemon begins its clean stop."""
        self.notifier.send(STOPPING=1, STATUS="stopping: flushing the outbox")
        self.notifier.close()
