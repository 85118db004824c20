"""The driver session (unmodified bleak code) against the emulated transmitter over Bumble.

Each `g6.connect()` is one wake-up: scan, connect, authenticate, (bond,) time, glucose, backfill,
disconnect - real ATT/GATT on an in-process virtual link. The test moves the transmitter's clock
between wake-ups (`wakeup()`, `skip(n)` = wake-ups the hub misses); the driver shares the clock,
so every time is exact. Gaps are checked against what the transmitter held (`g6.held`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from drivers.dexcom_g6.convert import session_id
from drivers.dexcom_g6.emulator import BACKFILL_CAPACITY
from drivers.dexcom_g6.kit import TXID, Rig, rig
from gatewayd.errors import DeviceRefused, LinkLost
from gatewayd.models import Direction
from gatewayd.transport.bumble.backend import BumbleClient, BumbleScanner
from gatewayd.transport.bumble.link import refuse_pairing
from protocols.dexcom_g6.framing import ADVERTISED_SERVICE, STATUS_LOW_BATTERY
from protocols.dexcom_g6.glucose import CalibrationState, GlucoseTx

pytestmark = pytest.mark.timeout(20)

START = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)


def assert_complete(g6: Rig, *, once: bool = True) -> None:
    """Stored = everything the transmitter held between the oldest and newest stored reading,
    each once; and (`once`) nothing yielded twice."""
    stored = list(g6.stored.values())
    assert g6.keys() == g6.held(stored)
    if once:
        assert all(n == 1 for n in Counter(r.id for r in g6.yielded).values())


async def test_first_wakeup_authenticates_bonds_reads_time_and_glucose(g6: Rig) -> None:
    tx, emulator = g6.transmitter, g6.emulator
    latest = tx.latest()
    assert latest is not None
    _, record = latest

    (reading,) = await g6.connect()

    assert (reading.serial, reading.driver, reading.device) == (TXID, "dexcom_g6", "g6")
    assert reading.session == session_id(tx.sessions[-1])
    assert reading.seq == record.timestamp
    assert reading.time == tx.wall(record.timestamp)  # activation = now - transmitter time
    assert reading.glucose_mgdl == record.glucose
    assert reading.trend_mgdl_min == record.trend_mgdl_min
    assert reading.direction == Direction.from_rate(record.trend_mgdl_min)
    assert (reading.status, reading.backfilled, reading.out_of_range) == ((), False, None)
    assert [a.end_byte for a in emulator.auth_requests] == [0x02]  # the standard slot
    assert (emulator.keep_alives, emulator.bond_requests) == ([25], 1)
    assert emulator.commands == ["time", "glucose"]  # nothing stored, history 0: no backfill

    # Bonded: the next wake-up re-encrypts at once, no second bond request; it backfills.
    g6.wakeup()
    (second,) = await g6.connect()
    assert (emulator.connections, emulator.bond_requests) == (2, 1)
    assert emulator.commands[2:] == ["time", "glucose", "backfill"]
    assert second.seq == tx.measurement_time(tx.index_at(tx.now()))
    assert_complete(g6)


async def test_alternate_slot_and_g6_glucose_opcode(g6: Rig) -> None:
    (reading,) = await g6.connect(alternate=True, g6_glucose=True)
    assert [a.end_byte for a in g6.emulator.auth_requests] == [0x01]  # xDrip endByteAlt
    assert [m for m in g6.emulator.requests if isinstance(m, GlucoseTx)] == [GlucoseTx(g6=True)]
    assert reading.glucose_mgdl is not None


async def test_wrong_transmitter_id_fails_authentication_for_good() -> None:
    # Same last two characters: the hub finds "Dexcom34" and connects, but the ids differ.
    async with rig(START, transmitter_id="8G9934") as g6:
        with pytest.raises(DeviceRefused) as refused:
            await g6.connect()
        assert refused.value.retryable is False
        assert "token_hash_mismatch" in str(refused.value)
        assert "check transmitter_id" in str(refused.value)
        assert g6.emulator.connections == 1
        assert g6.emulator.commands == []  # never got past authentication
        assert g6.yielded == []


async def test_rejected_challenge_answer_is_refused(g6: Rig) -> None:
    g6.emulator.reject_auth = True
    with pytest.raises(DeviceRefused, match="challenge_rejected"):
        await g6.connect()


async def test_bonding_refused_by_option_parks(g6: Rig) -> None:
    with pytest.raises(DeviceRefused, match=r'requires bonding .* and bond = "never"'):
        await g6.connect(bond=False)  # the boolean of older configs: false is "never"
    assert g6.emulator.bond_requests == 0


async def test_bond_always_pairs_on_connect_so_no_bond_request_is_needed(g6: Rig) -> None:
    (reading,) = await g6.connect(bond="always")
    assert reading.glucose_mgdl is not None
    assert (g6.emulator.keep_alives, g6.emulator.bond_requests) == ([], 0)  # already bonded


async def test_a_transmitter_that_refuses_to_pair_is_refused_for_good(g6: Rig) -> None:
    refuse_pairing(g6.link.peripheral)
    with pytest.raises(DeviceRefused, match="bond request: bonding refused by the transmitter"):
        await g6.connect()
    assert g6.emulator.bond_requests == 1
    assert g6.stored == {}


async def test_missed_wakeups_are_backfilled_without_gaps_or_duplicates(g6: Rig) -> None:
    (first,) = await g6.connect()
    g6.skip(6)  # the hub misses six wake-ups; the transmitter measures on
    g6.wakeup()
    readings = await g6.connect()
    assert [r.backfilled for r in readings] == [True] * 6 + [False]  # oldest first, live last
    assert [r.seq for r in readings] == sorted(r.seq for r in readings)
    assert readings[0].seq > first.seq
    assert all(r.time == g6.transmitter.wall(r.seq) for r in readings)
    start, end, count = g6.emulator.backfills[-1]
    assert (start, count) == (first.seq + 1, 7)
    assert end == g6.transmitter.now()
    assert_complete(g6)


async def test_live_and_backfilled_copies_of_a_measurement_share_the_id(g6: Rig) -> None:
    await g6.connect()
    g6.wakeup()
    (live,) = await g6.connect()
    del g6.stored[live.id]  # say the store lost it: the next wake-up asks for it again
    g6.wakeup()
    again, newest = await g6.connect()
    assert (again.seq, again.backfilled, live.backfilled) == (live.seq, True, False)
    assert again.id == live.id
    assert not newest.backfilled
    assert_complete(g6, once=False)  # asked again on purpose


async def test_first_contact_fetches_history(g6: Rig) -> None:
    readings = await g6.connect(history=1800)
    assert len(readings) in (6, 7)  # 30 minutes of 5-minute records, live last
    assert [r.backfilled for r in readings][-1] is False
    assert all(r.backfilled for r in readings[:-1])
    assert_complete(g6)


async def test_a_link_drop_before_the_backfill_ends_withholds_the_live_value(g6: Rig) -> None:
    await g6.connect()
    g6.skip(3)
    g6.wakeup()
    g6.emulator.fail_next = {"backfill"}  # the transmitter drops the link instead
    with pytest.raises(LinkLost):
        await g6.connect()
    assert len(g6.yielded) == 1  # not the live value: the store would resume after the gap
    g6.wakeup()
    readings = await g6.connect()
    assert [r.backfilled for r in readings] == [True] * 4 + [False]
    assert_complete(g6)


async def test_a_corrupt_backfill_is_dropped_counted_and_asked_again(g6: Rig) -> None:
    await g6.connect()
    g6.skip(2)
    g6.wakeup()
    g6.emulator.corrupt_backfills = 1
    readings = await g6.connect()
    assert g6.dropped == ["crc_mismatch"]
    # the damaged range of three records was split in two halves, each asked once
    first, second = g6.emulator.backfills[1:]
    assert (first[2], second[2], second[0] - first[1]) == (2, 1, 1)
    assert [r.backfilled for r in readings] == [True] * 2 + [False]
    assert_complete(g6)


async def test_a_record_damaged_twice_on_the_link_is_asked_again_and_arrives(g6: Rig) -> None:
    await g6.connect()
    g6.wakeup()
    g6.emulator.corrupt_backfills = 2
    readings = await g6.connect()
    assert g6.dropped == ["crc_mismatch"] * 2
    assert len(g6.emulator.backfills) == 3  # one record: asked again DAMAGED_RETRIES times
    assert [r.backfilled for r in readings] == [False]
    assert_complete(g6)


async def test_calibration_states_display_only_and_out_of_range(g6: Rig) -> None:
    await g6.connect()
    tx = g6.transmitter
    now = tx.index_at(tx.now())
    t = [tx.measurement_time(now + k) for k in range(1, 7)]
    tx.override(t[0], state=CalibrationState.NEED_CALIBRATION)
    tx.override(t[1], display_only=True)
    tx.override(t[2], state=CalibrationState.WARMUP, glucose=0)
    tx.override(t[3], state=CalibrationState.SENSOR_FAILURE_11)
    tx.override(t[4], glucose=39)
    tx.override(t[5], glucose=401)
    tx.status = STATUS_LOW_BATTERY
    g6.skip(6)
    by_seq = {r.seq: r for r in await g6.connect()}
    assert set(by_seq) == {t[0], t[1], t[4], t[5]}  # warm-up and sensor failure: no value
    assert by_seq[t[0]].status == ("needs_calibration", "battery_low")
    assert by_seq[t[0]].glucose_mgdl is not None
    assert by_seq[t[1]].status == ("battery_low", "display_only")
    low, high = by_seq[t[4]], by_seq[t[5]]
    assert (low.glucose_mgdl, low.out_of_range) == (None, "low")
    assert (high.glucose_mgdl, high.out_of_range) == (None, "high")
    assert_complete(g6)


async def test_a_new_sensor_session_keeps_both_session_ids(g6: Rig) -> None:
    (before,) = await g6.connect()
    tx = g6.transmitter
    g6.skip(2)
    g6.clock.advance(60)
    new_start = tx.start_session()  # a new sensor: two hours of warm-up follow
    g6.skip(tx.warmup // tx.interval + 3)
    readings = await g6.connect()
    old = [r for r in readings if r.session == before.session]
    new = [r for r in readings if r.session == session_id(new_start)]
    assert len(old) == 2  # measured before the sensor change, backfilled under the old id
    assert 2 <= len(new) <= 3  # after the warm-up (its records carry no value)
    assert len(old) + len(new) == len(readings)
    assert_complete(g6)


async def test_a_transmitter_without_session_gives_nothing() -> None:
    async with rig(START, session_age=None) as g6:
        assert await g6.connect(history=3600) == []
        assert g6.emulator.commands == ["time", "glucose"]


async def test_a_wakeup_advertises_and_its_window_ends_with_the_transmitter_dropping_the_link() -> (
    None
):
    async with rig(START, window=1.0) as g6:
        wake = asyncio.create_task(g6.emulator.wake())
        seen: list[AdvertisementData] = []

        def is_transmitter(_device: BLEDevice, adv: AdvertisementData) -> bool:
            seen.append(adv)
            return adv.local_name == "Dexcom34"

        device = await BleakScanner.find_device_by_filter(
            is_transmitter, timeout=5, backend=BumbleScanner
        )
        assert device is not None
        assert ADVERTISED_SERVICE in seen[-1].service_uuids
        lost = asyncio.Event()
        client = BleakClient(device, lambda _c: lost.set(), backend=BumbleClient)
        await client.connect()  # and then does nothing: the window runs out
        assert await wake
        async with asyncio.timeout(2):
            await lost.wait()
        assert not client.is_connected
        assert not g6.emulator.device.is_advertising  # asleep until the next wake-up


async def test_a_full_backfill_is_continued_from_its_newest_record() -> None:
    # One record a minute: 40 000 s of history are ~666 records, more than one backfill holds.
    async with rig(START, interval=60) as g6:
        readings = await g6.connect(history=40_000)
        counts = [count for _, _, count in g6.emulator.backfills]
        assert counts[0] == BACKFILL_CAPACITY == 573
        assert len(counts) == 2
        assert g6.emulator.backfills[1][0] == readings[572].seq + 1
        assert len(readings) == sum(counts)
        assert not readings[-1].backfilled
        assert_complete(g6)


# -- clocks and damaged records (docs/dexcom-g6.md) ----------------------------------------------


async def test_times_come_from_the_hub_clock_and_a_jump_ahead_moves_nothing(g6: Rig) -> None:
    tx = g6.transmitter
    first = await g6.connect()
    assert g6.findings.clock_offset_s == 0.0
    tx.jump_clock(3600)  # the transmitter's clock jumps an hour ahead after this measurement
    g6.skip(2)
    g6.wakeup()
    after = await g6.connect()
    # dated hub now - (transmitter now - timestamp): the true times, not the jumped clock
    assert [r.time for r in after] == [tx.wall(r.seq - 3600) for r in after]
    assert all(r.seq - 3600 > first[-1].seq for r in after)
    assert g6.findings.clock_offset_s == 3600.0
    assert g6.stored[first[-1].id].time == first[-1].time  # nothing stored moved
    g6.wakeup()
    await g6.connect()
    assert g6.findings.clock_offset_s == 3600.0  # the jump stays shown until the next one


async def test_a_reset_starts_a_clock_epoch_and_nothing_stored_is_redated(g6: Rig) -> None:
    tx = g6.transmitter
    tx.warmup = 0
    g6.skip(3)
    g6.wakeup()
    before = await g6.connect(history=1500)
    stored = dict(g6.stored)
    reset = tx.reset()  # clock at 0, memory erased, a new sensor session
    g6.skip(2)
    g6.wakeup()
    after = await g6.connect()
    # the epoch: the new clock's activation (the reset) as the hub anchored it, Unix seconds
    assert {r.session for r in after} == {f"{session_id(0)}-{int(tx.wall(reset).timestamp())}"}
    assert [r.seq for r in after] == [r.timestamp for r in tx.records(0, tx.now())]
    assert [r.time for r in after] == [tx.wall(reset + r.seq) for r in after]
    assert min(r.seq for r in after) < max(r.seq for r in before)  # timestamps reused...
    assert {k: g6.stored[k] for k in stored} == stored  # ...nothing stored re-dated or replaced
    assert g6.findings.clock_offset_s == pytest.approx(-reset, abs=1)
    g6.wakeup()
    again = await g6.connect()  # the epoch is read back from the stored session id
    assert [r.session for r in again] == [after[0].session]


async def test_a_record_damaged_in_memory_is_passed_over_and_the_rest_flows(g6: Rig) -> None:
    tx = g6.transmitter
    await g6.connect()
    g6.skip(8)
    g6.wakeup()
    (bad,) = tx.damage(["middle"], tx.elapsed() - 9 * tx.interval, tx.elapsed() - 1)
    readings = await g6.connect()
    assert bad not in {r.seq for r in readings}
    assert g6.findings.unreadable == 1
    # the whole range, at most log2(9) splits, then the bad record alone: 1 + 2 retries
    assert set(g6.dropped) == {"crc_mismatch"}
    assert 1 + 1 + 3 <= len(g6.dropped) <= 1 + 4 + 3
    held = g6.held(list(g6.stored.values()))
    assert g6.keys() == [key for key in held if key[1] != bad]
    assert readings[-1].backfilled is False  # the live value came after the others
    g6.wakeup()
    await g6.connect()
    assert g6.findings.unreadable == 1  # counted once


async def test_a_backfill_cut_short_and_disordered_is_continued_in_order(g6: Rig) -> None:
    g6.emulator.disorder_backfills = 1  # a day's records: the oldest 286 twice, newest first
    readings = await g6.connect(history=86_400)
    start, end, sent = g6.emulator.backfills[0]
    assert sent == 2 * 286
    assert g6.emulator.backfills[1][0] > start  # the rest asked from the newest record + 1
    assert [r.seq for r in readings] == sorted({r.seq for r in readings})
    assert readings[-1].seq <= end
    assert_complete(g6)


async def test_readings_are_dated_by_the_hub_clock_never_the_transmitters(g6: Rig) -> None:
    g6.hub_ahead = timedelta(seconds=90)  # the hub's clock, not the transmitter's, is the truth
    g6.skip(3)
    g6.wakeup()
    readings = await g6.connect(history=1500)
    tx = g6.transmitter
    assert readings
    assert [r.time for r in readings] == [tx.wall(r.seq) + g6.hub_ahead for r in readings]
    assert [r.seq for r in readings] == [r.timestamp for r in tx.records(tx.now() - 1500, tx.now())]
