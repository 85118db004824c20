"""Glucose Feature (0x2A51, read): the meter's uint16 feature bits (protocols.md §1.13).

`GlucoseFeature` (bits 11-15 reserved), `parse_feature(data)` (exactly 2 bytes, else
`ProtocolError`) and `build_feature(features)`.
"""

from __future__ import annotations

from enum import IntFlag

import construct as cs

from protocols.codec import build_construct, parse_construct
from protocols.errors import ProtocolError

__all__ = ["FEATURE", "GlucoseFeature", "build_feature", "parse_feature"]

#: The layout: one little-endian uint16 of feature bits.
FEATURE = cs.Int16ul


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
    return GlucoseFeature(parse_construct(FEATURE, data, "glucose feature"))


def build_feature(features: int) -> bytes:
    """Encode the Glucose Feature."""
    if not 0 <= features <= 0xFFFF:
        raise ProtocolError("glucose feature out of range")
    return build_construct(FEATURE, features, "glucose feature")
