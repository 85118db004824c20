"""Glucose Measurement Context (0x2A34) codec.

Layout (SIG XML `org.bluetooth.characteristic.glucose_measurement_context`): Flags | Sequence
Number uint16 | Extended Flags uint8 (b7) | Carbohydrate ID uint8 + Carbohydrate SFLOAT kg (b0) |
Meal uint8 (b1) | Tester (low nibble) + Health (high nibble) (b2) | Exercise Duration uint16 s,
65535 = overrun + Exercise Intensity uint8 % (b3) | Medication ID uint8 + Medication SFLOAT in
kg or litres (b4; unit flag b5: 0 = kg, 1 = litres) | HbA1c SFLOAT % (b6). Not in protocols.md:
taken from the SIG XML (oesmith/gatt-xml) and matching RivieraWaves' packer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import construct as cs

from protocols.codec import build_construct, enum_or_int, parse_construct
from protocols.errors import ProtocolError
from protocols.gatt.sample import join_type_location
from protocols.sfloat import SFloatValue, decode_sfloat, encode_sfloat

_F = cs.this.flags


class CarbohydrateId(IntEnum):
    """Context: which meal the carbohydrate belongs to."""

    BREAKFAST = 1
    LUNCH = 2
    DINNER = 3
    SNACK = 4
    DRINK = 5
    SUPPER = 6
    BRUNCH = 7


class Meal(IntEnum):
    """Context: meal relation of the measurement."""

    PREPRANDIAL = 1
    POSTPRANDIAL = 2
    FASTING = 3
    CASUAL = 4
    BEDTIME = 5


class Tester(IntEnum):
    """Context: who took the sample (low nibble)."""

    SELF = 1
    HEALTH_CARE_PROFESSIONAL = 2
    LAB_TEST = 3
    NOT_AVAILABLE = 15


class Health(IntEnum):
    """Context: health state (high nibble)."""

    MINOR_HEALTH_ISSUES = 1
    MAJOR_HEALTH_ISSUES = 2
    DURING_MENSES = 3
    UNDER_STRESS = 4
    NO_HEALTH_ISSUES = 5
    NOT_AVAILABLE = 15


class MedicationId(IntEnum):
    """Context: the medication taken."""

    RAPID_ACTING_INSULIN = 1
    SHORT_ACTING_INSULIN = 2
    INTERMEDIATE_ACTING_INSULIN = 3
    LONG_ACTING_INSULIN = 4
    PRE_MIXED_INSULIN = 5


class MedicationUnit(IntEnum):
    """Context flag b5: the medication's unit."""

    KILOGRAMS = 0
    LITERS = 1


CONTEXT = cs.Struct(
    "flags" / cs.Int8ul,
    "sequence_number" / cs.Int16ul,
    "extended_flags" / cs.If(_F & 0x80, cs.Int8ul),
    "carbohydrate_id" / cs.If(_F & 0x01, cs.Int8ul),
    "carbohydrate" / cs.If(_F & 0x01, cs.Int16ul),
    "meal" / cs.If(_F & 0x02, cs.Int8ul),
    "tester_health" / cs.If(_F & 0x04, cs.Int8ul),
    "exercise_duration" / cs.If(_F & 0x08, cs.Int16ul),
    "exercise_intensity" / cs.If(_F & 0x08, cs.Int8ul),
    "medication_id" / cs.If(_F & 0x10, cs.Int8ul),
    "medication" / cs.If(_F & 0x10, cs.Int16ul),
    "hba1c" / cs.If(_F & 0x40, cs.Int16ul),
)
#: Context flag bit → bytes it adds.
_CONTEXT_WIDTH: Final = {0x01: 3, 0x02: 1, 0x04: 1, 0x08: 3, 0x10: 3, 0x40: 2, 0x80: 1}


def _sfloat(word: int | None) -> SFloatValue | None:
    return None if word is None else decode_sfloat(word)


def _word(value: SFloatValue | None) -> int | None:
    return None if value is None else encode_sfloat(value)


@dataclass(frozen=True, slots=True)
class GlucoseContext:
    """Glucose Measurement Context; paired fields are both set or both None."""

    sequence_number: int
    carbohydrate_id: CarbohydrateId | int | None = None
    carbohydrate_kg: SFloatValue | None = None
    meal: Meal | int | None = None
    tester: Tester | int | None = None
    health: Health | int | None = None
    exercise_duration_s: int | None = None
    exercise_intensity_pct: int | None = None
    medication_id: MedicationId | int | None = None
    medication: SFloatValue | None = None  # in `medication_unit`
    medication_unit: MedicationUnit = MedicationUnit.KILOGRAMS
    hba1c_pct: SFloatValue | None = None
    extended_flags: int | None = None

    @classmethod
    def parse(cls, data: bytes) -> GlucoseContext:
        """Decode one notification."""
        if not data:
            raise ProtocolError("glucose context: empty")
        f = data[0]
        if len(data) != 3 + sum(w for bit, w in _CONTEXT_WIDTH.items() if f & bit):
            raise ProtocolError(f"glucose context: length for flags 0x{f:02x}", bytes(data))
        c = parse_construct(CONTEXT, data, "glucose context")
        th = c.tester_health
        return cls(
            c.sequence_number,
            None if c.carbohydrate_id is None else enum_or_int(CarbohydrateId, c.carbohydrate_id),
            _sfloat(c.carbohydrate),
            None if c.meal is None else enum_or_int(Meal, c.meal),
            None if th is None else enum_or_int(Tester, th & 0x0F),
            None if th is None else enum_or_int(Health, th >> 4),
            c.exercise_duration,
            c.exercise_intensity,
            None if c.medication_id is None else enum_or_int(MedicationId, c.medication_id),
            _sfloat(c.medication),
            MedicationUnit(f >> 5 & 1),
            _sfloat(c.hba1c),
            c.extended_flags,
        )

    def build(self) -> bytes:
        """Encode the notification."""
        pairs = (
            (self.carbohydrate_id, self.carbohydrate_kg),
            (self.tester, self.health),
            (self.exercise_duration_s, self.exercise_intensity_pct),
            (self.medication_id, self.medication),
        )
        if any((a is None) != (b is None) for a, b in pairs):
            raise ProtocolError("glucose context: paired fields must be set together")
        flags = (
            (self.carbohydrate_id is not None)
            | (self.meal is not None) << 1
            | (self.tester is not None) << 2
            | (self.exercise_duration_s is not None) << 3
            | (self.medication_id is not None) << 4
            | self.medication_unit << 5
            | (self.hba1c_pct is not None) << 6
            | (self.extended_flags is not None) << 7
        )
        tester_health = None
        if self.tester is not None and self.health is not None:
            tester_health = join_type_location(self.tester, self.health)  # same nibble layout
        fields = {
            "flags": flags,
            "sequence_number": self.sequence_number,
            "extended_flags": self.extended_flags,
            "carbohydrate_id": self.carbohydrate_id,
            "carbohydrate": _word(self.carbohydrate_kg),
            "meal": self.meal,
            "tester_health": tester_health,
            "exercise_duration": self.exercise_duration_s,
            "exercise_intensity": self.exercise_intensity_pct,
            "medication_id": self.medication_id,
            "medication": _word(self.medication),
            "hba1c": _word(self.hba1c_pct),
        }
        return build_construct(CONTEXT, fields, "glucose context")
