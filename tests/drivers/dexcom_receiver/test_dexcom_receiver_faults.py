"""Receivers as they are in the field, through the real Supervisor and Store: clocks that are
off or jump, pages and records damaged in memory, an erased database, records stored twice or
out of order, a 3,000-record backfill cut by a pulled cable and by a restart of the daemon.

The hub's clock is the emulator's true clock, so each reading is checked against the record it
came from: every record the receiver holds (but the damaged ones) is stored exactly once, with
its content, dated within a minute of the time it was measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.dexcom_receiver import plugin
from drivers.dexcom_receiver.emulator import EgvDatabase, ManualClock, Model, ReceiverEmulator
from drivers.dexcom_receiver.options import ReceiverOptions
from drivers.dexcom_receiver.timeline import SESSION, era_session
from gatewayd.device_status import LinkState
from gatewayd.models import Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.ops.config import MqttConfig, SupervisorConfig
from gatewayd.store import Store
from gatewayd.supervisor import Device, Supervisor
from polling import wait_until
from protocols.dexcom_receiver.commands import receiver_seconds, receiver_time

pytestmark = pytest.mark.timeout(60)

#: The true time the tests start at (the hub's clock and the receiver's, when right).
START = receiver_seconds(datetime(2026, 11, 20, 12, 0, tzinfo=UTC))
#: Receiver seconds between records.
RECORD = 300
#: How far a reading's time may be from the true time of its record.
TOLERANCE = 60.0
#: A receiver clock seven months slow.
SEVEN_MONTHS = 7 * 30 * 86400


def _stored(path: Path) -> int:
    """Readings in the store file (read after the daemon closed it)."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM readings").fetchone()[0])
    finally:
        db.close()


@dataclass
class Hub:
    """One run of the daemon's data path: a Supervisor on the store, no broker."""

    device: Device
    store: Store
    supervisor: Supervisor

    def stored_event(self, count: int) -> asyncio.Event:
        """Set as soon as the store holds `count` readings (from the supervisor's listener,
        so the test runs at once, in the middle of a backfill)."""
        event = asyncio.Event()
        self.supervisor.listeners.append(
            lambda _reading: event.set() if self.store.count() >= count else None
        )
        return event

    def readings(self) -> list[Reading]:
        return self.store.readings("rx1")

    async def wait_stored(self, count: int, timeout: float = 20.0) -> None:
        await wait_until(lambda: self.store.count() >= count, timeout, f"{count} readings")

    def reached(self, state: LinkState) -> bool:
        return self.device.status is not None and self.device.status.state == state


@contextlib.asynccontextmanager
async def running_hub(
    emulator: ReceiverEmulator, store: Path, *, backfill_hours: float
) -> AsyncIterator[Hub]:
    """The Supervisor with the receiver driver and a Store at `store`. Its clock is the true
    one plus the real seconds since the hub started (whole seconds against fractions, and a
    little drift, as between a receiver and a hub)."""
    true, started = emulator.clock, time.monotonic()
    options = ReceiverOptions(
        path=str(emulator.link), poll_interval=0.02, backfill_hours=backfill_hours, timeout=0.3
    )
    device = Device("rx1", plugin, options)
    with contextlib.closing(Store(store, synchronous="normal")) as db:
        supervisor = Supervisor(
            [device],
            db,
            Publisher(MqttConfig(), "hub", db),
            SupervisorConfig(backoff_min=0.05, backoff_max=0.2),
            clock=lambda: receiver_time(true.now()) + timedelta(seconds=time.monotonic() - started),
        )
        task = asyncio.create_task(supervisor.run())
        try:
            yield Hub(device, db, supervisor)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            supervisor.mark_stopped()
    # Every reading the driver yielded was new: nothing was read twice. (A reading whose commit
    # was under way when the supervisor was cancelled is stored, but not counted as stored.)
    assert 0 <= device.received - device.stored <= 1


