"""The type / sample-location octet shared by CGM Feature, CGMS calibration records and Glucose
Measurement (protocols.md §1.5, §1.13): type in the low nibble, sample location in the high one.

`SampleType`, `SampleLocation`; `split_type_location(octet)` (reserved values stay ints) and
`join_type_location(type, location)`.
"""

from __future__ import annotations

from enum import IntEnum

from protocols.codec import enum_or_int
from protocols.errors import ProtocolError


class SampleType(IntEnum):
    """Low nibble of the type/sample-location octet (CGM Feature, GLS Measurement)."""

    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class SampleLocation(IntEnum):
    """High nibble of the type/sample-location octet (5 = subcutaneous is CGMS only)."""

    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    SUBCUTANEOUS_TISSUE = 5
    NOT_AVAILABLE = 15


def split_type_location(octet: int) -> tuple[SampleType | int, SampleLocation | int]:
    """(type, sample location) of a type/sample-location octet."""
    return enum_or_int(SampleType, octet & 0x0F), enum_or_int(SampleLocation, octet >> 4)


def join_type_location(sample_type: int, location: int) -> int:
    """The type/sample-location octet."""
    if not (0 <= sample_type <= 15 and 0 <= location <= 15):
        raise ProtocolError(f"type {sample_type} / location {location} do not fit a nibble")
    return (location << 4) | sample_type
