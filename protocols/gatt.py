"""GATT building blocks shared by the CGMS (0x181F) and Glucose (0x1808) codecs and sessions.

Public API:

* `uuid16(0x2AA7) -> "00002aa7-0000-1000-8000-00805f9b34fb"` (the form bleak reports) and
  `normalize_uuid(value)` (accepts that form in any case, "2AA7", "0x2aa7" or an int).
* `Request` / `RequestKind` — what a sans-I/O session asks its driver to do next:
  `Request(kind=READ|WRITE, characteristic=<uuid str>, data=<bytes to write>,
  awaits_response=<bool>, label=<short snake_case name for logs>)`. For a READ the driver feeds
  the value read back through the session's `receive(characteristic, value)`; for a WRITE with
  `awaits_response` the answer is an indication on the same characteristic (enable
  notifications/indications before the first request, protocols.md §1.10 step 4).
* `SessionEvent` — base of all session events; the shared ones: `RecordRejected(reason, data)`,
  `ProcedureFailed(request, reason, code, data)`, `UnexpectedData(characteristic, data)`.
* `DateTime` — the 7-byte GATT Date Time (year uint16 with 0 = unknown, month, day, hours,
  minutes, seconds), kept field by field because devices send invalid dates; `to_datetime(tz)`
  gives an aware datetime or None; `add_minutes(dt, n)` shifts one without ever overflowing.
* `SampleType`, `SampleLocation` — the type (low nibble) / sample location (high nibble) enums
  shared by CGM Feature, CGMS calibration records and Glucose Measurement (§1.5, §1.13).
* `parse_construct(con, data, what)` / `build_construct(con, value, what)` — run a construct
  parser/builder, turning every construct or struct error into `ProtocolError` (the boundary rule
  of DESIGN.md §2).
* Device Information Service (0x180A) UUIDs, read by both collectors' drivers (§1.10 step 3):
  `DEVICE_INFORMATION_SERVICE`, `MANUFACTURER_NAME` (0x2A29), `MODEL_NUMBER` (0x2A24),
  `SERIAL_NUMBER` (0x2A25), `FIRMWARE_REVISION` (0x2A26), `HARDWARE_REVISION` (0x2A27),
  `SOFTWARE_REVISION` (0x2A28).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from enum import IntEnum, StrEnum
from typing import Any, Final, TypeVar

import construct as cs

from protocols.errors import ProtocolError

_BASE_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"


def uuid16(short: int) -> str:
    """The 128-bit lowercase string of a 16-bit SIG UUID."""
    return f"0000{short:04x}{_BASE_SUFFIX}"


def normalize_uuid(value: str | int) -> str:
    """`value` as a 128-bit lowercase UUID string (16-bit forms are expanded)."""
    if isinstance(value, int):
        return uuid16(value)
    text = value.strip().lower()
    text = text.removeprefix("0x")
    if len(text) == 4:
        try:
            return uuid16(int(text, 16))
        except ValueError:
            pass
    return text


DEVICE_INFORMATION_SERVICE: Final = uuid16(0x180A)
MANUFACTURER_NAME: Final = uuid16(0x2A29)
MODEL_NUMBER: Final = uuid16(0x2A24)
SERIAL_NUMBER: Final = uuid16(0x2A25)
FIRMWARE_REVISION: Final = uuid16(0x2A26)
HARDWARE_REVISION: Final = uuid16(0x2A27)
SOFTWARE_REVISION: Final = uuid16(0x2A28)


class RequestKind(StrEnum):
    """What the driver does with a `Request`."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Request:
    """One GATT operation a session wants performed, in order, one at a time."""

    kind: RequestKind
    characteristic: str
    data: bytes = b""
    #: READ: the value must be fed back through `receive()`; WRITE: an indication is expected.
    awaits_response: bool = True
    #: Short snake_case name of the procedure, for logs ("read_feature", "racp_report").
    label: str = ""


