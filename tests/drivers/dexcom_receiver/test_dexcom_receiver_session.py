"""The driver session against the emulated receiver on a pseudo-terminal (real pyserial I/O).

Backfill windows and resume points, special values, CRC failures, garbage, stalls, unplugging.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.dexcom_receiver.emulator import ManualClock, ReceiverEmulator
from drivers.dexcom_receiver.session import SESSION, TREND_DIRECTION, ReceiverSession
from drivers.dexcom_receiver.timeline import era_session
from gatewayd.driver import DAMAGED_RETRIES, ResumePoint
from gatewayd.errors import DeviceNotFound, DeviceRefused, LinkLost
from gatewayd.models import Direction, reading_id
from protocols.dexcom_receiver.commands import EPOCH, receiver_seconds, receiver_time
from protocols.dexcom_receiver.frames import Command, Packet
from protocols.dexcom_receiver.records import SpecialGlucose, TrendArrow

pytestmark = pytest.mark.timeout(20)
SECOND = timedelta(seconds=1)


def behind(clock: ManualClock) -> timedelta:
    """How far the receiver's clock is behind the hub's (the wall clock)."""
    return datetime.now(UTC) - receiver_time(clock.now())


def expected_seqs(emulator: ReceiverEmulator, after: int) -> list[int]:
    """System times of the records newer than `after`, up to the receiver's now."""
    db = emulator.database
    return [db.time(i) for i in range(db.newest(emulator.clock.now()) + 1) if db.time(i) > after]


async def test_identity_backfill_window_then_live(
    receiver: ReceiverEmulator, clock: ManualClock, make_ctx, take
) -> None:
    ctx = make_ctx(backfill_hours=1.0)
    lag = behind(clock)
    async with ReceiverSession(ctx) as session:
        assert session.identity is not None
        assert session.identity.serial == "SM10000001"
        assert session.identity.model == "Dexcom G4 Receiver"
        assert session.identity.firmware == "2.0.1.104"
        window = expected_seqs(receiver, clock.now() - 3600)
        async with contextlib.aclosing(session.readings()) as stream:
            backfill = await take(stream, len(window))
            assert [r.seq for r in backfill] == window
            assert len(window) == 12
            assert all(r.backfilled for r in backfill)
            clock.advance(300)
            (live,) = await take(stream, 1)
    assert live.seq == window[-1] + 300
    assert not live.backfilled
    reading = backfill[0]
    assert (reading.driver, reading.session, reading.serial) == (
        "dexcom_receiver",
        SESSION,
        "SM10000001",
    )
    # Anchored to the hub's clock: the receiver's clock is hours behind the wall clock.
    assert lag > timedelta(hours=5)
    assert abs(reading.time - receiver_time(reading.seq) - lag) < 5 * SECOND
    # As last measured: after the test moved the receiver's clock 5 min on.
    assert ctx.findings.clock_offset_s == pytest.approx(300 - lag.total_seconds(), abs=5.0)
    assert reading.id == reading_id("dexcom_receiver", "SM10000001", SESSION, reading.seq)
    record = receiver.database.record(receiver.database.newest(clock.now()))
    assert (live.glucose_mgdl, live.out_of_range) == (record.glucose_mgdl, record.out_of_range)
    assert live.direction == TREND_DIRECTION[record.trend]
    assert ctx.dropped == {}


async def test_resume_backfills_exactly_the_gap_across_pages(
    receiver: ReceiverEmulator, clock: ManualClock, make_ctx, take
) -> None:
    db = receiver.database
    newest = db.newest(clock.now())
    resume_index = newest - 100  # three pages back (38 records a page)
    resume = ResumePoint("SM10000001", SESSION, db.time(resume_index), EPOCH)
    ctx = make_ctx(resume=resume, backfill_hours=0.0)
    async with ReceiverSession(ctx) as session, contextlib.aclosing(session.readings()) as stream:
        readings = await take(stream, 100)
    assert [r.seq for r in readings] == expected_seqs(receiver, db.time(resume_index))
    assert receiver.requests["READ_DATABASE_PAGES"] >= 4  # manufacturing + several EGV pages


