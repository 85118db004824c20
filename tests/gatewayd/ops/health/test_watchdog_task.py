"""The watchdog task against stand-ins: READY first and retried until delivered, pings only
while healthy, STATUS only on change, a failing driver hook tolerated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from gatewayd.device_status import DeviceStatus, LinkState
from gatewayd.driver import DriverPlugin
from gatewayd.ops.health import HealthPolicy
from gatewayd.ops.health.watchdog import Watchdog, WatchdogOptions
from gatewayd.supervisor import Device

pytestmark = pytest.mark.timeout(10)


@dataclass
class FakeNotifier:
    """Records what would be sent; fails the first `failures` sends (a full socket queue)."""

    failures: int = 0
    sent: list[dict[str, str | int]] = field(default_factory=list)
    enabled: bool = True

    def send(self, **fields: str | int) -> bool:
        if self.failures:
            self.failures -= 1
            return False
        self.sent.append(fields)
        return True

    def close(self) -> None:
        pass


@dataclass
class FakeStore:
    depth: int = 0

    def outbox_depth(self) -> int:
        return self.depth


@dataclass
class FakeConfig:
    url: str = "mqtt://broker.invalid:1883"


@dataclass
class FakePublisher:
    store: FakeStore = field(default_factory=FakeStore)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: int = 0
    reconnects: int = 0
    config: FakeConfig = field(default_factory=FakeConfig)


def plugin(hook: Any = None) -> DriverPlugin[Any]:
    return DriverPlugin(
        name="x",
        transport="virtual",
        help="x",
        parse_options=lambda r: None,
        open=lambda ctx: None,
        expected_interval=hook,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running(watchdog: Watchdog) -> AsyncIterator[None]:
    task = asyncio.create_task(watchdog.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


async def test_ready_is_retried_until_delivered_and_pings_follow() -> None:
    notifier = FakeNotifier(failures=2)
    publisher = FakePublisher()
    publisher.connected.set()
    watchdog = Watchdog(
        [],
        publisher,
        WatchdogOptions(interval=0.001, notifier=notifier),
    )
    async with running(watchdog):
        await until(lambda: watchdog.pings >= 3)
    assert notifier.sent[0] == {
        "READY": 1,
        "STATUS": "0 devices; broker connected; outbox 0; delivered 0",
    }
    assert notifier.sent[1:4] == [{"WATCHDOG": 1}] * 3  # the status is not repeated


async def test_pings_stop_while_wedged_and_the_status_says_why() -> None:
    notifier = FakeNotifier()
    clock = Clock()
    device = Device("cgm-1", plugin(lambda o: 10.0), None)
    publisher = FakePublisher()
    publisher.connected.set()
    watchdog = Watchdog(
        [device],
        publisher,
        WatchdogOptions(
            policy=HealthPolicy(grace=2.0, min_silence=0.0),
            interval=0.001,
            notifier=notifier,
            clock=clock,
        ),
    )
    device.status = DeviceStatus("cgm-1", "x", LinkState.CONNECTED, datetime.now(UTC))
    async with running(watchdog):
        await until(lambda: watchdog.pings >= 2)
        clock.now = 21.0  # silent beyond 2 x 10 s
        await until(lambda: any("WEDGED" in str(m.get("STATUS")) for m in notifier.sent))
        mark = len(notifier.sent)
        await asyncio.sleep(0.02)  # ~20 ticks to observe, not a synchronisation delay
        assert all("WATCHDOG" not in m for m in notifier.sent[mark:])
        assert watchdog.verdict is not None
        assert watchdog.verdict.problems == ("cgm-1: connected, no reading for 21 s (limit 20 s)",)
        device.received += 1  # a reading: healed, pings resume
        await until(lambda: "WATCHDOG" in notifier.sent[-1])


def test_a_failing_expected_interval_hook_falls_back_to_the_default() -> None:
    def broken(options: object) -> float:
        raise RuntimeError("driver bug")

    device = Device("cgm-1", plugin(broken), None)
    watchdog = Watchdog(
        [device],
        FakePublisher(),
        WatchdogOptions(notifier=FakeNotifier()),
    )
    assert watchdog.intervals == {"cgm-1": 300.0}
