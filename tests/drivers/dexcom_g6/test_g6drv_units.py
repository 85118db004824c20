"""The G5/G6 driver's pure parts: options, the reading id scheme and conversion, the plugin as
the daemon loads it, the emulated transmitter's clock and memory, the emulator's options."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from drivers.dexcom_g6 import plugin
from drivers.dexcom_g6.clock import ManualClock, SteppingClock
from drivers.dexcom_g6.convert import (
    DRIVER,
    Skip,
    parse_session,
    session_epoch,
    session_id,
    to_reading,
)
from drivers.dexcom_g6.options import G6Options, parse_options
from drivers.dexcom_g6.serve import _tcp_server, make_transmitter, parse_emulator_options
from drivers.dexcom_g6.transmitter import Transmitter
from gatewayd import registry
from gatewayd.errors import ConfigError, UsageError
from gatewayd.models import Direction, Reading
from gatewayd.options import OptionReader
from protocols.dexcom_g6.framing import NO_SESSION, advertised_name
from protocols.dexcom_g6.glucose import CalibrationState, GlucoseRecord
from protocols.dexcom_g6.session import Glucose

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
ACTIVATION = T0 - timedelta(days=10)


def options(**table: Any) -> G6Options:
    reader = OptionReader(table, "config.toml", "devices[0]")
    parsed = parse_options(reader)
    reader.finish()
    return parsed


# -- options and plugin ------------------------------------------------------------------------


def test_options_defaults_and_normalisation() -> None:
    parsed = options(transmitter_id=" 8g1234 ", address="aa:bb:cc:dd:ee:ff")
    assert parsed == G6Options(transmitter_id="8G1234", address="AA:BB:CC:DD:EE:FF")
    assert (parsed.alternate, parsed.bond, parsed.g6_glucose) == (False, "auto", False)
    assert (parsed.scan_timeout, parsed.history) == (330.0, 86_400.0)


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        ({}, "transmitter_id", "is required"),
        ({"transmitter_id": "8G123"}, "transmitter_id", "6 letters or digits"),
        ({"transmitter_id": "8G12345"}, "transmitter_id", "6 letters or digits"),
        ({"transmitter_id": "8G-234"}, "transmitter_id", "6 letters or digits"),
        ({"transmitter_id": 812345}, "transmitter_id", "must be a string"),
        ({"transmitter_id": "8G1234", "alternate": "yes"}, "alternate", "true or false"),
        ({"transmitter_id": "8G1234", "scan_timeout": 0}, "scan_timeout", "> 0"),
        ({"transmitter_id": "8G1234", "history": -1}, "history", ">= 0"),
        ({"transmitter_id": "8G1234", "address": "nope"}, "address", "AA:BB:CC:DD:EE:FF"),
        ({"transmitter_id": "8G1234", "transmiter": "x"}, "transmiter", "unknown key"),
    ],
)
def test_bad_options_name_the_key(table: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as error:
        options(**table)
    assert error.value.key == f"devices[0].{key}"
    assert reason in error.value.reason


def test_the_plugin_loads_through_its_entry_point() -> None:
    loaded = registry.load("dexcom_g6")
    assert loaded is plugin
    assert (loaded.name, loaded.transport) == ("dexcom_g6", "ble")
    assert loaded.summary.startswith("Dexcom G5 and G6 transmitters")
    assert "transmitter_id" in loaded.help
    assert "[M]" in loaded.help  # what is verified and what is assumed
    assert loaded.match.ble_service_uuids == ("0000febc-0000-1000-8000-00805f9b34fb",)
    assert loaded.expected_interval is not None
    assert loaded.expected_interval(options(transmitter_id="8G1234")) == 300.0


# -- ids and conversion ------------------------------------------------------------------------


def glucose(record: GlucoseRecord, *, backfill: bool = False, status: int = 0) -> Glucose:
    return Glucose.from_record(
        record, ACTIVATION, sequence=None if backfill else 9, status=status, backfill=backfill
    )


def convert(event: Glucose, session: int | None = 777_600) -> Reading | Skip:
    return to_reading(event, device="g6", serial="8G1234", session=session, received=T0)


def test_session_ids_sort_and_parse() -> None:
    assert session_id(777_600) == "0000777600"
    assert parse_session("0000777600") == 777_600
    assert session_id(999) < session_id(1_000_000)
    assert parse_session("s00000001") is None
    assert parse_session("777600") is None
    # a clock epoch (after the transmitter's clock went back) keeps the start parseable
    assert session_id(0, 1_764_748_800) == "0000000000-1764748800"
    assert parse_session("0000000000-1764748800") == 0
    assert (session_epoch("0000000000-1764748800"), session_epoch("0000777600")) == (
        1_764_748_800,
        None,
    )
    assert parse_session("0000000000-") is None


def test_live_and_backfilled_copies_of_a_record_have_one_id() -> None:
    record = GlucoseRecord(864_000, 121, CalibrationState.OK, -8)
    live, backfilled = convert(glucose(record)), convert(glucose(record, backfill=True))
    assert isinstance(live, Reading)
    assert isinstance(backfilled, Reading)
    assert live.id == backfilled.id
    assert (live.backfilled, backfilled.backfilled) == (False, True)
    assert (live.driver, live.serial, live.session, live.seq) == (
        DRIVER,
        "8G1234",
        "0000777600",
        864_000,
    )
    assert live.time == ACTIVATION + timedelta(seconds=864_000)
    assert (live.glucose_mgdl, live.trend_mgdl_min, live.direction) == (121, -0.8, Direction.FLAT)
    other = convert(glucose(GlucoseRecord(864_299, 121, CalibrationState.OK, -8)))
    assert isinstance(other, Reading)
    assert other.id != live.id  # 299 s later: the next measurement, never folded into one


@pytest.mark.parametrize(
    ("state", "value", "flags", "expected"),
    [
        (CalibrationState.OK, 140, 0, ((), 140, None)),
        (CalibrationState.NEED_CALIBRATION, 140, 0, (("needs_calibration",), 140, None)),
        (CalibrationState.NEED_CALIBRATION_14, 140, 0, (("needs_calibration",), 140, None)),
        (CalibrationState.OK, 88, 4, (("display_only",), 88, None)),
        (CalibrationState.OK, 39, 0, ((), None, "low")),
        (CalibrationState.OK, 401, 0, ((), None, "high")),
    ],
)
def test_values_status_flags_and_range(
    state: CalibrationState, value: int, flags: int, expected: tuple[Any, ...]
) -> None:
    reading = convert(glucose(GlucoseRecord(864_000, value, state, 127, flags)))
    assert isinstance(reading, Reading)
    assert (reading.status, reading.glucose_mgdl, reading.out_of_range) == expected
    assert (reading.trend_mgdl_min, reading.direction) == (None, Direction.NONE)


def test_low_battery_is_a_status_flag() -> None:
    reading = convert(glucose(GlucoseRecord(864_000, 140, CalibrationState.OK), status=0x81))
    assert isinstance(reading, Reading)
    assert reading.status == ("battery_low",)


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (CalibrationState.WARMUP, "warmup"),
        (CalibrationState.STOPPED, "session_stopped"),
        (CalibrationState.SENSOR_FAILURE_11, "sensor_failed"),
        (CalibrationState.QUESTION_MARKS, "question_marks"),
        (CalibrationState.NEED_FIRST_INITIAL_CALIBRATION, "needs_initial_calibration"),
        (99, "state_99"),
    ],
)
def test_records_without_a_value_are_skipped(state: int, reason: str) -> None:
    assert convert(glucose(GlucoseRecord(864_000, 140, state))) == Skip(reason, 864_000)


def test_records_without_time_or_session_are_skipped() -> None:
    record = GlucoseRecord(864_000, 140, CalibrationState.OK)
    assert convert(glucose(record), session=None) == Skip("no_session", 864_000)
    timeless = Glucose.from_record(record, None)
    assert convert(timeless) == Skip("no_time", 864_000)


# -- the emulated transmitter ------------------------------------------------------------------


def test_transmitter_clock_sessions_and_spacing() -> None:
    clock = ManualClock(T0)
    tx = Transmitter("8g1234", clock=clock, seed=7)
    assert tx.transmitter_id == "8G1234"
    assert advertised_name(tx.transmitter_id) == "Dexcom34"
    assert tx.now() == 864_000
    assert tx.activation == ACTIVATION
    assert tx.time_message().session_start_time == 864_000 - 86_400
    times = [tx.measurement_time(i) for i in range(200)]
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert gaps <= {299, 300, 301}
    assert {299, 301} & gaps  # a second early now and then
    assert tx.index_at(times[50]) == 50
    assert tx.index_at(times[50] - 1) == 49
    assert tx.next_measurement() > tx.now()
    clock.advance(7.9)
    assert tx.now() == 864_007  # whole seconds, never rounded up


def test_transmitter_clock_jumps_and_reset() -> None:
    clock = ManualClock(T0)
    tx = Transmitter("8G1234", clock=clock, seed=7)
    held = tx.records(0, tx.now())
    tx.jump_clock(3600)  # from the next second
    assert tx.now() == 864_000  # this second keeps the old clock
    clock.advance(600)
    assert tx.now() == 864_600 + 3600
    kept = tx.records(0, tx.now())
    assert kept[: len(held) - 2] == held[2:]  # a jump ahead keeps the memory (10 min moved on)
    assert tx.time_message().session_start_time == 864_000 - 86_400 + 3600
    tx.jump_clock(-100)  # back: a transmitter whose clock went back starts an empty memory
    clock.advance(600)
    assert [r.timestamp for r in tx.records(0, tx.now())] == [
        tx.measurement_time(i) - 100
        for i in range(tx.index_at(864_601) + 1, tx.index_at(tx.elapsed()) + 1)
    ]
    reset = tx.reset()
    clock.advance(900)
    assert tx.now() == tx.elapsed() - reset
    assert tx.time_message().session_start_time == 0  # a new session with the new clock
    with pytest.raises(ValueError, match="below 0"):
        tx.jump_clock(-(10**9))
    stamps = tx.damage(["start", "end"], 0, tx.elapsed())
    assert tx.damaged == set(stamps)


def test_transmitter_memory_warmup_and_values() -> None:
    clock = ManualClock(T0)
    tx = Transmitter("8G1234", clock=clock, seed=7, session_age=3 * 3600, memory=3600)
    records = tx.records(0, tx.now())
    assert 11 <= len(records) <= 12  # an hour of memory
    assert records == tx.measured(tx.now() - 3600, tx.now())
    assert all(r.state == CalibrationState.OK and 39 <= r.glucose <= 401 for r in records)
    start = tx.now() - 3 * 3600
    warm = tx.measured(start, start + 7199)
    assert warm
    assert all((r.state, r.glucose) == (CalibrationState.WARMUP, 0) for r in warm)
    assert tx.measured(0, start - 1) == []  # no session: no records
    latest = tx.latest()
    assert latest is not None
    assert latest[1] == records[-1]
    assert latest[0] == len(tx.measured(start, tx.now()))  # numbered within the session
    again = Transmitter("8G1234", clock=ManualClock(T0), seed=7, session_age=3 * 3600)
    assert again.records(0, again.now())[-12:] == records[-12:]  # a pure function


def test_transmitter_without_session_and_new_session() -> None:
    clock = ManualClock(T0)
    tx = Transmitter("8G1234", clock=clock, session_age=None)
    assert tx.time_message().session_start_time == NO_SESSION
    assert tx.latest() is None
    assert tx.records(0, tx.now()) == []
    start = tx.start_session()
    assert tx.session_of(start) == start
    assert tx.session_of(start - 1) is None
    with pytest.raises(ValueError, match="after the current one"):
        tx.start_session()


async def test_manual_clock_wakes_sleepers_only_when_moved() -> None:
    clock = ManualClock(T0)
    woke = asyncio.Event()

    async def sleeper() -> None:
        await clock.sleep_until(T0 + timedelta(seconds=300))
        woke.set()

    task = asyncio.create_task(sleeper())
    clock.advance(299)
    await asyncio.sleep(0)
    assert not woke.is_set()
    clock.advance(1)
    async with asyncio.timeout(1):
        await task
    with pytest.raises(ValueError, match="backwards"):
        clock.set(T0)


async def test_stepping_clock_jumps_but_never_past_the_wall_clock() -> None:
    clock = SteppingClock(T0)
    await clock.sleep_until(T0 + timedelta(days=1))
    assert clock.now() == T0 + timedelta(days=1)  # at once: still in the past
    soon = datetime.now(UTC) + timedelta(seconds=0.05)
    await clock.sleep_until(soon)
    assert clock.now() == soon
    assert datetime.now(UTC) >= soon  # waited for the wall clock


# -- the emulator's options (gatewayd simulate --device dexcom-g6) -----------------------------


def emulator_options(**table: Any) -> Any:
    return parse_emulator_options(OptionReader(table, "--set", ""))


def test_emulator_options() -> None:
    settings = emulator_options(transmitter_id=812345, speed=60, history=3600, outage=3)
    assert settings.transmitter_id == "812345"  # `--set transmitter_id=812345` is a TOML int
    assert (settings.speed, settings.history, settings.outage) == (60, 3600, 3)
    assert (settings.require_bond, settings.refuse_bonding) == (True, False)
    assert emulator_options(refuse_bonding=True).refuse_bonding
    faults = emulator_options(damaged="start, end", clock_skew=-3600, reset_after=5, disorder=2)
    assert (faults.damaged, faults.clock_skew, faults.reset_after) == (("start", "end"), -3600, 5)
    assert (faults.disorder, faults.drop_in_backfill) == (2, None)
    assert emulator_options(drop_in_backfill=0).drop_in_backfill == 0
    tx = make_transmitter(settings)
    assert tx.transmitter_id == "812345"
    assert datetime.now(UTC) - tx.clock.now() >= timedelta(seconds=3599)  # replaying the past
    for table, key in [
        ({"transmitter_id": "8G12"}, "transmitter_id"),
        ({"session_age": 100, "age": 10}, "session_age"),
        ({"speed": 0.5}, "speed"),
        ({"memory": 10**6}, "memory"),
        ({"colour": "red"}, "colour"),
        ({"refuse_bonding": "yes"}, "refuse_bonding"),
        ({"damaged": "start,somewhere"}, "damaged"),
        ({"damaged": 3}, "damaged"),
        ({"clock_skew": -(10**9)}, "clock_skew"),
    ]:
        with pytest.raises(ConfigError) as error:
            emulator_options(**table)
        assert error.value.key == key


def test_emulator_serves_tcp_only() -> None:
    assert _tcp_server("tcp-server:127.0.0.1:0") == ("127.0.0.1", 0)
    for bad in (None, "usb:0", "tcp-client:127.0.0.1:9", "tcp-server:127.0.0.1:x"):
        with pytest.raises(UsageError):
            _tcp_server(bad)
