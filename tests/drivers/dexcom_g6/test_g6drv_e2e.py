"""End to end on the real mosquitto: emulated G6 -> HCI over TCP -> the Daemon -> MQTT.

The Daemon runs in this process as `gatewayd run` would (the config parsed, the driver loaded
through its entry point, `[ble] stack = "bumble"` opening ``tcp-client:127.0.0.1:PORT``); the
emulated transmitter serves the gateway's controller on that port (`serve_sibling_link`) in the
same loop, so the test drives its wake-ups and shares its clock with the supervisor. A real
subscriber checks what reaches the broker: every value the transmitter held, once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drivers.dexcom_g6.clock import ManualClock
from drivers.dexcom_g6.emulator import G6Emulator
from drivers.dexcom_g6.kit import TXID, held
from drivers.dexcom_g6.transmitter import Transmitter
from gatewayd.daemon import Daemon, plan
from gatewayd.device_status import LinkState
from gatewayd.ops.config import parse
from gatewayd.transport.bumble.link import serve_sibling_link
from mosquitto import Mosquitto
from subscriber import Received, Subscriber

pytestmark = pytest.mark.timeout(30)


def config(tmp_path: Path, broker: Mosquitto, hub: str, hci: str, **device: Any) -> Any:
    return parse(
        {
            "hub": {"id": hub},
            "store": {"path": str(tmp_path / "gatewayd.db")},
            "mqtt": {
                "url": broker.url(),
                "username": broker.username,
                "password": broker.password,
            },
            "supervisor": {"backoff_min": 0.05, "backoff_max": 0.2},
            "ble": {"stack": "bumble", "hci": hci},
            "devices": [
                {"driver": "dexcom_g6", "id": "g6", "transmitter_id": TXID, **device},
            ],
        }
    )


@asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[asyncio.Task[None]]:
    ready = asyncio.Event()
    task = asyncio.create_task(daemon.run(on_ready=ready.set))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield task
    finally:
        daemon.stop()
        async with asyncio.timeout(10):
            await task


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll `condition` against a deadline (state owned by other tasks, no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.005)


def readings(messages: list[Received]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic.endswith("/reading")]


async def test_backfill_after_an_outage_reaches_the_broker_without_gaps_or_duplicates(
    broker: Mosquitto, tmp_path: Path
) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    # Recent times (the daemon prunes history older than its retention), never ahead of now.
    clock = ManualClock((datetime.now(UTC) - timedelta(hours=6)).replace(microsecond=0))
    async with serve_sibling_link(peripheral_name="Dexcom34") as link:
        tx = Transmitter(TXID, clock=clock, seed=11)
        emulator = G6Emulator(link.peripheral, tx)
        cfg = config(tmp_path, broker, hub, link.hci, history=1500, scan_timeout=20)
        daemon = Daemon(plan(cfg), flush_timeout=5.0)
        daemon.supervisor.clock = clock.now  # the hub and the transmitter agree on time

        def wakeup() -> int:
            ts = tx.next_measurement()
            clock.set(tx.wall(ts))
            return ts

        async with Subscriber(broker, [f"gatewayd/{hub}/g6/reading"]) as sub, running(daemon):
            wakeup()
            first = tx.now()
            assert await emulator.wake()  # first contact: 25 minutes of history + live
            for _ in range(3):
                wakeup()
                assert await emulator.wake()
            before = tx.now()
            for _ in range(6):  # the hub is away for half an hour: six wake-ups missed
                wakeup()
            back = wakeup()
            assert await emulator.wake()
            for _ in range(2):
                wakeup()
                assert await emulator.wake()
            last = tx.now()
            expected = held(tx, first - 1500, last)
            await sub.wait_for(lambda m: len(m) >= len(expected))
            await until(lambda: daemon.store.outbox_depth() == 0, "outbox drained")
        await emulator.close()

    published = readings(sub.messages)
    assert len(published) == len(expected)
    assert not [i for i, n in Counter(p["id"] for p in published).items() if n > 1]
    assert sorted((p["session"], p["seq"]) for p in published) == expected  # 0 gaps
    assert emulator.connections == 7
    outage = sorted((p["seq"], p["backfilled"]) for p in published if before < p["seq"] <= back)
    assert [backfilled for _, backfilled in outage] == [True] * 6 + [False]
    assert all(p["hub"] == hub and "serial" not in p for p in published)
    assert daemon.supervisor.devices[0].status is not None


async def test_a_wrong_transmitter_id_parks_the_device_with_its_reason(
    broker: Mosquitto, tmp_path: Path
) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    clock = ManualClock((datetime.now(UTC) - timedelta(hours=6)).replace(microsecond=0))
    async with serve_sibling_link(peripheral_name="Dexcom34") as link:
        # The transmitter in range is 8G9934 ("Dexcom34" too); the config says 8G1234.
        tx = Transmitter("8G9934", clock=clock, seed=11)
        emulator = G6Emulator(link.peripheral, tx, window=10.0)
        cfg = config(tmp_path, broker, hub, link.hci, history=0, scan_timeout=20)
        daemon = Daemon(plan(cfg), flush_timeout=5.0)
        device = daemon.supervisor.devices[0]
        async with Subscriber(broker, [f"gatewayd/{hub}/g6/status"]) as sub, running(daemon):
            assert await emulator.wake()
            await until(
                lambda: device.status is not None and device.status.state == LinkState.PARKED,
                "device parked",
            )
            # Not hammered: three more wake-ups (advertising 0.3 s each, a scan finds one in
            # ~20 ms) see no connection attempt.
            emulator.window = 0.3
            for _ in range(3):
                assert not await emulator.wake()
            await sub.wait_for(lambda m: any(x.json()["state"] == "parked" for x in m))
            async with Subscriber(broker, [f"gatewayd/{hub}/g6/status"]) as late:
                (parked,) = await late.wait_for(lambda m: len(m) >= 1)
            assert daemon.store.count() == 0
        await emulator.close()
    assert emulator.connections == 1
    assert emulator.commands == []
    assert parked.retain  # what a dashboard connecting later sees
    assert parked.json()["state"] == "parked"
    reason = parked.json()["reason"]
    assert "authentication failed (token_hash_mismatch)" in reason
    assert "check transmitter_id" in reason
