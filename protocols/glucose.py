"""Bluetooth SIG Glucose Service (GLS 0x1808, fingerstick meters) codecs (protocols.md §1.13).

UUIDs: `GLUCOSE_SERVICE` 0x1808, `GLUCOSE_MEASUREMENT` 0x2A18 (notify),
`GLUCOSE_MEASUREMENT_CONTEXT` 0x2A34 (notify), `GLUCOSE_FEATURE` 0x2A51 (read),
`RECORD_ACCESS_CONTROL_POINT` 0x2A52 (write/indicate; codec in `protocols.racp`). GLS has no
E2E-CRC. Collector: enable notify on 2A18 (+2A34) and indicate on 2A52, then RACP
`01 03 01 <seq LE16>` = report records with sequence number >= seq (`report_records_from`).

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
* `GlucoseContext` (0x2A34; codec in `protocols.glucose_context`, re-exported): carbohydrate,
  meal, tester/health, exercise, medication, HbA1c per its flags; paired with its measurement
  by sequence number (measurement flag b4 announces it).
* `GlucoseFeature` (0x2A51): uint16 bits, `parse_feature` / `build_feature`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import IntEnum, IntFlag
from typing import Final

import construct as cs

from protocols.errors import ProtocolError
from protocols.gatt import (
    DATE_TIME,
    DateTime,
    SampleLocation,
    SampleType,
    add_minutes,
    build_construct,
    join_type_location,
    parse_construct,
    split_type_location,
    uuid16,
)
from protocols.glucose_context import (
    CarbohydrateId,
    GlucoseContext,
    Health,
    Meal,
    MedicationId,
    MedicationUnit,
    Tester,
)
from protocols.racp import (
    RECORD_ACCESS_CONTROL_POINT,
    RacpCommand,
    RacpOperator,
    report_number_of_records,
    report_records,
)
from protocols.sfloat import SFloat, SFloatValue, decode_sfloat, encode_sfloat

__all__ = [
    "GLUCOSE_FEATURE",
    "GLUCOSE_MEASUREMENT",
    "GLUCOSE_MEASUREMENT_CONTEXT",
    "GLUCOSE_SERVICE",
    "MGDL_PER_MMOLL",
    "RECORD_ACCESS_CONTROL_POINT",
    "CarbohydrateId",
    "GlucoseContext",
    "GlucoseFeature",
    "GlucoseMeasurement",
    "GlucoseStatus",
    "GlucoseUnit",
    "Health",
    "Meal",
    "MedicationId",
    "MedicationUnit",
    "Tester",
    "build_feature",
    "count_records_from",
    "parse_feature",
    "report_records_from",
]

GLUCOSE_SERVICE: Final = uuid16(0x1808)
GLUCOSE_MEASUREMENT: Final = uuid16(0x2A18)
GLUCOSE_MEASUREMENT_CONTEXT: Final = uuid16(0x2A34)
GLUCOSE_FEATURE: Final = uuid16(0x2A51)
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


class GlucoseFeature(IntFlag):
    """Glucose Feature bits (bits 11-15 reserved)."""

    LOW_BATTERY_DETECTION = 1 << 0
    SENSOR_MALFUNCTION_DETECTION = 1 << 1
    SENSOR_SAMPLE_SIZE = 1 << 2
    SENSOR_STRIP_INSERTION_ERROR_DETECTION = 1 << 3
    SENSOR_STRIP_TYPE_ERROR_DETECTION = 1 << 4
    SENSOR_RESULT_HIGH_LOW_DETECTION = 1 << 5
    SENSOR_TEMPERATURE_HIGH_LOW_DETECTION = 1 << 6
    SENSOR_READ_INTERRUPT_DETECTION = 1 << 7
    GENERAL_DEVICE_FAULT = 1 << 8
    TIME_FAULT = 1 << 9
    MULTIPLE_BOND = 1 << 10


def parse_feature(data: bytes) -> GlucoseFeature:
    """Decode the 2-byte Glucose Feature."""
    if len(data) != 2:
        raise ProtocolError("glucose feature: expected 2 bytes", bytes(data))
    return GlucoseFeature(int.from_bytes(data, "little"))


def build_feature(features: int) -> bytes:
    """Encode the Glucose Feature."""
    if not 0 <= features <= 0xFFFF:
        raise ProtocolError("glucose feature out of range")
    return features.to_bytes(2, "little")


def report_records_from(sequence_number: int) -> RacpCommand:
    """RACP "report stored records with sequence number >= n" (`01 03 01 <n LE16>`)."""
    return report_records(RacpOperator.GREATER_THAN_OR_EQUAL, sequence_number)


def count_records_from(sequence_number: int) -> RacpCommand:
    """RACP "report number of stored records with sequence number >= n"."""
    return report_number_of_records(RacpOperator.GREATER_THAN_OR_EQUAL, sequence_number)


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