class SessionEvent:
    """Base class of every event a sans-I/O session (`cgms_session`, `glucose_session`) emits."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RecordRejected(SessionEvent):
    """A data record (or the rest of a notification) that could not be accepted.

    `reason`: "crc_mismatch", "missing_crc" (E2E announced, none sent) or "malformed".
    """

    reason: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ProcedureFailed(SessionEvent):
    """A request failed; the session skips that step and goes on.

    `reason`: "timeout", "error_response" (`code` = the device's RACP/SOCP response code),
    "crc_mismatch", "malformed" (`data` = what came back), "unexpected_response".
    """

    request: Request
    reason: str
    code: int | None = None
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class UnexpectedData(SessionEvent):
    """An indication or read value nobody waited for (late after a timeout, unsolicited)."""

    characteristic: str
    data: bytes


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


_E = TypeVar("_E", bound=IntEnum)


def enum_or_int(enum: type[_E], value: int) -> _E | int:
    """The member of `enum` for `value`, or the bare int for a reserved value."""
    try:
        return enum(value)
    except ValueError:
        return value


def split_type_location(octet: int) -> tuple[SampleType | int, SampleLocation | int]:
    """(type, sample location) of a type/sample-location octet."""
    return enum_or_int(SampleType, octet & 0x0F), enum_or_int(SampleLocation, octet >> 4)


def join_type_location(sample_type: int, location: int) -> int:
    """The type/sample-location octet."""
    if not (0 <= sample_type <= 15 and 0 <= location <= 15):
        raise ProtocolError(f"type {sample_type} / location {location} do not fit a nibble")
    return (location << 4) | sample_type


DATE_TIME = cs.Struct(
    "year" / cs.Int16ul,
    "month" / cs.Int8ul,
    "day" / cs.Int8ul,
    "hours" / cs.Int8ul,
    "minutes" / cs.Int8ul,
    "seconds" / cs.Int8ul,
)


@dataclass(frozen=True, slots=True)
class DateTime:
    """GATT Date Time (0x2A08 format), 7 bytes; 0 in year/month/day means "not known"."""

    year: int
    month: int
    day: int
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    @classmethod
    def from_container(cls, c: Any) -> DateTime:
        """From a parsed `DATE_TIME` container."""
        return cls(c.year, c.month, c.day, c.hours, c.minutes, c.seconds)

    @classmethod
    def from_datetime(cls, dt: datetime) -> DateTime:
        """The fields of `dt` as it reads on its own clock (its tzinfo is dropped)."""
        return cls(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)

    def as_dict(self) -> dict[str, int]:
        """Field dict for `DATE_TIME.build`."""
        return {
            "year": self.year,
            "month": self.month,
            "day": self.day,
            "hours": self.hours,
            "minutes": self.minutes,
            "seconds": self.seconds,
        }

    def to_datetime(self, tz: tzinfo) -> datetime | None:
        """An aware datetime in `tz`, or None when the date is unknown or invalid."""
        if not (self.year and self.month and self.day):
            return None
        try:
            return datetime(
                self.year, self.month, self.day, self.hours, self.minutes, self.seconds, tzinfo=tz
            )
        except ValueError:
            return None


def add_minutes(dt: datetime | None, minutes: int) -> datetime | None:
    """`dt` + `minutes`, or None when `dt` is None or the result leaves datetime's range
    (device dates up to year 65535 reach it)."""
    if dt is None:
        return None
    try:
        return dt + timedelta(minutes=minutes)
    except OverflowError:
        return None


#: Errors a construct parser may raise on bad input besides ConstructError (compiled parsers
#: unpack short reads with `struct`; adapters may raise ValueError).
_PARSE_ERRORS = (cs.ConstructError, struct.error, ValueError, TypeError, KeyError, IndexError)


def parse_construct(con: cs.Construct[Any, Any], data: bytes, what: str) -> Any:
    """`con.parse(data)`; `ProtocolError` on any failure (callers check lengths themselves)."""
    try:
        return con.parse(data)
    except ProtocolError:
        raise
    except _PARSE_ERRORS as exc:
        raise ProtocolError(f"{what}: {exc}", bytes(data)) from exc


def build_construct(con: cs.Construct[Any, Any], value: Any, what: str) -> bytes:
    """`con.build(value)`; `ProtocolError` when the value does not fit the format."""
    try:
        return con.build(value)
    except ProtocolError:
        raise
    except _PARSE_ERRORS as exc:
        raise ProtocolError(f"{what}: cannot build: {exc}") from exc
