"""protocols.glucose.measurement / context / feature: the VERIFIED GLS vector, units."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from protocols.errors import ProtocolError
from protocols.gatt.date_time import DateTime
from protocols.gatt.sample import SampleLocation, SampleType
from protocols.glucose.context import (
    CarbohydrateId,
    GlucoseContext,
    Health,
    Meal,
    MedicationId,
    MedicationUnit,
)
from protocols.glucose.context import Tester as GlsTester
from protocols.glucose.feature import GlucoseFeature, build_feature, parse_feature
from protocols.glucose.measurement import GlucoseMeasurement, GlucoseStatus, GlucoseUnit
from protocols.glucose.session import report_records_from
from protocols.glucose.uuids import GLUCOSE_MEASUREMENT, GLUCOSE_SERVICE
from protocols.sfloat import SFloat, SFloatSpecial

VECTOR = bytes.fromhex("03 07 00 e8 07 05 02 07 1e 00 00 00 6a b0 11")


def test_uuids() -> None:
    assert GLUCOSE_SERVICE == "00001808-0000-1000-8000-00805f9b34fb"
    assert GLUCOSE_MEASUREMENT == "00002a18-0000-1000-8000-00805f9b34fb"


def test_verified_measurement() -> None:
    m = GlucoseMeasurement.parse(VECTOR)
    assert m.sequence_number == 7
    assert m.base_time == DateTime(2024, 5, 2, 7, 30, 0)
    assert m.time_offset == 0
    assert m.concentration == SFloat(106, -5)
    assert m.unit == GlucoseUnit.KG_PER_L
    assert m.glucose_mgdl == 106.0
    assert (m.sample_type, m.sample_location) == (
        SampleType.CAPILLARY_WHOLE_BLOOD,
        SampleLocation.FINGER,
    )
    assert (m.status, m.context_follows) == (None, False)
    assert m.time(UTC) == datetime(2024, 5, 2, 7, 30, tzinfo=UTC)
    assert m.build() == VECTOR


def test_mol_per_litre_offset_status_and_context_flag() -> None:
    m = GlucoseMeasurement(
        8,
        DateTime(2024, 5, 2, 23, 50),
        time_offset=15,
        concentration=SFloat(59, -4),  # 5.9 mmol/L
        unit=GlucoseUnit.MOL_PER_L,
        sample_type=SampleType.CAPILLARY_PLASMA,
        sample_location=SampleLocation.ALTERNATE_SITE_TEST,
        status=GlucoseStatus.DEVICE_BATTERY_LOW | GlucoseStatus.RESULT_ABOVE_DEVICE_RANGE,
        context_follows=True,
    )
    data = m.build()
    assert data[0] == 0x1F
    back = GlucoseMeasurement.parse(data)
    assert back == m
    assert back.glucose_mgdl == 106.3  # 5.9 x 18.0156, one decimal
    cet = timezone(timedelta(hours=1))
    assert back.time(cet) == datetime(2024, 5, 3, 0, 5, tzinfo=cet)
    assert int(GlucoseStatus.RESULT_ABOVE_DEVICE_RANGE) == 1 << 5  # SIG XML, not Nordic


def test_measurement_without_value_and_with_special() -> None:
    bare = GlucoseMeasurement(1, DateTime(0, 0, 0))
    assert bare.build() == bytes.fromhex("00 01 00 00 00 00 00 00 00 00")
    assert GlucoseMeasurement.parse(bare.build()) == bare
    assert bare.glucose_mgdl is None
    assert bare.time(UTC) is None
    high = GlucoseMeasurement(
        2,
        DateTime(2024, 1, 1),
        None,
        SFloatSpecial.POSITIVE_INFINITY,
        sample_type=1,
        sample_location=1,
    )
    assert GlucoseMeasurement.parse(high.build()).glucose_mgdl is None


@pytest.mark.parametrize("data", [b"", VECTOR[:-1], VECTOR + b"\x00", bytes.fromhex("01 07 00")])
def test_malformed_measurement(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        GlucoseMeasurement.parse(data)


def test_context_round_trip_every_field() -> None:
    context = GlucoseContext(
        7,
        carbohydrate_id=CarbohydrateId.LUNCH,
        carbohydrate_kg=SFloat(50, -3),
        meal=Meal.POSTPRANDIAL,
        tester=GlsTester.SELF,
        health=Health.NO_HEALTH_ISSUES,
        exercise_duration_s=1800,
        exercise_intensity_pct=60,
        medication_id=MedicationId.RAPID_ACTING_INSULIN,
        medication=SFloat(4, -3),
        medication_unit=MedicationUnit.LITERS,
        hba1c_pct=SFloat(65, -1),
        extended_flags=0,
    )
    data = context.build()
    assert data[0] == 0xFF
    assert data[8] == 0x51  # tester in the low nibble, health in the high one (SIG XML)
    assert GlucoseContext.parse(data) == context


def test_context_minimal_and_errors() -> None:
    assert GlucoseContext.parse(bytes.fromhex("02 07 00 01")) == GlucoseContext(
        7, meal=Meal.PREPRANDIAL
    )
    assert GlucoseContext.parse(bytes.fromhex("02 07 00 09")).meal == 9  # reserved kept as int
    for bad in ("", "02 07 00", "00 07", "01 07 00 01 00"):
        with pytest.raises(ProtocolError):
            GlucoseContext.parse(bytes.fromhex(bad))
    with pytest.raises(ProtocolError):
        GlucoseContext(1, carbohydrate_id=CarbohydrateId.SNACK).build()


def test_feature_and_racp_helper() -> None:
    features = parse_feature(bytes.fromhex("03 04"))
    assert (
        features
        == GlucoseFeature.LOW_BATTERY_DETECTION
        | GlucoseFeature.SENSOR_MALFUNCTION_DETECTION
        | GlucoseFeature.MULTIPLE_BOND
    )
    assert build_feature(features) == bytes.fromhex("03 04")
    with pytest.raises(ProtocolError):
        parse_feature(b"\x03")
    assert report_records_from(8).build() == bytes.fromhex("01 03 01 08 00")


def test_far_dates_never_overflow() -> None:
    m = GlucoseMeasurement(1, DateTime(9999, 12, 31, 23, 59), time_offset=32767)
    assert m.time(UTC) is None
    assert GlucoseMeasurement(1, DateTime(2024, 13, 1)).time(UTC) is None
