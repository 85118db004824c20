"""protocols.cgms.measurement / state / socp: every VERIFIED vector of protocols.md §1."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from protocols.cgms.measurement import (
    CgmMeasurement,
    StatusOctetOrder,
    StatusOctets,
    build_measurements,
    decode_records,
    parse_measurements,
)
from protocols.cgms.socp import (
    CalibrationRecord,
    CalibrationStatus,
    SocpOpCode,
    SocpPacket,
    SocpResponseCode,
    SocpResult,
)
from protocols.cgms.state import (
    CgmFeature,
    CgmFeatureBits,
    CgmStatus,
    SensorStatus,
    SessionRunTime,
    SessionStartTime,
    status_names,
)
from protocols.cgms.uuids import CGM_MEASUREMENT, CGMS_SERVICE
from protocols.errors import ControlPointError, CrcError, ProtocolError
from protocols.gatt.date_time import DateTime
from protocols.gatt.racp import RECORD_ACCESS_CONTROL_POINT
from protocols.gatt.sample import SampleLocation, SampleType
from protocols.sfloat import SFloat, SFloatSpecial


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


V1 = h("06 00 0C 10 06 00")
V2 = h("0F E3 D2 E4 05 00 02 14 FF 02 F0 E5 F3 8E 3F")
V3 = h("06 00 0C 10 05 00 06 00 0C 10 06 00")
V4 = h("08 00 0C 10 06 00 58 6F")
V5 = h("0C 03 62 00 A0 05 F1 FF 5F 00 91 10")
V6 = h("07 80 FA 00 1E 00 02")


def test_uuids_are_bleak_style_strings() -> None:
    assert CGMS_SERVICE == "0000181f-0000-1000-8000-00805f9b34fb"
    assert CGM_MEASUREMENT == "00002aa7-0000-1000-8000-00805f9b34fb"
    assert RECORD_ACCESS_CONTROL_POINT == "00002a52-0000-1000-8000-00805f9b34fb"


def test_v1_minimal_record() -> None:
    (m,) = parse_measurements(V1)
    assert m.glucose == SFloat(12, 1)
    assert m.glucose_mgdl == 120.0
    assert m.time_offset == 6
    assert m.status == 0
    assert (m.trend, m.quality, m.e2e_crc) == (None, None, False)
    assert m.octets == StatusOctets(0)
    assert m.build() == V1
    assert CgmMeasurement(SFloat(12, 1), 6).build() == V1


def test_v2_full_record_with_crc() -> None:
    (m,) = parse_measurements(V2)
    assert float(m.glucose) == 12.34
    assert m.time_offset == 5
    assert m.trend is not None
    assert float(m.trend) == 0.2
    assert m.quality is not None
    assert float(m.quality) == 99.7
    assert m.e2e_crc
    assert m.octets == StatusOctets.STATUS | StatusOctets.CAL_TEMP | StatusOctets.WARNING
    assert m.status & 0xFF == 0x02
    assert m.status >> 8 & 0xFF == 0x14
    assert m.status >> 16 == 0xFF
    assert SensorStatus.DEVICE_BATTERY_LOW in m.status
    assert SensorStatus.SENSOR_TEMPERATURE_TOO_HIGH in m.status
    assert SensorStatus.CALIBRATION_RECOMMENDED in m.status
    assert m.build() == V2
    # all three octets present: both readings of the flag bits agree (§1.3)
    assert parse_measurements(V2, StatusOctetOrder.NORDIC) == [m]


def test_v3_two_records_in_one_notification() -> None:
    records = parse_measurements(V3)
    assert [(float(r.glucose), r.time_offset) for r in records] == [(120.0, 5), (120.0, 6)]
    assert build_measurements(records) == V3


def test_v4_crc_error_is_rejected() -> None:
    with pytest.raises(CrcError) as info:
        parse_measurements(V4)
    assert (info.value.received, info.value.computed) == (0x6F58, 0x6F59)
    assert info.value.data == V4
    ((record, result),) = decode_records(V4)
    assert record == V4
    assert isinstance(result, CrcError)


def test_v5_trend_quality_crc() -> None:
    (m,) = parse_measurements(V5)
    assert m.glucose == SFloat(98)
    assert m.time_offset == 1440
    assert m.trend == SFloat(-15, -1)
    assert m.quality == SFloat(95)
    assert m.e2e_crc
    assert m.build() == V5
    built = CgmMeasurement(
        SFloat.from_float(98), 1440, trend=SFloat.from_float(-1.5), quality=SFloat(95), e2e_crc=True
    )
    assert built.build() == V5


def test_v6_status_octet_quirk() -> None:
    (sig,) = parse_measurements(V6)
    assert sig.glucose == SFloat(250)
    assert sig.time_offset == 30
    assert sig.status == SensorStatus.DEVICE_BATTERY_LOW
    assert status_names(sig.status) == ("device_battery_low",)
    assert sig.build() == V6
    (nordic,) = parse_measurements(V6, StatusOctetOrder.NORDIC)
    assert nordic.status == SensorStatus.RESULT_ABOVE_PATIENT_HIGH
    assert nordic.octets == StatusOctets.WARNING
    assert nordic.build(StatusOctetOrder.NORDIC) == V6
    # the same logical record is framed differently by the two readings
    assert nordic.build(StatusOctetOrder.SIG) == h("07 20 FA 00 1E 00 02")


def test_octets_none_sends_exactly_the_non_zero_octets() -> None:
    m = CgmMeasurement(SFloat(100), 10, SensorStatus.CALIBRATION_REQUIRED)
    (back,) = parse_measurements(m.build())
    assert back.octets == StatusOctets.CAL_TEMP
    assert back.status == SensorStatus.CALIBRATION_REQUIRED
    zero_octet = CgmMeasurement(SFloat(100), 10, octets=StatusOctets.STATUS).build()
    assert zero_octet == h("07 80 64 00 0A 00 00")
    with pytest.raises(ProtocolError):  # a set bit in an octet that is not sent
        CgmMeasurement(
            SFloat(100), 10, SensorStatus.SESSION_STOPPED, octets=StatusOctets(0)
        ).build()


def test_out_of_range_markers() -> None:
    low = CgmMeasurement(SFloatSpecial.NEGATIVE_INFINITY, 1)
    high = CgmMeasurement(SFloat(500), 1, SensorStatus.RESULT_ABOVE_DEVICE_RANGE)
    assert (low.out_of_range, low.glucose_mgdl) == ("low", None)
    assert high.out_of_range == "high"
    assert CgmMeasurement(SFloat(100), 1).out_of_range is None
    assert parse_measurements(low.build()) == [replace(low, octets=StatusOctets(0))]


def test_status_names_cover_every_bit() -> None:
    assert status_names(0) == ()
    assert status_names(SensorStatus.SESSION_STOPPED | SensorStatus.RESULT_BELOW_DEVICE_RANGE) == (
        "session_stopped",
        "result_below_device_range",
    )
    assert status_names(1 << 6 | 1 << 14) == ("reserved_bit_6", "reserved_bit_14")
    assert len(status_names(0xFFFFFF)) == 24


@pytest.mark.parametrize(
    "data",
    [
        b"",
        h("05 00 0C 10 06"),  # Size below the minimum
        h("06 00 0C 10 06"),  # truncated
        h("07 00 0C 10 06 00 00"),  # Size neither body nor body + 2
        h("06 01 0C 10 06 00"),  # trend flagged but absent
        h("06 00 0C 10 06 00 09"),  # trailing garbage after a record
    ],
)
def test_malformed_notifications(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_measurements(data)


def test_decode_records_keeps_going_after_a_bad_record() -> None:
    results = list(decode_records(V4 + V1 + h("02 00")))
    assert [type(r).__name__ for _, r in results] == ["CrcError", "CgmMeasurement", "ProtocolError"]
    assert results[2][0] == h("02 00")


# -- CGM Feature / Status / Session Start Time / Session Run Time ------------------------------


def test_feature_with_e2e() -> None:
    feature = CgmFeature.parse(h("00 90 01 59 c4 5c"))
    assert feature.features == (
        CgmFeatureBits.E2E_CRC | CgmFeatureBits.CGM_TREND_INFORMATION | CgmFeatureBits.CGM_QUALITY
    )
    assert feature.e2e_crc
    assert feature.sample_type == SampleType.INTERSTITIAL_FLUID
    assert feature.sample_location == SampleLocation.SUBCUTANEOUS_TISSUE
    assert feature.build() == h("00 90 01 59 c4 5c")


def test_feature_without_e2e_needs_ffff() -> None:
    feature = CgmFeature.parse(h("00 80 00 59 ff ff"))
    assert not feature.e2e_crc
    assert feature.build() == h("00 80 00 59 ff ff")
    with pytest.raises(ProtocolError):
        CgmFeature.parse(h("00 80 00 59 12 34"))
    with pytest.raises(CrcError):
        CgmFeature.parse(h("00 90 01 59 c4 5d"))
    with pytest.raises(ProtocolError):
        CgmFeature.parse(h("00 90 01 59 c4"))


def test_status() -> None:
    status = CgmStatus.parse(h("a0 05 00 04 00 7b d3"))
    assert status == CgmStatus(1440, SensorStatus.CALIBRATION_RECOMMENDED, e2e_crc=True)
    assert status.build() == h("a0 05 00 04 00 7b d3")
    assert CgmStatus.parse(h("a0 05 00 04 00")).e2e_crc is False
    with pytest.raises(CrcError):
        CgmStatus.parse(h("a0 05 00 04 00 7b d4"))


def test_session_start_time() -> None:
    sst = SessionStartTime.parse(h("e8 07 05 02 0a 0f 00 24 00 a6 3a"))
    assert sst.start == DateTime(2024, 5, 2, 10, 15, 0)
    assert (sst.time_zone, sst.dst_offset, sst.e2e_crc) == (36, 0, True)
    assert sst.to_utc() == datetime(2024, 5, 2, 1, 15, tzinfo=UTC)
    assert sst.build() == h("e8 07 05 02 0a 0f 00 24 00 a6 3a")
    tokyo = datetime(2024, 5, 2, 10, 15, tzinfo=timezone(timedelta(hours=9)))
    assert SessionStartTime.from_datetime(tokyo, e2e_crc=True) == sst


def test_session_start_time_unknowns_and_dst() -> None:
    base = DateTime(2024, 7, 1, 12, 0, 0)
    assert SessionStartTime(base, -128, 0).to_utc() is None
    assert SessionStartTime(base, 4, 255).to_utc() is None
    assert SessionStartTime(DateTime(0, 0, 0), 0, 0).to_utc() is None
    assert SessionStartTime(DateTime(2024, 2, 30), 0, 0).to_utc() is None
    # CEST: zone +1 h (4) plus DST +1 h (4)
    assert SessionStartTime(base, 4, 4).to_utc() == datetime(2024, 7, 1, 10, 0, tzinfo=UTC)
    with pytest.raises(ProtocolError):
        SessionStartTime.from_datetime(datetime(2024, 1, 1))  # noqa: DTZ001 - naive on purpose
    with pytest.raises(ProtocolError):
        SessionStartTime.from_datetime(datetime(2024, 1, 1, tzinfo=timezone(timedelta(minutes=7))))


def test_session_run_time() -> None:
    srt = SessionRunTime.parse(h("50 01 c6 32"))
    assert srt == SessionRunTime(336, e2e_crc=True)
    assert srt.build() == h("50 01 c6 32")
    assert SessionRunTime(336).build() == h("50 01")


# -- SOCP ----------------------------------------------------------------------------------------

SOCP_VECTORS = [
    ("1a 5c b0", SocpPacket(SocpOpCode.START_SESSION, None, True)),
    ("1b d5 a1", SocpPacket(SocpOpCode.STOP_SESSION, None, True)),
    ("01 05 cd be", SocpPacket(SocpOpCode.SET_COMMUNICATION_INTERVAL, 5, True)),
    ("02 95 2c", SocpPacket(SocpOpCode.GET_COMMUNICATION_INTERVAL, None, True)),
    ("03 05 7d 8d", SocpPacket(SocpOpCode.COMMUNICATION_INTERVAL_RESPONSE, 5, True)),
    (
        "1c 1a 01 6d 60",
        SocpPacket(
            SocpOpCode.RESPONSE_CODE,
            SocpResult(SocpOpCode.START_SESSION, SocpResponseCode.SUCCESS),
            True,
        ),
    ),
    (
        "04 70 00 a0 05 11 70 08 00 00 00 e3 ba",
        SocpPacket(
            SocpOpCode.SET_CALIBRATION_VALUE,
            CalibrationRecord(
                SFloat(112), 1440, SampleType.CAPILLARY_WHOLE_BLOOD, SampleLocation.FINGER, 2160
            ),
            True,
        ),
    ),
]


@pytest.mark.parametrize(("hex_bytes", "packet"), SOCP_VECTORS)
def test_socp_vectors(hex_bytes: str, packet: SocpPacket) -> None:
    assert SocpPacket.parse(h(hex_bytes)) == packet
    assert packet.build() == h(hex_bytes)
    without_crc = SocpPacket(packet.opcode, packet.operand)
    assert without_crc.build() == h(hex_bytes)[:-2]
    assert SocpPacket.parse(h(hex_bytes)[:-2]) == without_crc


def test_socp_alert_levels_and_calibration_response() -> None:
    level = SocpPacket(SocpOpCode.SET_HYPO_ALERT_LEVEL, SFloat(70))
    assert level.build() == h("0d 46 00")
    assert SocpPacket.parse(h("0e")) == SocpPacket(SocpOpCode.GET_HYPO_ALERT_LEVEL)
    rate = SocpPacket.parse(h("15 f1 ff"))
    assert rate.operand == SFloat(-15, -1)
    cal = CalibrationRecord(SFloat(90), 10, 2, 1, 20, 3, CalibrationStatus.PROCESS_PENDING)
    response = SocpPacket(SocpOpCode.CALIBRATION_VALUE_RESPONSE, cal)
    assert SocpPacket.parse(response.build()) == response
    assert SocpPacket.parse(h("05 ff ff")).operand == 0xFFFF


def test_socp_errors_carry_the_response_code() -> None:
    with pytest.raises(ControlPointError) as unknown:
        SocpPacket.parse(h("42"))
    assert unknown.value.response_code == SocpResponseCode.OP_CODE_NOT_SUPPORTED
    with pytest.raises(ControlPointError) as operand:
        SocpPacket.parse(h("01"))
    assert operand.value.response_code == SocpResponseCode.INVALID_OPERAND
    with pytest.raises(CrcError):
        SocpPacket.parse(h("1a 5c b1"))
    with pytest.raises(ProtocolError):
        SocpPacket.parse(b"")
    with pytest.raises(ProtocolError):
        SocpPacket(SocpOpCode.SET_COMMUNICATION_INTERVAL, 300).build()
    with pytest.raises(ProtocolError):
        SocpPacket(SocpOpCode.START_SESSION, 5).build()


def test_far_dates_never_overflow() -> None:
    edge = DateTime(9999, 12, 31, 23, 59, 0)
    assert SessionStartTime(edge, -48, 0).to_utc() is None  # UTC would be in year 10000
    assert SessionStartTime(DateTime(1, 1, 1), 56, 0).to_utc() is None
    assert SessionStartTime(DateTime(65535, 12, 31), 0, 0).to_utc() is None


def test_sfloat_values_copy_and_pickle() -> None:
    import copy
    import pickle

    record = parse_measurements(V5)[0]
    assert copy.deepcopy(record) == record
    assert pickle.loads(pickle.dumps(record)) == record  # noqa: S301 - our own bytes
