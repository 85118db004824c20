"""The clock rules of `drivers.dexcom_receiver.timeline` on records in memory: which session a
record gets and which offset dates it, for the cases the emulator tests do not reach."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from drivers.dexcom_receiver.timeline import SESSION, Stored, Timeline, era_session
from protocols.dexcom_receiver.commands import receiver_seconds, receiver_time
from protocols.dexcom_receiver.records import EgvRecord

#: The hub's clock at the start of each case, and the receiver's when it is right.
HUB = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOW = receiver_seconds(HUB)
SECOND = timedelta(seconds=1)


def records(first_position: int, *stamps: int) -> list[Stored]:
    """Records in storage order at consecutive positions, 38 to a page."""
    return [
        Stored((first_position + i) // 38, first_position + i, EgvRecord(t, t, 120, 0x14))
        for i, t in enumerate(stamps)
    ]


def poll(
    line: Timeline, receiver_now: int, hub: datetime, stored: list[Stored]
) -> list[tuple[str, datetime]]:
    line.measure(receiver_now, hub, hub)
    return [(d.session, d.time) for d in line.place(stored, line.wanted(stored))]


def test_a_clock_moved_ahead_while_the_hub_was_down_dates_each_side_with_its_offset() -> None:
    # Newest stored: stamped NOW - 600 by a right clock. Then two records by the right clock,
    # the clock moved an hour ahead, two more records; the hub reads them all 20 min later.
    line = Timeline(
        newest=NOW - 600, newest_time=HUB - 600 * SECOND, offset=0.0, backfill=timedelta(hours=1)
    )
    stored = records(100, NOW - 600, NOW - 300, NOW, NOW + 3600 + 300, NOW + 3600 + 600)
    hub = HUB + 20 * 60 * SECOND
    out = poll(line, NOW + 3600 + 1200, hub, stored)
    assert [t for _, t in out] == [HUB - 300 * SECOND, HUB, HUB + 300 * SECOND, HUB + 600 * SECOND]
    assert {s for s, _ in out} == {SESSION}
    assert line.offset == 3600


def test_a_longer_gap_before_a_forward_jump_is_not_taken_for_it() -> None:
    # While the hub was down: two hours without a sensor, then records, then the clock moved
    # an hour ahead, then records again.
    line = Timeline(
        newest=NOW - 4 * 3600,
        newest_time=HUB - 4 * 3600 * SECOND,
        offset=0.0,
        backfill=timedelta(hours=1),
    )
    stored = records(10, NOW - 7200, NOW - 6900, NOW + 3600 - 6600, NOW + 3600 - 6300)
    out = poll(line, NOW + 3600, HUB, stored)
    assert [t for _, t in out] == [HUB - k * SECOND for k in (7200, 6900, 6600, 6300)]


def test_a_reading_stored_before_an_upgrade_keeps_the_session() -> None:
    # Readings stored by an earlier version were dated with the receiver's clock as it is:
    # against the hub's, that looks like a jump of six hours back, but no system time repeats.
    behind = 6 * 3600
    line = Timeline(
        newest=NOW - behind - 300,
        newest_time=receiver_time(NOW - behind - 300),
        offset=0.0,
        backfill=timedelta(hours=1),
    )
    out = poll(line, NOW - behind, HUB, records(7, NOW - behind - 300, NOW - behind))
    assert out == [(SESSION, HUB)]


def test_records_ahead_of_the_clock_with_no_jump_seen_are_passed_over() -> None:
    # First contact with a receiver reset before: the records stamped by its old clock are
    # ahead of its clock now; their times cannot be known.
    line = Timeline(backfill=timedelta(hours=1))
    reset_ago = 1800
    now = reset_ago  # seconds since the reset, at the epoch
    stored = records(0, NOW - 600, NOW - 300, 300, 600, 900)
    out = poll(line, now, HUB, stored)
    assert out == [(SESSION, HUB - (now - t) * SECOND) for t in (300, 600, 900)]
    assert line.unanchored == 2


def test_a_record_stored_out_of_order_stays_in_its_session() -> None:
    line = Timeline(
        newest=NOW - 300, newest_time=HUB - 300 * SECOND, offset=0.0, backfill=timedelta(hours=1)
    )
    out = poll(line, NOW, HUB, records(50, NOW - 300, NOW - 3000, NOW))
    assert out == [(SESSION, HUB - 3000 * SECOND), (SESSION, HUB)]


def test_a_reset_seen_before_any_record_after_it_switches_the_session_at_once() -> None:
    line = Timeline(backfill=timedelta(hours=1))
    assert poll(line, NOW, HUB, records(0, NOW - 300, NOW)) == [
        (SESSION, HUB - 300 * SECOND),
        (SESSION, HUB),
    ]
    # The clock is reset to its epoch; no record stamped by it yet.
    later = HUB + 60 * SECOND
    assert poll(line, 10, later, records(0, NOW - 300, NOW)) == []
    # The minute at which the receiver's clock read its epoch, by the hub's clock.
    assert line.session == era_session(line.offset or 0.0) == f"{SESSION}-202611201200"
    # Its first record, stamped 290 (a system time the hub may well have seen before).
    out = poll(line, 300, later + 290 * SECOND, records(0, NOW - 300, NOW, 290))
    assert out == [(f"{SESSION}-202611201200", later + 280 * SECOND)]


def test_a_clock_reset_twice_in_a_minute_gives_each_era_its_own_session() -> None:
    line = Timeline(backfill=timedelta(hours=1))
    poll(line, NOW, HUB, records(0, NOW - 300, NOW))
    # reset to the epoch at 12:00:00 by the hub's clock; a record stamped 15
    assert poll(line, 10, HUB + 10 * SECOND, records(0, NOW - 300, NOW)) == []
    era = f"{SESSION}-202611201200"
    assert poll(line, 20, HUB + 20 * SECOND, records(0, NOW - 300, NOW, 15)) == [
        (era, HUB + 15 * SECOND)
    ]
    # set right (a jump ahead: the same session), then reset again at 12:00:40
    stored = records(0, NOW - 300, NOW, 15, NOW + 25)
    assert poll(line, NOW + 30, HUB + 30 * SECOND, stored) == [(era, HUB + 25 * SECOND)]
    assert poll(line, 10, HUB + 50 * SECOND, [*stored, *records(4, 5)]) == [
        (f"{era}-2", HUB + 45 * SECOND)  # the epoch's minute again: not the same session
    ]


def test_a_record_stored_late_in_a_poll_goes_out_in_time_order() -> None:
    line = Timeline(
        newest=NOW - 300, newest_time=HUB - 300 * SECOND, offset=0.0, backfill=timedelta(hours=1)
    )
    # stamped NOW, but stored after the record stamped NOW + 300
    out = poll(line, NOW + 300, HUB + 300 * SECOND, records(50, NOW - 300, NOW + 300, NOW))
    assert out == [(SESSION, HUB), (SESSION, HUB + 300 * SECOND)]