async def test_a_resume_point_of_another_receiver_is_ignored(
    receiver: ReceiverEmulator, clock: ManualClock, make_ctx, take
) -> None:
    resume = ResumePoint("SM99999999", SESSION, 1, EPOCH)
    ctx = make_ctx(resume=resume, backfill_hours=0.5)
    async with ReceiverSession(ctx) as session, contextlib.aclosing(session.readings()) as stream:
        readings = await take(stream, 6)
    assert [r.seq for r in readings] == expected_seqs(receiver, clock.now() - 1800)


async def test_a_clock_moved_back_since_the_newest_stored_reading_starts_a_new_session(
    receiver: ReceiverEmulator, clock: ManualClock, make_ctx, take
) -> None:
    # The newest stored reading was stamped a day ahead of the receiver's clock as it is now,
    # and dated 31 min ago: the clock went back a day since. Records after that time are new,
    # in a session of their own (their system times may repeat stored ones).
    stored_time = datetime.now(UTC) - timedelta(minutes=31)
    resume = ResumePoint("SM10000001", SESSION, clock.now() + 86400, stored_time)
    ctx = make_ctx(resume=resume, backfill_hours=6.0)
    async with ReceiverSession(ctx) as session, contextlib.aclosing(session.readings()) as stream:
        readings = await take(stream, 7)
    assert [r.seq for r in readings] == expected_seqs(receiver, clock.now() - 1860)
    (new,) = {r.session for r in readings}
    assert new.startswith(f"{SESSION}-20")
    assert new in {era_session(-behind(clock).total_seconds() + d) for d in (-60, 0, 60)}
    assert all(r.time > stored_time for r in readings)


@pytest.mark.parametrize("move", [3600, -7200], ids=["ahead-one-hour", "back-two-hours"])
async def test_a_record_stamped_after_the_clock_jumped_during_a_poll_is_dated_by_the_jump(
    receiver: ReceiverEmulator,
    clock: ManualClock,
    make_ctx,
    take,
    monkeypatch: pytest.MonkeyPatch,
    move: int,
) -> None:
    # Right after answering a ReadSystemTime, the receiver's clock jumps and a record is stamped
    # with it, before the driver reads the pages: the clock as first read cannot date it (an hour
    # ahead, it looked stamped before a reset the hub never saw and was passed over; two hours
    # back, it was dated two hours off).
    answer = receiver.answer
    armed: list[bool] = []

    def jump_after_the_clock_is_read(packet: Packet) -> Packet:
        reply = answer(packet)
        if armed and packet.command == Command.READ_SYSTEM_TIME:
            armed.clear()
            receiver.set_clock_error(move)
            clock.advance(300)  # the next record, stamped by the moved clock
        return reply

    monkeypatch.setattr(receiver, "answer", jump_after_the_clock_is_read)
    db = receiver.database
    ctx = make_ctx(backfill_hours=0.5)
    async with ReceiverSession(ctx) as session, contextlib.aclosing(session.readings()) as stream:
        before = await take(stream, len(expected_seqs(receiver, clock.now() - 1800)))
        armed.append(True)
        (reading,) = await take(stream, 1)
    lag = behind(clock)  # the true receiver clock moved 300 s in no time: measured after
    index = db.newest(clock.now())
    assert reading.seq == db.time(index) == db.true_time(index) + move
    # The hub's time of the moment the record was measured, whatever its stamp says.
    assert abs(reading.time - (receiver_time(db.true_time(index)) + lag)) < 5 * SECOND
    if move > 0:
        assert reading.session == SESSION
    else:  # its system time may repeat one already delivered: a session of its own
        assert reading.session != SESSION
        assert reading.session.startswith(f"{SESSION}-")
    assert reading.time > max(r.time for r in before)
    assert ctx.findings.clock_offset_s == pytest.approx(move - lag.total_seconds(), abs=5.0)


