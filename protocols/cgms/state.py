"""CGMS state characteristics: CGM Feature, CGM Status, Session Start / Run Time (§1.5-§1.7).

Each value that may carry the E2E-CRC has `e2e_crc: bool`: parsing sets it from the length and
checks the CRC (`CrcError`), building appends the CRC when true.

* `SensorStatus` - the 24-bit Sensor Status Annunciation / CGM Status as named flags (§1.3):
  bits 0-7 Status octet, 8-15 Cal/Temp octet, 16-23 Warning octet; 6, 7, 14, 15 reserved.
  `status_names(flags)` gives snake_case names ("session_stopped", "device_battery_low",
  "calibration_recommended", ...; "reserved_bit_N" for reserved bits).
* `CgmFeature` (0x2AA8, read, always 6 bytes): 24 feature bits (`CgmFeatureBits`; bit 12 =
  E2E-CRC supported, 15 trend, 16 quality), type (low nibble) + sample location (high nibble),
  then a CRC over bytes 0-3 that must read 0xFFFF when E2E is unsupported (as Nordic checks).
  VERIFIED `00 90 01 59 c4 5c` = E2E + trend + quality, ISF, subcutaneous tissue.
* `CgmStatus` (0x2AA9, read): uint16 time offset (= "now" on the sensor clock, minutes since
  session start) + 3 status octets (+CRC). VERIFIED `a0 05 00 04 00 7b d3` = 1440 min,
  calibration recommended.
* `SessionStartTime` (0x2AAA, read/write): Date Time (local) + Time Zone (sint8, 15-minute
  units excluding DST, -48..+56, -128 unknown) + DST offset (0, 2 = +0.5 h, 4 = +1 h, 8 = +2 h,
  255 unknown) (+CRC); UTC = local - (zone + dst) x 15 min (`to_utc()`, None when anything is
  unknown). A collector writes the CURRENT time here and the sensor derives its start
  (xDrip, §1.7): `SessionStartTime.from_datetime(now)`. VERIFIED 2024-05-02 10:15:00 UTC+9
  `e8 07 05 02 0a 0f 00 24 00 a6 3a`.
* `SessionRunTime` (0x2AAB, read): expected run time in HOURS (+CRC). VERIFIED 336 h
  `50 01 c6 32`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntFlag
from typing import Final

import construct as cs

from protocols.codec import build_construct, parse_construct
from protocols.crc import append_e2e_crc, e2e_payload, with_e2e_crc
from protocols.errors import ProtocolError
from protocols.gatt.date_time import DATE_TIME, DateTime, add_minutes
from protocols.gatt.sample import (
    SampleLocation,
    SampleType,
    join_type_location,
    split_type_location,
)


class SensorStatus(IntFlag):
    """Sensor Status Annunciation / CGM Status bits (§1.3); bits 6, 7, 14, 15 are reserved."""

    SESSION_STOPPED = 1 << 0
    DEVICE_BATTERY_LOW = 1 << 1
    SENSOR_TYPE_INCORRECT = 1 << 2
    SENSOR_MALFUNCTION = 1 << 3
    DEVICE_SPECIFIC_ALERT = 1 << 4
    GENERAL_DEVICE_FAULT = 1 << 5
    TIME_SYNCHRONIZATION_REQUIRED = 1 << 8
    CALIBRATION_NOT_ALLOWED = 1 << 9
    CALIBRATION_RECOMMENDED = 1 << 10
    CALIBRATION_REQUIRED = 1 << 11
    SENSOR_TEMPERATURE_TOO_HIGH = 1 << 12
    SENSOR_TEMPERATURE_TOO_LOW = 1 << 13
    RESULT_BELOW_PATIENT_LOW = 1 << 16
    RESULT_ABOVE_PATIENT_HIGH = 1 << 17
    RESULT_BELOW_HYPO = 1 << 18
    RESULT_ABOVE_HYPER = 1 << 19
    RATE_OF_DECREASE_EXCEEDED = 1 << 20
    RATE_OF_INCREASE_EXCEEDED = 1 << 21
    RESULT_BELOW_DEVICE_RANGE = 1 << 22
    RESULT_ABOVE_DEVICE_RANGE = 1 << 23


_NAMES: Final = {int(member): str(member.name).lower() for member in SensorStatus}
_NO_STATUS: Final = SensorStatus(0)


def status_names(status: int) -> tuple[str, ...]:
    """Snake_case names of the set bits, low bit first ("reserved_bit_6" for reserved ones)."""
    return tuple(
        _NAMES.get(1 << bit, f"reserved_bit_{bit}") for bit in range(24) if status >> bit & 1
    )


class CgmFeatureBits(IntFlag):
    """CGM Feature bits (§1.5); 17-22 reserved."""

    CALIBRATION = 1 << 0
    PATIENT_HIGH_LOW_ALERTS = 1 << 1
    HYPO_ALERTS = 1 << 2
    HYPER_ALERTS = 1 << 3
    RATE_OF_INCREASE_DECREASE_ALERTS = 1 << 4
    DEVICE_SPECIFIC_ALERT = 1 << 5
    SENSOR_MALFUNCTION_DETECTION = 1 << 6
    SENSOR_TEMPERATURE_HIGH_LOW_DETECTION = 1 << 7
    SENSOR_RESULT_HIGH_LOW_DETECTION = 1 << 8
    LOW_BATTERY_DETECTION = 1 << 9
    SENSOR_TYPE_ERROR_DETECTION = 1 << 10
    GENERAL_DEVICE_FAULT = 1 << 11
    E2E_CRC = 1 << 12
    MULTIPLE_BOND = 1 << 13
    MULTIPLE_SESSIONS = 1 << 14
    CGM_TREND_INFORMATION = 1 << 15
    CGM_QUALITY = 1 << 16
    FEATURE_EXTENSION = 1 << 23


FEATURE = cs.Struct("features" / cs.Int24ul, "type_location" / cs.Int8ul, "crc" / cs.Int16ul)
#: The CRC field of a CGM Feature without E2E-CRC support.
_NO_CRC: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class CgmFeature:
    """CGM Feature: `00 90 01 59 c4 5c` = E2E + trend + quality, ISF, subcutaneous (VERIFIED)."""

    features: CgmFeatureBits
    sample_type: SampleType | int = SampleType.INTERSTITIAL_FLUID
    sample_location: SampleLocation | int = SampleLocation.SUBCUTANEOUS_TISSUE

    @property
    def e2e_crc(self) -> bool:
        """Whether every CRC-capable value of this device carries the E2E-CRC."""
        return bool(self.features & CgmFeatureBits.E2E_CRC)

    @classmethod
    def parse(cls, data: bytes) -> CgmFeature:
        """Decode 6 bytes; CRC checked when bit 12 is set, else it must read 0xFFFF."""
        if len(data) != 6:
            raise ProtocolError("CGM feature: expected 6 bytes", bytes(data))
        c = parse_construct(FEATURE, data, "CGM feature")
        features = CgmFeatureBits(c.features)
        if features & CgmFeatureBits.E2E_CRC:
            e2e_payload(data, 4, "CGM feature")
        elif c.crc != _NO_CRC:
            raise ProtocolError("CGM feature: CRC field must be 0xFFFF without E2E", bytes(data))
        sample_type, location = split_type_location(c.type_location)
        return cls(features, sample_type, location)

    def build(self) -> bytes:
        """6 bytes, CRC or 0xFFFF."""
        fields = {
            "features": int(self.features),
            "type_location": join_type_location(self.sample_type, self.sample_location),
            "crc": _NO_CRC,
        }
        raw = build_construct(FEATURE, fields, "CGM feature")
        return append_e2e_crc(raw[:4]) if self.e2e_crc else raw


STATUS = cs.Struct("time_offset" / cs.Int16ul, "status" / cs.Int24ul)


@dataclass(frozen=True, slots=True)
class CgmStatus:
    """CGM Status: `a0 05 00 04 00 7b d3` = offset 1440, calibration recommended (VERIFIED)."""

    time_offset: int
    status: SensorStatus = _NO_STATUS
    e2e_crc: bool = False

    @classmethod
    def parse(cls, data: bytes) -> CgmStatus:
        """Decode 5 bytes (+2 CRC)."""
        payload, crc = e2e_payload(data, 5, "CGM status")
        c = parse_construct(STATUS, payload, "CGM status")
        return cls(c.time_offset, SensorStatus(c.status), crc)

    def build(self) -> bytes:
        """5 bytes (+2 CRC)."""
        if not (0 <= self.time_offset <= 0xFFFF and 0 <= self.status <= 0xFFFFFF):
            raise ProtocolError("CGM status: field out of range")
        fields = {"time_offset": self.time_offset, "status": int(self.status)}
        return with_e2e_crc(build_construct(STATUS, fields, "CGM status"), self.e2e_crc)


SESSION_START_TIME = cs.Struct(
    "start" / DATE_TIME, "time_zone" / cs.Int8sl, "dst_offset" / cs.Int8ul
)
DST_UNKNOWN: Final = 255
_DST_CODES: Final = frozenset({0, 2, 4, 8})


@dataclass(frozen=True, slots=True)
class SessionStartTime:
    """Session Start Time: local Date Time + time zone and DST offset in 15-minute units."""

    start: DateTime
    time_zone: int = 0
    dst_offset: int = 0
    e2e_crc: bool = False

    @classmethod
    def parse(cls, data: bytes) -> SessionStartTime:
        """Decode 9 bytes (+2 CRC)."""
        payload, crc = e2e_payload(data, 9, "CGM session start time")
        c = parse_construct(SESSION_START_TIME, payload, "CGM session start time")
        return cls(DateTime.from_container(c.start), c.time_zone, c.dst_offset, crc)

    @classmethod
    def from_datetime(cls, dt: datetime, *, e2e_crc: bool = False) -> SessionStartTime:
        """`dt` (aware) as its local time, zone and DST (what a collector writes, §1.7)."""
        offset, dst = dt.utcoffset(), dt.dst() or timedelta(0)
        if offset is None:
            raise ProtocolError("session start time needs an aware datetime")
        quarter = timedelta(minutes=15)
        zone, dst_code = (offset - dst) // quarter, dst // quarter
        if (offset - dst) % quarter or dst % quarter or dst_code not in _DST_CODES:
            raise ProtocolError(f"UTC offset {offset} / DST {dst} not expressible")
        return cls(DateTime.from_datetime(dt), zone, dst_code, e2e_crc)

    def to_utc(self) -> datetime | None:
        """The start in UTC; None if date, zone or DST is unknown or invalid."""
        local = self.start.to_datetime(UTC)
        if local is None or not -48 <= self.time_zone <= 56 or self.dst_offset not in _DST_CODES:
            return None
        return add_minutes(local, -15 * (self.time_zone + self.dst_offset))

    def build(self) -> bytes:
        """9 bytes (+2 CRC)."""
        fields = {
            "start": self.start.as_dict(),
            "time_zone": self.time_zone,
            "dst_offset": self.dst_offset,
        }
        return with_e2e_crc(
            build_construct(SESSION_START_TIME, fields, "session start time"), self.e2e_crc
        )


SESSION_RUN_TIME = cs.Struct("hours" / cs.Int16ul)


@dataclass(frozen=True, slots=True)
class SessionRunTime:
    """Session Run Time: expected run time in hours (`50 01 c6 32` = 336 h, VERIFIED)."""

    hours: int
    e2e_crc: bool = False

    @classmethod
    def parse(cls, data: bytes) -> SessionRunTime:
        """Decode 2 bytes (+2 CRC)."""
        payload, crc = e2e_payload(data, 2, "CGM session run time")
        return cls(parse_construct(SESSION_RUN_TIME, payload, "CGM session run time").hours, crc)

    def build(self) -> bytes:
        """2 bytes (+2 CRC)."""
        if not 0 <= self.hours <= 0xFFFF:
            raise ProtocolError("session run time out of range")
        fields = {"hours": self.hours}
        return with_e2e_crc(
            build_construct(SESSION_RUN_TIME, fields, "session run time"), self.e2e_crc
        )