def receiver(
    tmp_path: Path, *, days: float = 2, clock_error: int = 0, model: Model = "g4"
) -> ReceiverEmulator:
    clock = ManualClock(START)
    return ReceiverEmulator(
        tmp_path / "receiver",
        clock=clock,
        model=model,
        origin=START - round(days * 86400),
        clock_error=clock_error,
    )


def true_clock(emulator: ReceiverEmulator) -> ManualClock:
    assert isinstance(emulator.clock, ManualClock)
    return emulator.clock


def held(db: EgvDatabase, now: int, hours: float) -> set[int]:
    """Indices of the records in the database measured in the last `hours` before `now`."""
    return {i for i in db.stored(now) if db.true_time(i) > now - hours * 3600}


def on_page(db: EgvDatabase, page: int, now: int) -> set[int]:
    return set(db.indices(page * db.per_page, db.per_page, now))


def check(
    hub: Hub,
    db: EgvDatabase,
    expected: Iterable[int],
    label: str,
    *,
    lost: int = 0,
    offset: float = 0.0,
) -> float:
    """Every record in `expected` stored exactly once, with its content, within TOLERANCE of
    its true time (`lost` more are held but damaged), and the device status showing the
    receiver clock's `offset`; the largest time error (seconds)."""
    wanted = set(expected)
    by_seq: dict[int, list[int]] = defaultdict(list)
    for index in wanted:
        by_seq[db.time(index)].append(index)
    found: dict[int, Reading] = {}
    worst = 0.0
    readings = hub.readings()
    for reading in readings:
        candidates = by_seq.get(reading.seq)
        assert candidates, f"a reading of no record the receiver holds: {reading}"
        index = min(candidates, key=lambda i: abs(_truth(db, i) - reading.time))
        error = abs((_truth(db, index) - reading.time).total_seconds())
        assert error <= TOLERANCE, f"{reading} is {error:.0f} s off its true time"
        assert index not in found, f"record {index} stored twice: {found[index]}, {reading}"
        found[index] = reading
        record = db.record(index)
        assert (reading.glucose_mgdl, reading.out_of_range) == (
            record.glucose_mgdl,
            record.out_of_range,
        )
        worst = max(worst, error)
    assert set(found) == wanted, f"missing records: {sorted(wanted - set(found))[:10]}"
    shown = offset_shown(hub)
    assert shown is not None
    assert abs(shown - offset) < 5  # the hub's clock runs a few real seconds ahead
    unreadable = hub.device.findings.unreadable
    print(  # the figures of the scenario (pytest -s)
        f"{label}: held {len(wanted) + lost} published {len(readings)} unreadable {unreadable} "
        f"max |time error| {worst:.1f} s"
    )
    return worst


def _truth(db: EgvDatabase, index: int) -> datetime:
    return receiver_time(db.true_time(index))


def offset_shown(hub: Hub) -> float | None:
    status = hub.device.status
    assert status is not None
    return status.clock_offset_s


# -- clocks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [3600, -SEVEN_MONTHS, -(START - 3 * 86400)],
    ids=["one-hour-fast", "seven-months-slow", "reset-to-epoch-before-its-history"],
)
async def test_a_receiver_clock_that_is_off_is_anchored_to_the_hub_clock(
    tmp_path: Path, error: int
) -> None:
    emulator = receiver(tmp_path, clock_error=error)
    clock, db = true_clock(emulator), emulator.database
    async with emulator, running_hub(emulator, tmp_path / "gw.db", backfill_hours=24) as hub:
        first = held(db, clock.now(), 24)
        await hub.wait_stored(len(first))
        clock.advance(3 * RECORD)
        await hub.wait_stored(len(first) + 3)
        expected = held(db, clock.now(), 24 + 0.25)
        check(hub, db, expected, f"clock {error:+d} s", offset=error)
        assert {r.session for r in hub.readings()} == {SESSION}
    assert hub.device.findings.unreadable == 0