async def test_a_resume_point_in_the_future_falls_back_to_the_window(
    receiver: ReceiverEmulator, clock: ManualClock, make_ctx, take
) -> None:
    # A stored time ahead of the hub's clock cannot be a point to resume from.
    seq = clock.now() + 86400
    resume = ResumePoint("SM10000001", SESSION, seq, receiver_time(seq) + behind(clock))
    ctx = make_ctx(resume=resume, backfill_hours=0.5)
    async with ReceiverSession(ctx) as session, contextlib.aclosing(session.readings()) as stream:
        readings = await take(stream, 6)
    assert [r.seq for r in readings] == expected_seqs(receiver, clock.now() - 1800)
    assert {r.session for r in readings} == {SESSION}


async def test_special_low_high_display_only_and_noise(
    receiver: ReceiverEmulator, clock: ManualClock, make_ctx, take
) -> None:
    db = receiver.database
    newest = db.newest(clock.now())
    db.set_value(newest - 4, SpecialGlucose.SENSOR_NOT_ACTIVE)
    db.set_value(newest - 3, 39, trend=TrendArrow.DOUBLE_DOWN)
    db.set_value(newest - 2, 401, trend=TrendArrow.RATE_OUT_OF_RANGE)
    db.set_value(newest - 1, 0x8000 | 150, trend=TrendArrow.NOT_COMPUTABLE, noise=3)
    db.set_value(newest, 12)  # BAD_RF
    ctx = make_ctx(backfill_hours=5 * 300 / 3600)  # the last five records
    async with ReceiverSession(ctx) as session, contextlib.aclosing(session.readings()) as stream:
        low, high, shown = await take(stream, 3)
        clock.advance(300)
        (after,) = await take(stream, 1)
        assert dict(session.statuses) == {"sensor_not_active": 1, "bad_rf": 1}
    assert (low.glucose_mgdl, low.out_of_range, low.direction) == (
        None,
        "low",
        Direction.DOUBLE_DOWN,
    )
    assert (high.glucose_mgdl, high.out_of_range, high.direction) == (
        None,
        "high",
        Direction.RATE_OUT_OF_RANGE,
    )
    assert (shown.glucose_mgdl, shown.status, shown.direction) == (
        150,
        ("display_only", "noise_3"),
        Direction.NOT_COMPUTABLE,
    )
    assert after.seq == db.time(newest + 1)


async def test_a_crc_failure_is_counted_and_the_read_retried(
    receiver: ReceiverEmulator, clock: ManualClock, make_ctx, take
) -> None:
    ctx = make_ctx(backfill_hours=0.5)
    async with ReceiverSession(ctx) as session, contextlib.aclosing(session.readings()) as stream:
        first = await take(stream, 6)
        sent = receiver.requests.total()
        receiver.corrupt_next()
        clock.advance(300)
        (live,) = await take(stream, 1)
    assert ctx.dropped["crc"] == 1
    assert live.seq == first[-1].seq + 300
    # One poll is 3 requests (system time, page range, the newest page); one of them was resent.
    assert receiver.requests.total() - sent >= 4


async def test_garbage_between_frames_is_skipped(
    receiver: ReceiverEmulator, clock: ManualClock, make_ctx, take
) -> None:
    ctx = make_ctx(backfill_hours=0.5)
    # Before the PING answer: noise with a false frame start (SOF, a plausible length 770).
    receiver.inject_garbage(b"\x00\xff\x01\x02\x03noise")
    async with ReceiverSession(ctx) as session, contextlib.aclosing(session.readings()) as stream:
        await take(stream, 6)
        receiver.inject_garbage(b"\xaa" * 40)
        clock.advance(300)
        (live,) = await take(stream, 1)
    assert live.seq == expected_seqs(receiver, 0)[-1]
    assert ctx.dropped["garbage"] >= 2
    assert "crc" not in ctx.dropped
    assert receiver.requests["PING"] == 1  # skipped at once: no timeout, nothing sent again


