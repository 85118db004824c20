"""A hub that boots at 1970: readings are held, then published with corrected times on sync.

An in-process `Daemon` with a scripted driver dated by the daemon's own (injected) wall clock,
an injected clock status, and the real mosquitto. Everything any subscriber ever saw is checked:
no reading dated before 2020 or in the future, ever; the ids are the ones the driver made.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from res_support import ClockSwitch, HubClock, make_plan, new_hub, reading_at, started

from gatewayd.daemon import Daemon
from gatewayd.models import reading_id
from gatewayd.store.full_disk import FullDiskOptions
from gatewayd.timesync import CLOCK_UNSYNCED, TIME_CORRECTED, TimeSyncOptions
from mosquitto import Mosquitto
from polling import wait_until
from scripted_driver import scripts
from subscriber import Received, Subscriber

pytestmark = pytest.mark.timeout(30)


def _times(message: Received) -> tuple[datetime, datetime]:
    body = message.json()
    return datetime.fromisoformat(body["time"]), datetime.fromisoformat(body["received"])


async def test_readings_received_before_sync_are_held_then_published_corrected(
    broker: Mosquitto, tmp_path: Path
) -> None:
    hub = new_hub()
    plan = make_plan(tmp_path / "gatewayd.db", broker, hub, {"cgm-1": "SN-CLOCK"})
    feed = scripts(plan)["cgm-1"]
    wall = HubClock()
    wall.boot_at(datetime(1970, 1, 1, 0, 0, 42, tzinfo=UTC))
    switch = ClockSwitch()
    daemon = Daemon(
        plan,
        timesync=TimeSyncOptions(
            probe=switch.probe, wall=wall.now, poll_s=0.02, boot_id="test-boot"
        ),
        full_disk=FullDiskOptions(reserve_bytes=0),
    )
    ages = [0.0, 300.0, 0.0, 0.0]  # seq 1 comes from the sensor's memory, 5 min old
    true_received: list[datetime] = []
    async with (
        Subscriber(broker, [f"gatewayd/{hub}/#"]) as sub,
        started(daemon),
    ):
        assert daemon.timekeeper.trusted is False
        for seq, age in enumerate(ages):
            true_received.append(datetime.now(UTC))
            feed.put(reading_at(seq, age=age))
            await wait_until(lambda n=seq + 1: daemon.store.held_depth() == n, 5, "held")
        assert daemon.store.outbox_depth() == 0
        assert daemon.watchdog.check().healthy  # holding for the clock is not a wedge

        synced_at = datetime.now(UTC)
        wall.offset = timedelta(0)  # the NTP client steps the clock...
        switch.synchronise()  # ...and clears STA_UNSYNC
        await sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/reading")]) >= 4)
        assert daemon.store.held_depth() == 0

        feed.put(reading_at(len(ages)))  # after the sync: published as it is
        await sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/reading")]) >= 5)
        await sub.wait_for(
            lambda ms: any(m.topic.endswith("/state") and m.json()["seq"] == len(ages) for m in ms)
        )

    readings = sub.on("/reading")
    bodies = [m.json() for m in readings]
    assert [b["seq"] for b in bodies] == list(range(len(ages) + 1))
    assert [b["id"] for b in bodies] == [
        reading_id("fed", "SN-CLOCK", "sess-1", seq) for seq in range(len(ages) + 1)
    ]
    for body, received_at, age in zip(bodies, true_received, ages, strict=False):
        measured, received = _times_of(body)
        assert abs((received - received_at).total_seconds()) < 1.0, body
        assert abs((received - measured).total_seconds() - age) < 0.01
        assert body["status"] == [CLOCK_UNSYNCED, TIME_CORRECTED]
        assert received < synced_at
    assert bodies[-1]["status"] == []
    # Nothing anyone ever saw (readings and retained states) is dated 1970 or in the future.
    horizon = datetime.now(UTC) + timedelta(minutes=2)
    for message in sub.on("/reading") + sub.on("/state"):
        measured, received = _times(message)
        assert datetime(2020, 1, 1, tzinfo=UTC) <= measured <= horizon, message.json()
        assert datetime(2020, 1, 1, tzinfo=UTC) <= received <= horizon, message.json()


def _times_of(body: dict[str, object]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(str(body["time"])), datetime.fromisoformat(str(body["received"]))