@pytest.mark.parametrize(
    "move",
    ["reset-to-epoch", "back-two-hours", "ahead-one-hour"],
)
async def test_a_receiver_clock_that_jumps_while_connected(tmp_path: Path, move: str) -> None:
    emulator = receiver(tmp_path)
    clock, db = true_clock(emulator), emulator.database
    async with emulator, running_hub(emulator, tmp_path / "gw.db", backfill_hours=2) as hub:
        before = held(db, clock.now(), 2)
        await hub.wait_stored(len(before))
        published = {r.id: r.time for r in hub.readings()}
        # The clock is moved just after now: reset (it reads its epoch then), or by an error.
        offset = {
            "reset-to-epoch": -(clock.now() + 1),
            "back-two-hours": -7200,
            "ahead-one-hour": 3600,
        }[move]
        if move == "reset-to-epoch":
            emulator.reset_clock()
        else:
            emulator.set_clock_error(offset)
        for count in range(1, 5):
            clock.advance(RECORD)
            await hub.wait_stored(len(published) + count)
        window = held(db, clock.now(), 2 + 4 * RECORD / 3600)
        check(hub, db, window, f"clock {move}", offset=offset)
        readings = hub.readings()
    after = [r for r in readings if r.id not in published]
    # What was published before the jump is as it was: same ids, same times.
    assert {r.id: r.time for r in readings if r.id in published} == published
    assert len(after) == 4
    if move == "ahead-one-hour":
        assert {r.session for r in after} == {SESSION}
    else:  # the clock went back: its records may repeat system times already published
        assert {r.session for r in after} == {era_session(offset)}
    if move == "back-two-hours":  # the same seqs as records of two hours earlier
        assert {r.seq for r in after} <= {db.time(i) for i in before}


@pytest.mark.parametrize("move", ["reset-to-epoch", "back-two-hours"])
async def test_a_clock_that_went_back_while_the_daemon_was_down(tmp_path: Path, move: str) -> None:
    emulator = receiver(tmp_path)
    clock, db = true_clock(emulator), emulator.database
    store = tmp_path / "gw.db"
    async with emulator:
        async with running_hub(emulator, store, backfill_hours=2) as hub:
            await hub.wait_stored(len(held(db, clock.now(), 2)))
        clock.advance(2 * RECORD)  # two records stamped by the old clock, not read yet
        if move == "reset-to-epoch":
            emulator.reset_clock()
        else:
            emulator.set_clock_error(-7200)
        clock.advance(3 * RECORD)
        async with running_hub(emulator, store, backfill_hours=2) as hub:
            expected = held(db, clock.now(), 2 + 5 * RECORD / 3600)
            await hub.wait_stored(len(expected))
            offset = -(START + 2 * RECORD + 1) if move == "reset-to-epoch" else -7200
            check(hub, db, expected, f"clock {move} while down", offset=offset)
            sessions = [r.session for r in hub.readings()]
    assert sessions.count(SESSION) == len(expected) - 3
    assert len(set(sessions)) == 2