async def test_a_stalled_receiver_times_out(receiver: ReceiverEmulator, make_ctx, take) -> None:
    ctx = make_ctx(backfill_hours=0.25, timeout=0.2)
    async with ReceiverSession(ctx) as session, contextlib.aclosing(session.readings()) as stream:
        await take(stream, 3)
        receiver.stalled = True
        started = time.monotonic()
        with pytest.raises(LinkLost, match="no valid answer"):
            await take(stream, 1)
    assert time.monotonic() - started < 3 * 0.2 + 1.0  # three attempts, then gives up


async def test_unplug_ends_the_session_and_replug_resumes(
    receiver: ReceiverEmulator, clock: ManualClock, make_ctx, take
) -> None:
    ctx = make_ctx(backfill_hours=0.25)
    async with ReceiverSession(ctx) as session, contextlib.aclosing(session.readings()) as stream:
        readings = await take(stream, 3)
        receiver.unplug()
        with pytest.raises(LinkLost):
            await take(stream, 1)
    assert not receiver.link.exists()
    with pytest.raises(DeviceNotFound):
        async with ReceiverSession(ctx):
            pass
    clock.advance(4 * 300)
    receiver.replug()
    last = readings[-1]
    resume = ResumePoint("SM10000001", SESSION, last.seq, last.time)
    async with (
        ReceiverSession(make_ctx(resume=resume)) as session,
        contextlib.aclosing(session.readings()) as stream,
    ):
        missed = await take(stream, 4)
    assert [r.seq for r in missed] == [last.seq + 300 * k for k in range(1, 5)]
    assert all(r.backfilled for r in missed)


async def test_g6_receiver_with_25_byte_records(tmp_path: Path, make_ctx, take) -> None:
    clock = ManualClock(receiver_seconds(EPOCH) + 500_000_000)
    async with ReceiverEmulator(
        tmp_path / "g6", clock=clock, model="g6", origin=clock.now() - 86400
    ) as g6:
        ctx = make_ctx(path=str(g6.link), backfill_hours=2.0)
        async with ReceiverSession(ctx) as session:
            assert session.identity is not None
            assert session.identity.model == "Dexcom G6 Receiver"
            async with contextlib.aclosing(session.readings()) as stream:
                readings = await take(stream, 24)
    assert [r.seq for r in readings] == expected_seqs(g6, clock.now() - 7200)
    assert g6.database.per_page == 20


async def test_an_empty_database_yields_nothing_until_a_record_exists(
    tmp_path: Path, make_ctx, take
) -> None:
    clock = ManualClock(500_000_000)
    async with (
        ReceiverEmulator(tmp_path / "new", clock=clock, origin=clock.now() + 100) as new,
        ReceiverSession(make_ctx(path=str(new.link))) as session,
        contextlib.aclosing(session.readings()) as stream,
    ):
        pending = asyncio.ensure_future(take(stream, 1))
        await asyncio.sleep(0.2)
        assert not pending.done()
        clock.advance(100)
        (first,) = await pending
    assert first.seq == clock.now()


async def test_a_late_answer_is_never_taken_for_the_next_request(
    receiver: ReceiverEmulator, make_ctx, take
) -> None:
    # The PING answer comes after the timeout: PING is sent again and answered at once; the
    # late ACK then arrives in front of the firmware header, fails to parse as one, and the
    # firmware header is asked again.
    receiver.hold_next(1)
    ctx = make_ctx(timeout=0.25)
    async with ReceiverSession(ctx) as session:
        assert session.identity is not None
        assert session.identity.model == "Dexcom G4 Receiver"
    assert receiver.requests["PING"] == 2
    assert receiver.requests["READ_FIRMWARE_HEADER"] == 2
    assert ctx.dropped == {"unexpected_answer": 1}


class NoFirmwareHeader(ReceiverEmulator):
    """A receiver that does not implement READ_FIRMWARE_HEADER."""

    def answer(self, packet: Packet) -> Packet:
        if packet.command == Command.READ_FIRMWARE_HEADER:
            return Packet(Command.INVALID_COMMAND)
        return super().answer(packet)


