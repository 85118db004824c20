"""A full disk (a small tmpfs, filled up): the daemon reports it, keeps the newest data it can,
and recovers by itself when space returns (gatewayd.store.full_disk).

The store lives on a real tmpfs of 2 or 8 MiB; a filler file takes every byte left. SQLite
then refuses writes with SQLITE_FULL exactly as on a full SD card.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from res_support import fill, make_plan, new_hub, reading_at, started
from structlog.testing import capture_logs

from gatewayd.daemon import Daemon
from gatewayd.models import Reading
from gatewayd.store import Hold, Store, StoreFull
from gatewayd.store.full_disk import FULL_REASON, FullDiskOptions, Intake, Outcome
from gatewayd.timesync import ClockStatus, TimeSyncOptions
from mosquitto import Mosquitto
from polling import wait_until
from scripted_driver import scripts
from subscriber import Subscriber

pytestmark = pytest.mark.timeout(40)

NOW = datetime.now(UTC).replace(microsecond=0)


def reading(seq: int, *, age: timedelta = timedelta(0), device: str = "cgm-1") -> Reading:
    moment = NOW - age + timedelta(seconds=seq)
    return Reading(
        device=device,
        driver="fed",
        serial="SN1",
        session="s1",
        seq=seq,
        time=moment,
        received=moment,
        glucose_mgdl=100.0 + seq % 50,
    )


@pytest.fixture
def disk_store(small_disk: Path) -> Iterator[Store]:
    store = Store(small_disk / "gatewayd.db")
    yield store
    for leftover in small_disk.glob("filler*"):
        leftover.unlink()
    store.close()


def test_store_full_is_its_own_error(disk_store: Store, small_disk: Path) -> None:
    disk_store.add(reading(0))
    fill(small_disk)
    with pytest.raises(StoreFull):
        disk_store.add(reading(1))
    (small_disk / "filler").unlink()
    assert disk_store.add(reading(1))  # no transaction left open by the refused commit


def test_readings_wait_in_memory_and_land_in_order_when_space_returns(
    disk_store: Store, small_disk: Path
) -> None:
    landed: list[int] = []
    changes: list[bool] = []

    def on_stored(r: Reading, _hold: Hold | None) -> None:
        landed.append(r.seq)

    intake = Intake(
        disk_store,
        FullDiskOptions(reserve_bytes=0, queue_per_device=5),
        on_stored=on_stored,
        on_full=changes.append,
    )
    for seq in range(3):
        assert intake.put(reading(seq)) is Outcome.STORED
    filler = fill(small_disk)
    with capture_logs() as logs:
        outcomes = [intake.put(reading(seq)) for seq in range(10, 18)]
        assert set(outcomes) == {Outcome.QUEUED}
        assert intake.full
        assert intake.queued() == 5
        assert intake.dropped["cgm-1"] == 3
        assert not intake.flush()  # still full: nothing lands, nothing is lost from memory
        filler.unlink()
        assert intake.flush()
    assert landed == [0, 1, 2, 13, 14, 15, 16, 17]
    assert [r.seq for r in disk_store.readings("cgm-1")] == landed
    assert changes == [True, False]
    events = [e["event"] for e in logs]
    assert events.count("store_full") == 1
    assert events.count("store_full_dropping") == 1
    (recovered,) = [e for e in logs if e["event"] == "store_full_recovered"]
    assert (recovered["stored"], recovered["dropped"]) == (5, 3)
    assert intake.put(reading(18)) is Outcome.STORED


def test_a_full_disk_gives_up_old_delivered_history_for_new_readings(roomy_disk: Path) -> None:
    store = Store(roomy_disk / "gatewayd.db")
    try:
        month = timedelta(days=30)
        for seq in range(3000):  # a month-old history, delivered long ago
            store.add(reading(seq, age=month))
        store.mark_delivered(row.rowid for row in store.pending(5000))
        for seq in range(3000, 3005):  # as old, but never delivered: must survive
            store.add(reading(seq, age=month))
        store.query("PRAGMA wal_checkpoint(PASSIVE)")
        intake = Intake(store, FullDiskOptions(reserve_bytes=1 << 20))
        assert intake.reserve.ensure()
        filler = fill(roomy_disk)
        with capture_logs() as logs:
            outcomes = [intake.put(reading(seq)) for seq in range(10_000, 10_400)]
        assert Outcome.QUEUED not in outcomes  # the room made was enough: nothing waits
        assert not intake.full
        assert not intake.reserve.held
        (reclaim,) = [e for e in logs if e["event"] == "store_space_reclaimed"]
        assert reclaim["reserve_released"] is True
        assert reclaim["deleted"] == 3000
        kept = {r.seq for r in store.readings("cgm-1")}
        assert kept == set(range(3000, 3005)) | set(range(10_000, 10_400))
        assert store.outbox_depth() == 405
        filler.unlink()
        assert intake.reserve.ensure()  # re-created once there is room for it twice over
    finally:
        store.close()


async def test_the_daemon_reports_a_full_disk_and_recovers_when_space_returns(
    broker: Mosquitto, small_disk: Path
) -> None:
    hub = new_hub()
    plan = make_plan(small_disk / "gatewayd.db", broker, hub, {"cgm-1": "SN-FULL"})
    feed = scripts(plan)["cgm-1"]
    with capture_logs() as logs:
        daemon = Daemon(
            plan,
            full_disk=FullDiskOptions(reserve_bytes=256 << 10, retry_s=0.05),
            timesync=TimeSyncOptions(probe=lambda: ClockStatus(True, True, "test")),
        )
        intake = daemon.supervisor.intake
        device = daemon.supervisor.devices[0]
        fed = 0

        async def feed_one() -> None:
            nonlocal fed
            feed.put(reading_at(fed))
            fed += 1
            await wait_until(lambda: device.received == fed, 5, f"reading {fed - 1} taken")

        def seqs() -> list[int]:
            return [m.json()["seq"] for m in sub.on("/reading")]

        async with Subscriber(broker, [f"gatewayd/{hub}/#"]) as sub, started(daemon) as task:
            await wait_until(lambda: intake.reserve.held, 5, "the reserve")
            for _ in range(5):
                await feed_one()
            await sub.wait_for(lambda _: len(seqs()) == 5)

            filler = fill(small_disk)
            before_full = fed
            while not intake.full:  # the reserve buys a few more, then the disk is full
                assert fed < 300, "the store never filled up"
                await feed_one()
            bought = fed - before_full - 1
            for _ in range(20):
                await feed_one()
            queued = intake.queued()
            assert queued >= 20
            assert not task.done()
            assert daemon.watchdog.check().healthy  # a restart would lose what waits in memory
            await sub.wait_for(
                lambda ms: any(
                    m.topic.endswith("/cgm-1/status") and m.json()["reason"] == FULL_REASON
                    for m in ms
                )
            )

            filler.unlink()
            freed = time.monotonic()
            await sub.wait_for(lambda _: sorted(set(seqs())) == list(range(fed)), timeout=15)
            recovered_s = time.monotonic() - freed
            await wait_until(lambda: not intake.full, 5, "the episode to end")
            await sub.wait_for(
                lambda ms: (
                    [m for m in ms if m.topic.endswith("/cgm-1/status")][-1].json()["reason"]
                    is None
                )
            )
            await wait_until(lambda: daemon.store.outbox_depth() == 0, 5, "acks written")
        assert task.exception() is None

    first_seen: list[int] = []
    for seq in seqs():
        if seq not in first_seen:
            first_seen.append(seq)
    assert first_seen == list(range(fed))  # in order, nothing missing
    events = [e["event"] for e in logs]
    assert events.count("store_full") == 1
    assert events.count("store_full_recovered") == 1
    assert any(e["event"] == "store_space_reclaimed" and e["reserve_released"] for e in logs)
    assert "store_full_lost" not in events
    # Visible with -rP: the figures docs/resilience.md quotes.
    print(
        f"disk full: {bought} readings stored on the reserve, {queued} waited in memory, "
        f"all published {recovered_s:.2f} s after space returned"
    )