# -- damaged memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["start", "middle", "end"])
async def test_a_page_damaged_in_memory_is_passed_over(tmp_path: Path, where: str) -> None:
    emulator = receiver(tmp_path)
    clock, db = true_clock(emulator), emulator.database
    now = clock.now()
    window = sorted(held(db, now, 12), key=db.true_time)
    pages = sorted({(db.stored(now).index(i)) // db.per_page for i in window})
    page = {"start": pages[0], "middle": pages[len(pages) // 2], "end": pages[-1]}[where]
    db.damaged_pages.add(page)
    damaged_record = window[len(window) // 3]  # and one record elsewhere
    if damaged_record in on_page(db, page, now):
        damaged_record = window[2 * len(window) // 3]
    db.damaged_records.add(damaged_record)
    async with emulator, running_hub(emulator, tmp_path / "gw.db", backfill_hours=12) as hub:
        lost = on_page(db, page, now) | {damaged_record}
        await hub.wait_stored(len(held(db, now, 12) - lost))
        clock.advance(3 * RECORD)
        await wait_until(lambda: hub.device.findings.unreadable == 2, 20, "two unreadable")
        lost = on_page(db, page, clock.now()) | {damaged_record}  # the page may have grown
        window = held(db, clock.now(), 12.25)
        expected = window - lost
        await hub.wait_stored(len(expected))
        check(hub, db, expected, f"page damaged at the {where}", lost=len(window & lost))
        status = hub.device.status
    assert status is not None
    assert status.records_unreadable == 2  # the page and the record: each counted once
    assert hub.device.findings.passed_over == {
        ("page", page),
        (
            "page",
            db.stored(now).index(damaged_record) // db.per_page,
            db.stored(now).index(damaged_record) % db.per_page,
        ),
    }


@pytest.mark.parametrize("daemon", ["running", "down"])
async def test_an_erased_database_starts_again(tmp_path: Path, daemon: str) -> None:
    emulator = receiver(tmp_path)
    clock, db = true_clock(emulator), emulator.database
    store = tmp_path / "gw.db"
    async with emulator:
        async with running_hub(emulator, store, backfill_hours=2) as hub:
            before = held(db, clock.now(), 2)
            await hub.wait_stored(len(before))
            if daemon == "running":
                emulator.erase()
                clock.advance(RECORD)
                await hub.wait_stored(len(before) + 1)
        if daemon == "down":
            emulator.erase()
            clock.advance(RECORD)
        clock.advance(40 * RECORD)  # past the first page of the new database
        async with running_hub(emulator, store, backfill_hours=2) as hub:
            await hub.wait_stored(len(before) + 41)
            assert db.size(clock.now()) == 41
            check(hub, db, before | held(db, clock.now(), 24), f"database erased, daemon {daemon}")


@pytest.mark.parametrize("model", ["g4", "g6"])
async def test_records_stored_twice_and_out_of_order(tmp_path: Path, model: Model) -> None:
    emulator = receiver(tmp_path, model=model)
    clock, db = true_clock(emulator), emulator.database
    newest = db.newest(clock.now())
    db.duplicate(newest - 10)
    db.store_late(newest - 20, newest - 15)  # stored five records late
    async with emulator, running_hub(emulator, tmp_path / "gw.db", backfill_hours=3) as hub:
        before = held(db, clock.now(), 3)
        await hub.wait_stored(len(before))
        # Live: the next record is stored after the two following it; the second twice.
        db.store_late(newest + 1, newest + 3)
        db.duplicate(newest + 2)
        for count in (0, 1, 3):
            clock.advance(RECORD)
            await hub.wait_stored(len(before) + count)
        check(hub, db, held(db, clock.now(), 3.25), f"{model}: duplicated and out-of-order records")


# -- a long backfill, cut ------------------------------------------------------------------------


async def test_a_3000_record_backfill_cut_by_a_pulled_cable_and_a_restart(
    tmp_path: Path,
) -> None:
    emulator = receiver(tmp_path, days=11)
    clock, db = true_clock(emulator), emulator.database
    hours = 3000 * RECORD / 3600
    expected = held(db, clock.now(), hours)
    assert len(expected) == 3000
    store = tmp_path / "gw.db"
    async with emulator:
        emulator.unplug_after(40)  # half way through reading the 80 pages back
        async with running_hub(emulator, store, backfill_hours=hours) as hub:
            restart = hub.stored_event(1000)
            await wait_until(lambda: hub.reached(LinkState.BACKOFF), 20, "the link lost")
            assert hub.store.count() == 0
            emulator.replug()
            await asyncio.wait_for(restart.wait(), 20)
        first = _stored(store)  # a commit under way at the stop landed too
        assert 1000 <= first < 3000  # the daemon stopped in the middle of the backfill
        async with running_hub(emulator, store, backfill_hours=hours) as hub:
            await hub.wait_stored(3000)
            # the count sees a commit at once; the device's counter when the loop takes it back
            await wait_until(lambda: hub.device.stored >= 3000 - first, 10, "the count")
            check(hub, db, expected, "3000-record backfill, cable pulled, daemon restarted")
            assert hub.device.stored == 3000 - first
