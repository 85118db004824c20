"""Glucose Measurement (0x2A18) of the Bluetooth SIG Glucose Service (GLS 0x1808, fingerstick
meters; protocols.md §1.13). GLS has no E2E-CRC. UUIDs: `protocols.glucose.uuids`.

* `GlucoseMeasurement` (0x2A18): Flags (b0 time offset present; b1 concentration + type/location
  present; b2 unit 0 = kg/L, 1 = mol/L; b3 status present; b4 context follows) | sequence
  number uint16 | base time (Date Time, the meter's LOCAL clock, no zone) | time offset sint16
  min | concentration SFLOAT | type (low nibble) + sample location (high nibble) | status
  uint16. `glucose_mgdl`: kg/L x 100 000 (exact), mol/L x 1000 = mmol/L x `MGDL_PER_MMOLL`
  (one decimal); `time(tz)` = base time + offset in the meter's zone.
  VERIFIED `03 07 00 e8 07 05 02 07 1e 00 00 00 6a b0 11` = seq 7, 2024-05-02 07:30:00,
  offset 0, 106e-5 kg/L = 106 mg/dL, capillary whole blood, finger.
* `GlucoseStatus` (sensor status annunciation) bits, as the SIG XML, Wireshark and RivieraWaves
  define them: 0 battery low, 1 sensor malfunction, 2 sample size insufficient, 3 strip
  insertion error, 4 strip type incorrect, 5 result HIGHER than the device can process, 6 result
  LOWER than the device can process, 7 temperature too high, 8 too low, 9 read interrupted,
  10 general device fault, 11 time fault. (Nordic's parser, and protocols.md §1.13 after it,
  swap 5 and 6.)
* The Measurement Context (0x2A34) is `protocols.glucose.context`, paired with its measurement
  by sequence number (measurement flag b4 announces it); the Feature (0x2A51)
  `protocols.glucose.feature`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import IntEnum, IntFlag
from typing import Final

import construct as cs

from protocols.codec import build_construct, parse_construct
from protocols.errors import ProtocolError
from protocols.gatt.date_time import DATE_TIME, DateTime, add_minutes
from protocols.gatt.sample import (
    SampleLocation,
    SampleType,
    join_type_location,
    split_type_location,
)
from protocols.sfloat import SFloat, SFloatValue, decode_sfloat, encode_sfloat

__all__ = [
    "MEASUREMENT",
    "MGDL_PER_MMOLL",
    "SEQUENCE_HEAD",
    "GlucoseMeasurement",
    "GlucoseStatus",
    "GlucoseUnit",
    "sequence_number_of",
]

#: mg/dL per mmol/L: the value of gatewayd.models (glucose molar mass 180.156 g/mol).
MGDL_PER_MMOLL: Final = 18.0156


class GlucoseUnit(IntEnum):
    """Flag b2: the concentration's unit."""

    KG_PER_L = 0
    MOL_PER_L = 1


class GlucoseStatus(IntFlag):
    """Sensor Status Annunciation of a glucose measurement (bits 12-15 reserved)."""

    DEVICE_BATTERY_LOW = 1 << 0
    SENSOR_MALFUNCTION = 1 << 1
    SAMPLE_SIZE_INSUFFICIENT = 1 << 2
    STRIP_INSERTION_ERROR = 1 << 3
    STRIP_TYPE_INCORRECT = 1 << 4
    RESULT_ABOVE_DEVICE_RANGE = 1 << 5
    RESULT_BELOW_DEVICE_RANGE = 1 << 6
    SENSOR_TEMPERATURE_TOO_HIGH = 1 << 7
    SENSOR_TEMPERATURE_TOO_LOW = 1 << 8
    SENSOR_READ_INTERRUPTED = 1 << 9
    GENERAL_DEVICE_FAULT = 1 << 10
    TIME_FAULT = 1 << 11


