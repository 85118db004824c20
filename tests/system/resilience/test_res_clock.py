"""The hub's clock policy (gatewayd.timesync) on a real store, with injected clocks and status.

The story of a Raspberry Pi without a real-time clock: it boots at 1970 (or at its last
shutdown), readings arrive, the NTP client synchronises minutes later and steps the clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatewayd.models import Reading
from gatewayd.store import Store
from gatewayd.store.codec import decode_record
from gatewayd.timesync import (
    CLOCK_UNSYNCED,
    EPOCH_FLOOR,
    TIME_ADJUSTED,
    TIME_CORRECTED,
    TIME_UNCORRECTABLE,
    TIME_UNVERIFIED,
    ClockStatus,
    Timekeeper,
    TimeSyncOptions,
    probe_clock_status,
    read_boot_id,
    sanitize,
    time_service_running,
)

#: The true time when the clock synchronises in these stories.
TRUE_SYNC = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=2)


@dataclass
class Clocks:
    """Injected wall and monotonic clocks and clock status (the test moves them)."""

    wall: datetime
    mono: float = 1000.0
    status: ClockStatus = field(default_factory=lambda: ClockStatus(False, True, "test"))

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)

    def sync_to(self, true_now: datetime) -> None:
        self.wall = true_now
        self.status = ClockStatus(True, True, "test")

    def options(self, boot_id: str = "boot-1") -> TimeSyncOptions:
        return TimeSyncOptions(
            probe=lambda: self.status,
            wall=lambda: self.wall,
            monotonic=lambda: self.mono,
            boot_id=boot_id,
        )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "gatewayd.db")
    yield s
    s.close()


def reading(
    seq: int, received: datetime, *, age: float = 0.0, status: tuple[str, ...] = ()
) -> Reading:
    return Reading(
        device="cgm-1",
        driver="fed",
        serial="SN1",
        session="s1",
        seq=seq,
        time=received - timedelta(seconds=age),
        received=received,
        glucose_mgdl=100.0 + seq,
        status=status,
    )


def accept(keeper: Timekeeper, store: Store, clocks: Clocks, seq: int, age: float = 0.0) -> Reading:
    """What the supervisor's accept step does with a reading dated by the hub's wall clock."""
    placed, hold = keeper.place(reading(seq, clocks.wall, age=age))
    assert store.add(placed, hold=hold)
    return placed


def published(store: Store) -> list[Reading]:
    """What the publisher would send now, in order."""
    return [decode_record(row.record, row.serial) for row in store.pending(1000)]


def test_untrusted_clock_holds_flags_and_hides_readings(store: Store) -> None:
    clocks = Clocks(wall=datetime(1970, 1, 1, 0, 5, tzinfo=UTC))
    keeper = Timekeeper(store, clocks.options())
    assert keeper.poll() == []
    assert keeper.trusted is False
    for seq in range(3):
        stored = accept(keeper, store, clocks, seq)
        assert CLOCK_UNSYNCED in stored.status
        clocks.advance(300)
    assert published(store) == []
    assert store.outbox_depth() == 0  # the watchdog's "owed to the broker": nothing is
    assert store.held_depth() == 3
    assert store.latest("cgm-1", publishable=True) is None  # the retained state waits too
    assert store.latest("cgm-1") is not None  # ...but the driver resumes after them


def test_sync_redates_held_readings_by_the_monotonic_clock(store: Store) -> None:
    clocks = Clocks(wall=datetime(1970, 1, 1, 0, 0, 30, tzinfo=UTC))
    keeper = Timekeeper(store, clocks.options())
    keeper.poll()
    before: list[tuple[str, float]] = []  # (id, monotonic at receipt)
    for seq in range(4):
        placed = accept(keeper, store, clocks, seq, age=60.0 * seq)  # some are backfilled
        before.append((placed.id, clocks.mono))
        clocks.advance(300)
    clocks.advance(42)
    clocks.sync_to(TRUE_SYNC)
    released = keeper.poll()
    assert keeper.trusted is True
    out = published(store)
    assert [r.id for r in out] == [r.id for r in released] == [rid for rid, _ in before]
    for (_rid, mono), seq, fixed in zip(before, range(4), out, strict=True):
        assert fixed.received == TRUE_SYNC - timedelta(seconds=clocks.mono - mono)
        assert fixed.time == fixed.received - timedelta(seconds=60.0 * seq)  # the age is kept
        assert fixed.status == (CLOCK_UNSYNCED, TIME_CORRECTED)
        assert EPOCH_FLOOR <= fixed.time <= TRUE_SYNC
    assert store.held_depth() == 0
    assert store.outbox_depth() == 4
    latest = store.latest("cgm-1", publishable=True)
    assert latest is not None
    assert latest.received > TRUE_SYNC - timedelta(minutes=6)


def test_a_clock_running_ahead_is_corrected_backwards(store: Store) -> None:
    clocks = Clocks(wall=datetime(2031, 3, 3, tzinfo=UTC))  # a bad RTC, years ahead
    keeper = Timekeeper(store, clocks.options())
    keeper.poll()
    accept(keeper, store, clocks, 0)
    clocks.advance(120)
    accept(keeper, store, clocks, 1, age=30)
    clocks.advance(10)
    clocks.sync_to(TRUE_SYNC)
    keeper.poll()
    out = published(store)
    assert [r.received for r in out] == [
        TRUE_SYNC - timedelta(seconds=130),
        TRUE_SYNC - timedelta(seconds=10),
    ]
    assert out[1].time == TRUE_SYNC - timedelta(seconds=40)
    assert all(r.time <= TRUE_SYNC + TOLERANCE for r in out)


def test_readings_after_sync_are_published_behind_the_corrected_ones(store: Store) -> None:
    clocks = Clocks(wall=datetime(1970, 1, 1, tzinfo=UTC))
    keeper = Timekeeper(store, clocks.options())
    keeper.poll()
    held = accept(keeper, store, clocks, 0)
    clocks.advance(60)
    clocks.sync_to(TRUE_SYNC)
    keeper.poll()
    after = accept(keeper, store, clocks, 1)
    assert after.status == ()
    assert [r.id for r in published(store)] == [held.id, after.id]


def test_a_device_with_its_own_clock_keeps_its_times(store: Store) -> None:
    # A receiver or meter dates records with its own calendar clock; only `received` is the
    # hub's (DriverPlugin.time_base = "device").
    clocks = Clocks(wall=datetime(1970, 1, 1, tzinfo=UTC))
    keeper = Timekeeper(store, clocks.options())
    keeper.device_clock.add("fed")
    keeper.poll()
    measured = TRUE_SYNC - timedelta(minutes=10)
    placed, hold = keeper.place(Reading(**{**_fields(reading(0, clocks.wall)), "time": measured}))
    assert store.add(placed, hold=hold)
    clocks.advance(60)
    clocks.sync_to(TRUE_SYNC)
    keeper.poll()
    (out,) = published(store)
    assert out.time == measured
    assert out.received == TRUE_SYNC - timedelta(seconds=60)


def test_trusted_clock_clamps_future_and_pre_2020_times() -> None:
    now = TRUE_SYNC
    fine = reading(1, now, age=300)
    assert sanitize(fine, now, TOLERANCE) is fine
    slightly = reading(2, now + timedelta(minutes=1))
    assert sanitize(slightly, now, TOLERANCE) is slightly  # within the tolerance
    ahead = Reading(**{**_fields(reading(3, now)), "time": now + timedelta(hours=5)})
    fixed = sanitize(ahead, now, TOLERANCE)
    assert (fixed.time, fixed.received, fixed.status) == (now, now, (TIME_ADJUSTED,))
    assert fixed.id == ahead.id
    old = Reading(**{**_fields(reading(4, now)), "time": datetime(2000, 1, 1, tzinfo=UTC)})
    fixed = sanitize(old, now, TOLERANCE)
    assert (fixed.time, fixed.status) == (now, (TIME_ADJUSTED,))
    stale_hub = reading(5, datetime(1999, 1, 1, tzinfo=UTC))
    fixed = sanitize(stale_hub, now, TOLERANCE)
    assert (fixed.time, fixed.received) == (now, now)


def _fields(r: Reading) -> dict[str, object]:
    return {name: getattr(r, name) for name in Reading.__dataclass_fields__}


def test_accept_step_clamps_when_trusted(store: Store) -> None:
    clocks = Clocks(wall=TRUE_SYNC, status=ClockStatus(True, True, "test"))
    keeper = Timekeeper(store, clocks.options())
    keeper.poll()
    future = Reading(**{**_fields(reading(0, TRUE_SYNC)), "time": TRUE_SYNC + timedelta(days=2)})
    placed, hold = keeper.place(future)
    assert hold is None
    assert placed.time == TRUE_SYNC
    assert TIME_ADJUSTED in placed.status


def test_readings_held_in_an_earlier_boot(store: Store) -> None:
    # Boot 1: the fake-hwclock restored a plausible but wrong time; another boot at 1970.
    old_boot = Clocks(wall=datetime(2025, 5, 30, tzinfo=UTC))
    keeper = Timekeeper(store, old_boot.options("boot-old"))
    keeper.poll()
    plausible = accept(keeper, store, old_boot, 0)
    older_boot = Clocks(wall=datetime(1970, 1, 2, tzinfo=UTC))
    keeper = Timekeeper(store, older_boot.options("boot-older"))
    keeper.poll()
    implausible = accept(keeper, store, older_boot, 1)
    # This boot: synchronised; the monotonic clocks of those boots are gone.
    now = Clocks(wall=TRUE_SYNC, status=ClockStatus(True, True, "test"))
    keeper = Timekeeper(store, now.options("boot-now"))
    released = keeper.poll()
    assert [r.id for r in released] == [plausible.id]
    assert released[0].status == (CLOCK_UNSYNCED, TIME_UNVERIFIED)
    assert released[0].time == plausible.time
    assert [r.id for r in published(store)] == [plausible.id]  # the other is never sent...
    kept = {r.id: r for r in store.readings("cgm-1")}
    assert TIME_UNCORRECTABLE in kept[implausible.id].status  # ...but it is not deleted
    assert keeper.quarantined == 1
    assert store.held_depth() == 0


@pytest.mark.parametrize(
    ("status", "wall", "trusted"),
    [
        (ClockStatus(True, True, "t"), TRUE_SYNC, True),
        (ClockStatus(False, True, "t"), TRUE_SYNC, False),  # timesyncd runs, not synced yet
        (ClockStatus(False, False, "t"), TRUE_SYNC, True),  # nothing will ever sync it
        (ClockStatus(None, False, "t"), TRUE_SYNC, True),  # not Linux: cannot tell
        (ClockStatus(True, True, "t"), datetime(1970, 1, 1, tzinfo=UTC), False),
        (ClockStatus(False, False, "t"), datetime(2019, 12, 31, tzinfo=UTC), False),
    ],
)
def test_when_the_clock_is_trusted(
    store: Store, status: ClockStatus, wall: datetime, *, trusted: bool
) -> None:
    keeper = Timekeeper(store, Clocks(wall=wall, status=status).options())
    keeper.poll()
    assert keeper.trusted is trusted


def test_synchronisation_is_remembered_for_the_rest_of_the_boot(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    clocks = Clocks(wall=TRUE_SYNC, status=ClockStatus(True, True, "t"))
    store = Store(path)
    keeper = Timekeeper(store, clocks.options("boot-1"))
    keeper.poll()
    # ~9 h without NTP updates and the kernel sets STA_UNSYNC again: still trusted.
    clocks.status = ClockStatus(False, True, "t")
    keeper.poll()
    assert keeper.trusted is True
    store.close()
    store = Store(path)  # a restart in the same boot
    try:
        assert Timekeeper(store, clocks.options("boot-1")).poll() == []
        again = Timekeeper(store, clocks.options("boot-1"))
        again.poll()
        assert again.trusted is True
        other = Timekeeper(store, clocks.options("boot-2"))  # after a reboot: not any more
        other.poll()
        assert other.trusted is False
    finally:
        store.close()


def test_retention_prune_keeps_held_readings(store: Store) -> None:
    clocks = Clocks(wall=datetime(1970, 1, 1, tzinfo=UTC))
    keeper = Timekeeper(store, clocks.options())
    keeper.poll()
    accept(keeper, store, clocks, 0)
    assert store.prune(TRUE_SYNC) == (0, 0)
    assert store.held_depth() == 1


def test_a_failing_probe_does_not_stop_the_data_path(store: Store) -> None:
    def broken() -> ClockStatus:
        raise OSError("adjtimex: EPERM")

    keeper = Timekeeper(store, TimeSyncOptions(probe=broken, wall=lambda: TRUE_SYNC, boot_id="b"))
    keeper.poll()
    assert keeper.trusted is True  # cannot tell: like a platform without adjtimex


def test_the_real_probe_answers_on_this_machine() -> None:
    status = probe_clock_status()
    assert status.synced in (True, False, None)
    assert isinstance(time_service_running(), bool)
    assert read_boot_id()
    assert read_boot_id(Path("/nonexistent/boot_id")).startswith("unknown-")