async def test_a_receiver_refusing_a_required_command_is_refused(tmp_path: Path, make_ctx) -> None:
    async with NoFirmwareHeader(tmp_path / "odd", clock=ManualClock(500_000_000)) as odd:
        with pytest.raises(DeviceRefused):
            async with ReceiverSession(make_ctx(path=str(odd.link))):
                pass
        # The port was released (it is opened exclusively): the next session gets as far.
        with pytest.raises(DeviceRefused):
            async with ReceiverSession(make_ctx(path=str(odd.link))):
                pass


async def test_a_port_that_is_not_there_is_not_found(tmp_path: Path, make_ctx) -> None:
    with pytest.raises(DeviceNotFound, match="cannot open"):
        async with ReceiverSession(make_ctx(path=str(tmp_path / "nothing"))):
            pass


async def test_damaged_pages_and_records_are_asked_again_then_passed_over(
    tmp_path: Path, make_ctx, take
) -> None:
    clock = ManualClock(500_000_000)
    emulator = ReceiverEmulator(tmp_path / "damaged", clock=clock, origin=clock.now() - 86400)
    db = emulator.database
    pages = db.page_range(clock.now())
    assert pages is not None
    bad_page = pages[1] - 1
    db.damaged_pages.add(bad_page)
    # The second record of the newest page and the last of the page before the damaged one
    # (within the window) are damaged in memory.
    bad_records = {db.per_page * pages[1] + 1, db.per_page * bad_page - 1}
    db.damaged_records |= bad_records
    window = clock.now() - 6 * 3600
    lost = {db.time(i) for i in range(db.per_page * bad_page, db.per_page * pages[1])}
    lost |= {db.time(i) for i in bad_records}
    expected = [t for t in expected_seqs(emulator, window) if t not in lost]
    async with emulator:
        ctx = make_ctx(path=str(emulator.link), backfill_hours=6.0)
        async with (
            ReceiverSession(ctx) as session,
            contextlib.aclosing(session.readings()) as stream,
        ):
            backfill = await take(stream, len(expected))
            clock.advance(300)
            (live,) = await take(stream, 1)
    assert [r.seq for r in backfill] == expected
    assert live.seq == db.time(db.newest(clock.now()))
    # Each damaged item arrived three times (asked again DAMAGED_RETRIES times), then was
    # passed over and counted once; the damaged page was not asked for on the next poll.
    tries = 1 + DAMAGED_RETRIES
    assert ctx.dropped == {"egv_page_crc": tries, "egv_record_crc": 2 * tries}
    assert ctx.findings.unreadable == 3
    assert ctx.findings.passed_over == {
        ("page", bad_page),
        ("page", pages[1], 1),
        ("page", pages[1] - 2, db.per_page - 1),
    }


class DamagedOnce(ReceiverEmulator):
    """The records in `database.damaged_records` are damaged in the first page read only."""

    def answer(self, packet: Packet) -> Packet:
        answer = super().answer(packet)
        if packet.command == Command.READ_DATABASE_PAGES and packet.payload[0] == 4:
            self.database.damaged_records.clear()
        return answer


async def test_a_record_damaged_once_is_read_again(tmp_path: Path, make_ctx, take) -> None:
    clock = ManualClock(500_000_000)
    emulator = DamagedOnce(tmp_path / "once", clock=clock, origin=clock.now() - 86400)
    db = emulator.database
    newest = db.newest(clock.now())
    db.damaged_records.add(newest - 2)
    async with emulator:
        ctx = make_ctx(path=str(emulator.link), backfill_hours=0.5)
        async with (
            ReceiverSession(ctx) as session,
            contextlib.aclosing(session.readings()) as stream,
        ):
            readings = await take(stream, 6)
    assert [r.seq for r in readings] == [db.time(i) for i in range(newest - 5, newest + 1)]
    assert ctx.dropped == {"egv_record_crc": 1}
    assert ctx.findings.unreadable == 0
    assert ctx.findings.attempts == {}