_F = cs.this.flags
MEASUREMENT = cs.Struct(
    "flags" / cs.Int8ul,
    "sequence_number" / cs.Int16ul,
    "base_time" / DATE_TIME,
    "time_offset" / cs.If(_F & 0x01, cs.Int16sl),
    "concentration" / cs.If(_F & 0x02, cs.Int16ul),
    "type_location" / cs.If(_F & 0x02, cs.Int8ul),
    "status" / cs.If(_F & 0x08, cs.Int16ul),
)


#: The first fields of every measurement (and context): flags, then the sequence number.
SEQUENCE_HEAD = cs.Struct("flags" / cs.Int8ul, "sequence_number" / cs.Int16ul)
_HEAD_SIZE: Final = SEQUENCE_HEAD.sizeof()


def sequence_number_of(data: bytes) -> int | None:
    """The sequence number a measurement packet seems to carry (bytes 1-2) even when the rest
    is damaged; None when it is too short to hold one."""
    if len(data) < _HEAD_SIZE:
        return None
    return int(
        parse_construct(SEQUENCE_HEAD, data[:_HEAD_SIZE], "glucose measurement").sequence_number
    )


@dataclass(frozen=True, slots=True)
class GlucoseMeasurement:
    """One Glucose Measurement; the type/location fields exist iff `concentration` does."""

    sequence_number: int
    base_time: DateTime
    time_offset: int | None = None  # minutes, added to base_time
    concentration: SFloatValue | None = None  # in `unit`
    unit: GlucoseUnit = GlucoseUnit.KG_PER_L
    sample_type: SampleType | int | None = None
    sample_location: SampleLocation | int | None = None
    status: GlucoseStatus | None = None
    context_follows: bool = False

    @property
    def glucose_mgdl(self) -> float | None:
        """mg/dL, None without a concentration or for an SFLOAT special."""
        if not isinstance(self.concentration, SFloat):
            return None
        if self.unit == GlucoseUnit.KG_PER_L:
            return float(self.concentration.fraction() * 100_000)
        return round(float(self.concentration.fraction() * 1000) * MGDL_PER_MMOLL, 1)

    def time(self, tz: tzinfo) -> datetime | None:
        """When it was measured, reading the meter's clock in `tz`; None if the date is invalid."""
        return add_minutes(self.base_time.to_datetime(tz), self.time_offset or 0)

    @classmethod
    def parse(cls, data: bytes) -> GlucoseMeasurement:
        """Decode one notification."""
        if not data:
            raise ProtocolError("glucose measurement: empty")
        f = data[0]
        if len(data) != 10 + 2 * (f & 1) + 3 * (f >> 1 & 1) + 2 * (f >> 3 & 1):
            raise ProtocolError(f"glucose measurement: length for flags 0x{f:02x}", bytes(data))
        c = parse_construct(MEASUREMENT, data, "glucose measurement")
        sample_type, location = (None, None)
        if c.type_location is not None:
            sample_type, location = split_type_location(c.type_location)
        return cls(
            c.sequence_number,
            DateTime.from_container(c.base_time),
            c.time_offset,
            None if c.concentration is None else decode_sfloat(c.concentration),
            GlucoseUnit(f >> 2 & 1),
            sample_type,
            location,
            None if c.status is None else GlucoseStatus(c.status),
            bool(f & 0x10),
        )

    def build(self) -> bytes:
        """Encode the notification."""
        has_value = self.concentration is not None
        flags = (
            (self.time_offset is not None)
            | has_value << 1
            | self.unit << 2
            | (self.status is not None) << 3
            | self.context_follows << 4
        )
        fields = {
            "flags": flags,
            "sequence_number": self.sequence_number,
            "base_time": self.base_time.as_dict(),
            "time_offset": self.time_offset,
            "concentration": None
            if self.concentration is None
            else encode_sfloat(self.concentration),
            "type_location": join_type_location(self.sample_type or 0, self.sample_location or 0)
            if has_value
            else None,
            "status": None if self.status is None else int(self.status),
        }
        return build_construct(MEASUREMENT, fields, "glucose measurement")
