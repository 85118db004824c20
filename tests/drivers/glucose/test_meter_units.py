"""The glucose driver's pure parts: options, record -> Reading, which records to ask again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.glucose import plugin
from drivers.glucose.clock import MeterClock
from drivers.glucose.convert import SESSION, Skip, status_names, to_reading
from drivers.glucose.emulator import make_record
from drivers.glucose.options import GlucoseOptions, hub_zone, parse_options, zone
from drivers.glucose.placement import Progress, before_damaged, placed, rejected_seq, report_end
from drivers.glucose.serve import MeterSettings, parse_meter_options
from drivers.glucose.session import MAX_ASKS, GlucoseSession
from gatewayd.errors import ConfigError
from gatewayd.models import Reading
from gatewayd.options import OptionReader
from protocols.errors import ProtocolError
from protocols.gatt.date_time import DateTime
from protocols.gatt.sample import SampleLocation, SampleType
from protocols.gatt.session import RecordRejected
from protocols.glucose.clock import AdjustReason, CurrentTime
from protocols.glucose.context import CarbohydrateId, GlucoseContext, Health, Meal
from protocols.glucose.context import Tester as GlsTester
from protocols.glucose.measurement import GlucoseMeasurement, GlucoseStatus, GlucoseUnit
from protocols.glucose.session import GlucoseReading
from protocols.glucose.uuids import GLUCOSE_SERVICE
from protocols.sfloat import SFloat, SFloatSpecial

RECEIVED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def options(**table: Any) -> GlucoseOptions:
    reader = OptionReader(table, "gatewayd.toml", "devices[0]")
    parsed = plugin.parse_options(reader)
    reader.finish()
    return parsed


# -- options ------------------------------------------------------------------------------------


def test_defaults() -> None:
    assert options() == GlucoseOptions()
    assert GlucoseOptions() == GlucoseOptions(
        address=None, name=None, scan_timeout=600.0, bond="auto", tz="local", linger=10.0
    )


def test_every_option() -> None:
    parsed = options(
        address="c0:26:da:01:02:03",
        name="meter+",
        scan_timeout=30,
        bond="never",
        tz="Europe/Berlin",
        linger=0,
    )
    assert parsed == GlucoseOptions(
        "C0:26:DA:01:02:03", "meter+", 30.0, "never", "Europe/Berlin", 0
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"address": "C0:26:DA"}, "devices[0].address: must be a Bluetooth address"),
        ({"bond": "sometimes"}, "devices[0].bond: must be one of auto, always, never"),
        ({"tz": "Mars/Olympus"}, 'devices[0].tz: must be "local", an IANA time zone'),
        ({"scan_timeout": 0}, "devices[0].scan_timeout: must be > 0"),
        ({"linger": -1}, "devices[0].linger: must be >= 0"),
        ({"name": ""}, "devices[0].name: must not be empty"),
        ({"interval": 60}, "devices[0].interval: unknown key"),
    ],
)
def test_bad_options_fail_with_file_key_and_reason(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        options(**table)
    assert str(error.value).startswith(f"gatewayd.toml: {message}")


def test_zones() -> None:
    assert zone("UTC") == ZoneInfo("UTC")
    assert zone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    assert zone("+05:30") == timezone(timedelta(hours=5, minutes=30))
    assert zone("-0800") == timezone(timedelta(hours=-8))
    with pytest.raises(ValueError, match="IANA"):
        zone("+25:00")


def test_the_hub_zone_follows_tz_and_keeps_daylight_saving(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    local = zone("local")
    assert local == hub_zone() == ZoneInfo("Europe/Berlin")
    assert datetime(2024, 7, 1, tzinfo=local).utcoffset() == timedelta(hours=2)
    assert datetime(2024, 1, 1, tzinfo=local).utcoffset() == timedelta(hours=1)
    monkeypatch.setenv("TZ", "")
    assert datetime(2024, 1, 1, tzinfo=hub_zone()).utcoffset() is not None  # /etc/localtime


def test_the_help_text_is_the_package_docstring() -> None:
    assert plugin.name == "glucose"
    assert plugin.transport == "ble"
    assert plugin.summary.startswith("Bluetooth glucose meters")
    for key in ("address", "name", "scan_timeout", "bond", "tz", "linger"):
        assert f"\n  {key} " in plugin.help
    assert plugin.match.ble_service_uuids == (GLUCOSE_SERVICE,)


# -- record -> Reading --------------------------------------------------------------------------


def event(
    measurement: GlucoseMeasurement,
    context: GlucoseContext | None = None,
    *,
    tz: Any = UTC,
) -> GlucoseReading:
    return GlucoseReading(measurement, context, measurement.time(tz), backfill=True)


def convert(ev: GlucoseReading) -> Reading | Skip:
    return to_reading(ev, device="meter", serial="SN1", received=RECEIVED)


def test_the_spec_vector_becomes_a_reading() -> None:
    m = GlucoseMeasurement.parse(bytes.fromhex("03 07 00 e8 07 05 02 07 1e 00 00 00 6a b0 11"))
    reading = convert(event(m))
    assert isinstance(reading, Reading)
    assert (reading.seq, reading.glucose_mgdl, reading.out_of_range) == (7, 106.0, None)
    assert reading.time == datetime(2024, 5, 2, 7, 30, tzinfo=UTC)
    assert (reading.serial, reading.session, reading.driver) == ("SN1", SESSION, "glucose")
    assert reading.status == ("device_clock_unverified",)  # no hub anchor given: as it is
    assert reading.backfilled
    same = to_reading(event(m), device="meter", serial="SN1", received=RECEIVED + timedelta(1))
    assert isinstance(same, Reading)
    assert same.id == reading.id  # the id is the meter's record, not when we read it
    other = to_reading(event(m), device="meter", serial="SN2", received=RECEIVED)
    assert isinstance(other, Reading)
    assert other.id != reading.id


def test_mmol_per_litre_meters() -> None:
    m = make_record(1, RECEIVED, 99, unit=GlucoseUnit.MOL_PER_L).measurement
    assert m.concentration == SFloat(55, -4)  # 5.5 mmol/L
    reading = convert(event(m))
    assert isinstance(reading, Reading)
    assert reading.glucose_mgdl == 99.1


@pytest.mark.parametrize(
    ("status", "concentration", "side"),
    [
        (GlucoseStatus.RESULT_ABOVE_DEVICE_RANGE, SFloat(600, -5), "high"),
        (GlucoseStatus.RESULT_BELOW_DEVICE_RANGE, SFloat(20, -5), "low"),
        (GlucoseStatus.RESULT_ABOVE_DEVICE_RANGE, None, "high"),
        (None, SFloatSpecial.POSITIVE_INFINITY, "high"),
        (None, SFloatSpecial.NEGATIVE_INFINITY, "low"),
    ],
)
def test_out_of_range_is_a_marker_never_a_number(
    status: GlucoseStatus | None, concentration: Any, side: str
) -> None:
    m = GlucoseMeasurement(
        3,
        DateTime(2025, 1, 1, 12),
        concentration=concentration,
        sample_type=SampleType.CAPILLARY_WHOLE_BLOOD if concentration is not None else None,
        sample_location=SampleLocation.FINGER if concentration is not None else None,
        status=status,
    )
    reading = convert(event(GlucoseMeasurement.parse(m.build())))
    assert isinstance(reading, Reading)
    assert (reading.glucose_mgdl, reading.out_of_range) == (None, side)


def test_status_bits_and_context_become_status_names() -> None:
    status = GlucoseStatus.DEVICE_BATTERY_LOW | GlucoseStatus.TIME_FAULT
    context = GlucoseContext(
        5,
        carbohydrate_id=CarbohydrateId.LUNCH,
        carbohydrate_kg=SFloat(50, -3),
        meal=Meal.BEDTIME,
        tester=GlsTester.HEALTH_CARE_PROFESSIONAL,
        health=Health.NOT_AVAILABLE,
    )
    record = make_record(5, RECEIVED, 130, context=context, status=status)
    reading = convert(event(record.measurement, record.context))
    assert isinstance(reading, Reading)
    assert reading.status == (
        "device_battery_low",
        "time_fault",
        "meal_bedtime",
        "tester_health_care_professional",
        "device_clock_unverified",
    )


def test_control_solution_and_errors_are_not_readings() -> None:
    control = make_record(8, RECEIVED, 120, sample_type=SampleType.CONTROL_SOLUTION).measurement
    assert convert(event(control)) == Skip("control_solution", 8)
    error = GlucoseMeasurement(9, DateTime(2025, 1, 1), status=GlucoseStatus.STRIP_INSERTION_ERROR)
    assert convert(event(error)) == Skip("no_value", 9)


def test_every_status_bit_has_a_name() -> None:
    assert status_names(0xFFFF) == (
        "device_battery_low",
        "sensor_malfunction",
        "sample_size_insufficient",
        "strip_insertion_error",
        "strip_type_incorrect",
        "result_above_device_range",
        "result_below_device_range",
        "sensor_temperature_too_high",
        "sensor_temperature_too_low",
        "sensor_read_interrupted",
        "general_device_fault",
        "time_fault",
        "reserved_bit_12",
        "reserved_bit_13",
        "reserved_bit_14",
        "reserved_bit_15",
    )


def test_a_meter_without_a_set_clock_gets_the_receive_time() -> None:
    m = GlucoseMeasurement(
        2, DateTime(0, 0, 0), concentration=SFloat(88, -5), sample_type=1, sample_location=1
    )
    reading = convert(event(m))
    assert isinstance(reading, Reading)
    assert reading.time == RECEIVED
    assert reading.status == ("time_unknown",)


def test_meter_local_time_is_read_in_its_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    record = make_record(1, datetime(2024, 12, 24, 18, 0, tzinfo=berlin), 100, offset=30)
    assert record.measurement.base_time == DateTime(2024, 12, 24, 17, 30)
    reading = convert(event(record.measurement, tz=berlin))
    assert isinstance(reading, Reading)
    assert reading.time == datetime(2024, 12, 24, 17, 0, tzinfo=UTC)


# -- which records to ask for again ---------------------------------------------------------


def test_the_seq_a_rejected_packet_carries() -> None:
    data = GlucoseMeasurement(9, DateTime(2025, 1, 1)).build()[:-1]
    assert rejected_seq(data) == 9
    assert rejected_seq(b"\x03\x01") is None


def test_where_to_ask_again() -> None:
    session = GlucoseSession.__new__(GlucoseSession)  # only the bookkeeping
    session._asks = 0
    assert session._ask_from(Progress(last=6)) == 7  # after the last one yielded
    state = Progress(last=6, passed=7)
    assert session._ask_from(state) == 8  # past the damaged one passed over
    assert (state.passed, state.floor) == (None, 8)
    assert session._ask_from(Progress(last=None)) == 0  # nothing yielded yet: all
    session._asks = MAX_ASKS
    assert session._ask_from(Progress(last=40)) is None


# -- the emulator process's options ----------------------------------------------------------


def meter_settings(**table: Any) -> MeterSettings:
    return parse_meter_options(OptionReader(table, "--set", ""))


def test_meter_settings() -> None:
    assert meter_settings() == MeterSettings()
    parsed = meter_settings(records=5, bonding=True, close_after=0, tz="local", interval=2.5)
    assert (parsed.records, parsed.bonding, parsed.close_after, parsed.interval) == (
        5,
        True,
        0.0,
        2.5,
    )
    assert (parsed.refuse_bonding, meter_settings(refuse_bonding=True).refuse_bonding) == (
        False,
        True,
    )
    assert meter_settings(in_flight=2).in_flight == 2
    for bad, message in (
        ({"records": "many"}, "records: must be a whole number"),
        ({"in_flight": -1}, "in_flight: must be >= 0"),
        ({"records": -1}, "records: must be >= 0"),
        ({"bonding": "maybe"}, "bonding: must be true or false"),
        ({"refuse_bonding": 1}, "refuse_bonding: must be true or false"),
        ({"colour": "red"}, "colour: unknown key"),
        ({"tz": "Nowhere/Town"}, "tz: must be"),
    ):
        with pytest.raises(ConfigError, match=message):
            meter_settings(**bad)


def test_parse_options_is_the_plugins() -> None:
    assert plugin.parse_options is parse_options


def test_meter_fault_settings() -> None:
    parsed = meter_settings(current_time=True, clock=-3600, clock_reset=True, drop_after=8)
    assert (parsed.current_time, parsed.clock, parsed.clock_reset, parsed.drop_after) == (
        True,
        -3600.0,
        True,
        8,
    )
    assert meter_settings(damaged="1, 10,20").damaged == {1, 10, 20}
    assert meter_settings(damaged=7).damaged == {7}  # one number comes as a number
    for bad, message in (
        ({"damaged": "1,x"}, "damaged: not comma-separated"),
        ({"damaged": "70000"}, "damaged: sequence numbers are 0..65535"),
        ({"drop_after": -1}, "drop_after: must be >= 0"),
    ):
        with pytest.raises(ConfigError, match=message):
            meter_settings(**bad)


# -- the meter's clock ---------------------------------------------------------------------------

HUB = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_current_time_round_trips_on_a_known_vector() -> None:
    # 2026-11-20 13:00:05, Friday, 128/256 s, manual time update
    data = bytes.fromhex("ea07 0b 14 0d 00 05 05 80 01")
    value = CurrentTime.parse(data)
    assert value.build() == data
    assert value.adjust_reason == AdjustReason.MANUAL_TIME_UPDATE
    assert value.to_datetime(UTC) == datetime(2026, 11, 20, 13, 0, 5, 500000, tzinfo=UTC)
    assert CurrentTime.from_datetime(value.to_datetime(UTC) or HUB, value.adjust_reason) == value
    with pytest.raises(ProtocolError):
        CurrentTime.parse(data[:-1])
    assert CurrentTime.parse(bytes(10)).to_datetime(UTC) is None  # date not known


def test_records_are_dated_on_the_hub_clock_through_the_meter_offset() -> None:
    clock = MeterClock()
    assert clock.measure(HUB + timedelta(hours=1, seconds=0.4), HUB) == 3600.0  # whole seconds
    when, anchored = clock.date(HUB + timedelta(minutes=50), HUB)
    assert (when, anchored) == (HUB - timedelta(minutes=10), True)
    # jitter below STEADY keeps the offset: records a second apart keep their order
    assert clock.measure(HUB + timedelta(hours=1, seconds=1.6), HUB) == 3600.0


def test_a_record_stamped_before_the_calendar_was_set_keeps_the_offset_before() -> None:
    # the calendar ran an hour ahead on the last connection; it was set right since
    clock = MeterClock(previous=3600.0, floor=HUB - timedelta(minutes=30))
    clock.measure(HUB, HUB)
    # stamped by the old calendar 10 minutes ago: the new offset would date it in the future
    assert clock.date(HUB + timedelta(minutes=50), HUB) == (HUB - timedelta(minutes=10), True)
    # stamped by the new calendar
    assert clock.date(HUB - timedelta(minutes=5), HUB) == (HUB - timedelta(minutes=5), True)


def test_a_record_no_offset_explains_keeps_the_meter_calendar_unverified() -> None:
    clock = MeterClock()  # first contact after a reset to the epoch: the calendar reads 2000
    clock.measure(datetime(2000, 1, 1, 0, 10, tzinfo=UTC), HUB)
    stamped = HUB - timedelta(days=1)  # stored before the reset: ahead of the meter's now
    assert clock.date(stamped, HUB) == (stamped, False)
    assert MeterClock().date(stamped, HUB) == (stamped, False)  # no Current Time at all


# -- the first record of a report (a result in flight may come before the report's own) -----


def reported(seq: int) -> GlucoseReading:
    return event(GlucoseMeasurement(seq, DateTime(2025, 1, 1), concentration=SFloat(90, -5)))


def damaged(seq: int | None) -> RecordRejected:
    data = b"\x03" if seq is None else GlucoseMeasurement(seq, DateTime(2025, 1, 1)).build()[:-1]
    return RecordRejected("malformed", data)


def seqs(records: list[GlucoseReading]) -> list[int]:
    return [r.sequence_number for r in records]


def test_a_first_record_that_follows_the_last_one_yielded_is_taken_at_once() -> None:
    state = Progress(last=4)
    assert seqs(placed(state, reported(5))) == [5]
    assert state.ahead is None


def test_a_first_record_after_a_gap_waits_for_the_next_one() -> None:
    state = Progress(last=4)
    assert seqs(placed(state, reported(9))) == []  # a result in flight, or 5..8 deleted?
    assert seqs(placed(state, reported(10))) == [9, 10]  # in order


def test_a_first_record_that_was_in_flight_follows_the_report() -> None:
    state = Progress(last=4)
    assert seqs(placed(state, reported(12))) == []
    assert seqs(placed(state, reported(5))) == [5]  # numbered before it: 12 was in flight
    assert seqs(placed(state, reported(6))) == [6]
    assert seqs(report_end(state)) == [12]
    assert state.fresh  # the next report's first record waits again


def test_the_same_first_record_twice_decides_nothing() -> None:
    """In flight and notified again (seen in the driver kit's in-flight fault, 1 run in 6): the
    second copy must not be yielded ahead of the report, or the next ask starts after it."""
    state = Progress(last=6)
    assert seqs(placed(state, reported(13))) == []
    assert seqs(placed(state, reported(13))) == []  # still held: the next arrival decides
    assert before_damaged(state, damaged(7)) == []  # 13 was in flight
    assert state.in_flight is not None
    state = Progress(last=6)
    placed(state, reported(13))
    placed(state, reported(13))
    assert seqs(placed(state, reported(7))) == [7]
    assert seqs(placed(state, reported(14))) == [14]
    assert seqs(report_end(state)) == [13]  # once


def test_a_held_first_record_is_dropped_after_a_hole() -> None:
    state = Progress(last=4)
    placed(state, reported(12))
    placed(state, reported(5))
    state.skipping = True  # a damaged record: the report asked for again brings 12 too
    assert report_end(state) == []


def test_a_damaged_record_places_the_held_first_record_by_its_number() -> None:
    state = Progress(last=4)
    placed(state, reported(9))
    assert seqs(before_damaged(state, damaged(10))) == [9]  # in order
    state = Progress(last=4)
    placed(state, reported(12))
    assert before_damaged(state, damaged(5)) == []  # 12 was in flight
    assert state.in_flight is not None
    state = Progress(last=4)
    placed(state, reported(12))
    assert seqs(before_damaged(state, damaged(None))) == [12]  # no number: taken in order
