"""CGM Measurement records as readings: out-of-range markers, specials, flags, ids, time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.cgms.convert import (
    Skip,
    glucose_of,
    parse_session_key,
    session_key,
    to_reading,
    trend_of,
)
from gatewayd.models import Direction, Reading, reading_id
from protocols.cgms.events import Measurement
from protocols.cgms.measurement import CgmMeasurement, parse_measurements
from protocols.cgms.state import SensorStatus
from protocols.sfloat import SFloat, SFloatSpecial

START = datetime(2025, 3, 14, 6, 0, 0, tzinfo=UTC)
NOW = START + timedelta(days=2)
S = SensorStatus


def measurement(record: CgmMeasurement, *, start: datetime | None = START) -> Measurement:
    time = None if start is None else start + timedelta(minutes=record.time_offset)
    return Measurement(record, time, start, backfill=False)


def reading(record: CgmMeasurement) -> Reading:
    result = to_reading(measurement(record), device="cgm", serial="SN1", received=NOW)
    assert isinstance(result, Reading)
    return result


def test_a_plain_record() -> None:
    (record,) = parse_measurements(bytes.fromhex("0c03620 0a005f1ff5f009110".replace(" ", "")))
    r = reading(record)  # protocols.md V5: 98 mg/dL at 1440 min, trend -1.5, quality 95 %
    assert (r.glucose_mgdl, r.out_of_range, r.seq) == (98.0, None, 1440)
    assert r.trend_mgdl_min == -1.5
    assert r.direction is Direction.FORTY_FIVE_DOWN
    assert r.quality_pct == 95.0
    assert r.time == START + timedelta(minutes=1440)
    assert r.session == "2025-03-14T06:00:00Z"
    assert r.id == reading_id("cgms", "SN1", "2025-03-14T06:00:00Z", 1440)
    assert r.status == ()


@pytest.mark.parametrize(
    ("glucose", "status", "expected"),
    [
        (SFloatSpecial.NEGATIVE_INFINITY, S(0), (None, "low")),
        (SFloatSpecial.POSITIVE_INFINITY, S(0), (None, "high")),
        (SFloat(39), S.RESULT_BELOW_DEVICE_RANGE, (None, "low")),  # never both
        (SFloat(401), S.RESULT_ABOVE_DEVICE_RANGE, (None, "high")),
        (SFloatSpecial.NRES, S.RESULT_BELOW_HYPO, (None, "low")),
        (SFloatSpecial.NRES, S.RESULT_ABOVE_PATIENT_HIGH, (None, "high")),
        (SFloatSpecial.NRES, S(0), None),
        (SFloatSpecial.NAN, S.DEVICE_BATTERY_LOW, None),
        (SFloat(1234, -1), S(0), (123.4, None)),
    ],
)
def test_out_of_range_is_a_marker_never_a_number(
    glucose: SFloat | SFloatSpecial, status: SensorStatus, expected: object
) -> None:
    assert glucose_of(CgmMeasurement(glucose, 10, status)) == expected


def test_a_record_without_a_value_or_a_session_is_not_published() -> None:
    no_value = CgmMeasurement(SFloatSpecial.NAN, 10)
    assert to_reading(measurement(no_value), device="d", serial="s", received=NOW) == Skip(
        "glucose_not_a_number", 10
    )
    unplaced = measurement(CgmMeasurement(SFloat(100), 10), start=None)
    assert to_reading(unplaced, device="d", serial="s", received=NOW) == Skip("session_unknown", 10)


@pytest.mark.parametrize(
    ("trend", "expected"),
    [
        (None, (None, Direction.NONE)),
        (SFloat(25, -1), (2.5, Direction.SINGLE_UP)),
        (SFloatSpecial.POSITIVE_INFINITY, (None, Direction.RATE_OUT_OF_RANGE)),
        (SFloatSpecial.NEGATIVE_INFINITY, (None, Direction.RATE_OUT_OF_RANGE)),
        (SFloatSpecial.NRES, (None, Direction.NOT_COMPUTABLE)),
        (SFloatSpecial.NAN, (None, Direction.NOT_COMPUTABLE)),
    ],
)
def test_trend_specials(trend: SFloat | SFloatSpecial | None, expected: object) -> None:
    assert trend_of(trend) == expected


def test_status_names_travel_as_flags() -> None:
    status = S.DEVICE_BATTERY_LOW | S.CALIBRATION_RECOMMENDED | S.SESSION_STOPPED
    r = reading(CgmMeasurement(SFloat(100), 5, status))
    assert r.status == ("session_stopped", "device_battery_low", "calibration_recommended")


def test_a_record_is_never_dated_after_it_was_received() -> None:
    late = CgmMeasurement(SFloat(100), int((NOW - START).total_seconds() // 60) + 3)
    assert reading(late).time == NOW


@given(st.datetimes(timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0)))
def test_session_keys_round_trip(start: datetime) -> None:
    assert parse_session_key(session_key(start)) == start


def test_other_session_strings_are_not_session_keys() -> None:
    assert parse_session_key("gls") is None
    assert parse_session_key("s00002041") is None
