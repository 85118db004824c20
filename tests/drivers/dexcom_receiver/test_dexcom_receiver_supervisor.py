"""The real Daemon and Supervisor with the installed `dexcom_receiver` plugin (entry point) and
the emulated receiver: pulling the cable and putting it back is recovered with backoff, and the
store ends up with every record exactly once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from drivers.dexcom_receiver.emulator import ManualClock, ReceiverEmulator
from gatewayd.daemon import Daemon, plan
from gatewayd.device_status import LinkState
from gatewayd.ops.config import parse
from mosquitto import Mosquitto
from polling import wait_until

pytestmark = pytest.mark.timeout(30)


async def test_the_supervisor_recovers_an_unplugged_receiver(
    broker: Mosquitto, tmp_path: Path, receiver: ReceiverEmulator, clock: ManualClock
) -> None:
    config = parse(
        {
            "hub": {"id": f"hub-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "gatewayd.db")},
            "mqtt": {"url": broker.url(), "username": broker.username, "password": broker.password},
            "supervisor": {"backoff_min": 0.05, "backoff_max": 0.2},
            "devices": [
                {
                    "driver": "dexcom_receiver",
                    "id": "rx1",
                    "path": str(receiver.link),
                    "poll_interval": 0.05,
                    "backfill_hours": 1,
                    "timeout": 0.3,
                }
            ],
        }
    )
    daemon = Daemon(plan(config), flush_timeout=5.0)
    device = daemon.supervisor.devices[0]
    db = receiver.database
    first = db.newest(clock.now()) - 11  # the one-hour window holds 12 records
    ready = asyncio.Event()
    task = asyncio.create_task(daemon.run(on_ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await wait_until(lambda: device.stored == 12, what="the backfill window")
        clock.advance(2 * 300)
        await wait_until(lambda: device.stored == 14, what="two live readings")

        receiver.unplug()
        await wait_until(
            lambda: (
                device.status is not None
                and device.status.state == LinkState.BACKOFF
                and "cannot open" in (device.status.reason or "")
            ),
            what="reconnect attempts failing while unplugged",
        )
        clock.advance(5 * 300)  # five readings while the cable is out
        receiver.replug()
        await wait_until(lambda: device.stored == 19, what="the gap backfilled after replug")
        assert device.status is not None
        assert device.status.state == LinkState.CONNECTED
        clock.advance(300)
        await wait_until(lambda: device.stored == 20, what="live again")
        # By seq: the test moves the receiver's clock by steps of 5 min while the hub's wall
        # clock barely moves, so the anchored times of these records are not in seq order.
        stored = sorted(daemon.store.readings("rx1"), key=lambda r: r.seq)
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 10)

    assert [r.seq for r in stored] == [db.time(i) for i in range(first, first + 20)]
    assert len({r.id for r in stored}) == 20
    assert [r.backfilled for r in stored[14:19]] == [True] * 5
    assert device.received == 20  # not one reading read twice
