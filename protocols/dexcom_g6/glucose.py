"""Dexcom G5/G6 time and glucose messages, glucose records and calibration states (§2.5).

The family's API is documented in `protocols.dexcom_g6` (package docstring). Sources:
protocols.md §2.5 (LoopKit/CGMBLEKit `Messages/TransmitterTimeRxMessage.swift`,
`Messages/GlucoseRxMessage.swift`, `CalibrationState.swift`; xDrip `g5model`).

* `TransmitterTimeTx` (0x24) / `TransmitterTimeRx` (0x25, 16 bytes): status, current time and
  session start in seconds since transmitter activation (0xFFFFFFFF = no session), 4 bytes
  not understood (seen `01 00 00 00`, kept to round-trip). VERIFIED vectors in the tests.
* `GlucoseTx` (0x30, or 0x4E with `g6=True`) / `GlucoseRx` (0x31 or 0x4F, 16 bytes): status
  (0x81 = low battery), sequence u32, then a `GlucoseRecord` (8 bytes, also the backfill record):
  timestamp u32, glucose word (low 12 bits mg/dL, high 4 bits set = display-only), calibration
  state u8, trend int8 in 0.1 mg/dL/min (127 = none).
* `CalibrationState` (CGMBLEKit names) with `state_name(state)` and `state_flags(state)`: the
  snake_case reading status flags a driver publishes (`()` for OK).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any, ClassVar, Final

import construct as cs

from protocols.codec import build_construct, enum_or_int, parse_construct
from protocols.dexcom_g6.framing import NO_SESSION, TREND_NONE, Opcode, build_framed, parse_framed
from protocols.errors import ProtocolError


class CalibrationState(IntEnum):
    """Calibration / algorithm state byte of G5/G6 glucose (CGMBLEKit `CalibrationState.swift`).

    §2.5 lists 1-18 [H]; 24 (expired) is in the same CGMBLEKit file. Other values stay ints.
    """

    STOPPED = 1
    WARMUP = 2
    NEED_FIRST_INITIAL_CALIBRATION = 4
    NEED_SECOND_INITIAL_CALIBRATION = 5
    OK = 6
    NEED_CALIBRATION = 7
    CALIBRATION_ERROR_8 = 8
    CALIBRATION_ERROR_9 = 9
    CALIBRATION_ERROR_10 = 10
    SENSOR_FAILURE_11 = 11
    SENSOR_FAILURE_12 = 12
    CALIBRATION_ERROR_13 = 13
    NEED_CALIBRATION_14 = 14
    SESSION_FAILURE_15 = 15
    SESSION_FAILURE_16 = 16
    SESSION_FAILURE_17 = 17
    QUESTION_MARKS = 18
    EXPIRED = 24


_S = CalibrationState
#: state -> (name, reading status flags). Flags reuse the names that
#: `gatewayd.integrations.alerts.kinds` knows
#: ("session_stopped", "sensor_expired"); the grouping of failure codes is ours [L].
_STATES: Final[dict[int, tuple[str, tuple[str, ...]]]] = {
    _S.STOPPED: ("session_stopped", ("session_stopped",)),
    _S.WARMUP: ("warmup", ("warmup",)),
    _S.NEED_FIRST_INITIAL_CALIBRATION: ("needs_initial_calibration", ("needs_calibration",)),
    _S.NEED_SECOND_INITIAL_CALIBRATION: ("needs_initial_calibration", ("needs_calibration",)),
    _S.OK: ("ok", ()),
    _S.NEED_CALIBRATION: ("needs_calibration", ("needs_calibration",)),
    _S.NEED_CALIBRATION_14: ("needs_calibration", ("needs_calibration",)),
    _S.CALIBRATION_ERROR_8: ("calibration_error", ("calibration_error",)),
    _S.CALIBRATION_ERROR_9: ("calibration_error", ("calibration_error",)),
    _S.CALIBRATION_ERROR_10: ("calibration_error", ("calibration_error",)),
    _S.CALIBRATION_ERROR_13: ("calibration_error", ("calibration_error",)),
    _S.SENSOR_FAILURE_11: ("sensor_failed", ("sensor_failed",)),
    _S.SENSOR_FAILURE_12: ("sensor_failed", ("sensor_failed",)),
    _S.SESSION_FAILURE_15: ("session_failed", ("sensor_failed", "session_stopped")),
    _S.SESSION_FAILURE_16: ("session_failed", ("sensor_failed", "session_stopped")),
    _S.SESSION_FAILURE_17: ("session_failed", ("sensor_failed", "session_stopped")),
    _S.QUESTION_MARKS: ("question_marks", ("question_marks",)),
    _S.EXPIRED: ("sensor_expired", ("sensor_expired", "session_stopped")),
}
#: CGMBLEKit `hasReliableGlucose`: the only states whose value is a glucose reading.
RELIABLE_STATES: Final = frozenset({_S.OK, _S.NEED_CALIBRATION, _S.NEED_CALIBRATION_14})


def state_name(state: int) -> str:
    """ "ok", "warmup", "needs_calibration", "sensor_failed", ... or "state_<n>" if unknown."""
    return _STATES.get(state, (f"state_{state}", ()))[0]


def state_flags(state: int) -> tuple[str, ...]:
    """Reading status flags for a calibration state (empty for OK)."""
    entry = _STATES.get(state)
    return entry[1] if entry else (f"calibration_state_{state}",)


def at(activation: datetime | None, seconds: int) -> datetime | None:
    """`activation` + `seconds` of transmitter time, None if unknown or out of range."""
    if activation is None:
        return None
    try:
        return activation + timedelta(seconds=seconds)
    except OverflowError:
        return None


GLUCOSE_RECORD = cs.Struct(
    "timestamp" / cs.Int32ul,
    # uint16 LE: low 12 bits mg/dL, high 4 bits "display only" (e.g. 0x4058)
    "word"
    / cs.ByteSwapped(cs.BitStruct("flags" / cs.BitsInteger(4), "glucose" / cs.BitsInteger(12))),
    "state" / cs.Int8ul,
    "trend" / cs.Int8sl,
)


@dataclass(frozen=True, slots=True)
class GlucoseRecord:
    """One G5/G6 glucose value (in GlucoseRx and in the backfill stream), 8 bytes."""

    timestamp: int
    glucose: int
    state: CalibrationState | int
    trend: int = TREND_NONE
    flags: int = 0  # the high nibble of the glucose word; non-zero = display only

    SIZE: ClassVar[int] = 8

    @classmethod
    def from_container(cls, c: Any) -> GlucoseRecord:
        """From a parsed `GLUCOSE_RECORD`."""
        state = enum_or_int(CalibrationState, c.state)
        return cls(c.timestamp, c.word.glucose, state, c.trend, c.word.flags)

    @classmethod
    def parse(cls, data: bytes) -> GlucoseRecord:
        """Decode exactly 8 bytes."""
        if len(data) != cls.SIZE:
            raise ProtocolError(f"glucose record: {len(data)} bytes, expected 8", bytes(data))
        return cls.from_container(parse_construct(GLUCOSE_RECORD, data, "glucose record"))

    def as_dict(self) -> dict[str, Any]:
        """Field dict for `GLUCOSE_RECORD.build`."""
        word = {"flags": self.flags, "glucose": self.glucose}
        return {"timestamp": self.timestamp, "word": word, "state": self.state, "trend": self.trend}

    def build(self) -> bytes:
        """8 bytes."""
        return build_construct(GLUCOSE_RECORD, self.as_dict(), "glucose record")

    @property
    def display_only(self) -> bool:
        """High bits of the glucose word set: shown on the display only (§2.5)."""
        return self.flags != 0

    @property
    def trend_mgdl_min(self) -> float | None:
        """Rate of change in mg/dL/min; None when the transmitter has none (127)."""
        return None if self.trend == TREND_NONE else self.trend / 10

    @property
    def reliable(self) -> bool:
        """The state carries a glucose value (6 OK, 7/14 needs calibration) and it is ≥ 39."""
        return self.state in RELIABLE_STATES and self.glucose >= 39


TIME_TX = cs.Struct("opcode" / cs.Const(Opcode.TRANSMITTER_TIME_TX, cs.Int8ul))
TIME_RX = cs.Struct(
    "opcode" / cs.Const(Opcode.TRANSMITTER_TIME_RX, cs.Int8ul),
    "status" / cs.Int8ul,
    "current_time" / cs.Int32ul,
    "session_start_time" / cs.Int32ul,
    "extra" / cs.Bytes(4),
)


@dataclass(frozen=True, slots=True)
class TransmitterTimeTx:
    """Time request `24 e6 64` (VERIFIED), written to Control."""

    @classmethod
    def parse(cls, data: bytes) -> TransmitterTimeTx:
        """Decode 3 bytes."""
        parse_framed(TIME_TX, 3, data, "transmitter time request")
        return cls()

    def build(self) -> bytes:
        """3 bytes."""
        return build_framed(TIME_TX, {}, "transmitter time request")


@dataclass(frozen=True, slots=True)
class TransmitterTimeRx:
    """Transmitter time 0x25: seconds since activation now and at the session start."""

    status: int
    current_time: int
    session_start_time: int = NO_SESSION
    extra: bytes = b"\x01\x00\x00\x00"

    @classmethod
    def parse(cls, data: bytes) -> TransmitterTimeRx:
        """Decode 16 bytes (CRC checked)."""
        c = parse_framed(TIME_RX, 16, data, "transmitter time")
        return cls(c.status, c.current_time, c.session_start_time, bytes(c.extra))

    def build(self) -> bytes:
        """16 bytes."""
        fields = {
            "status": self.status,
            "current_time": self.current_time,
            "session_start_time": self.session_start_time,
            "extra": self.extra,
        }
        return build_framed(TIME_RX, fields, "transmitter time")

    @property
    def has_session(self) -> bool:
        """A sensor session runs (CGMBLEKit `hasValidSensorSession`)."""
        return (
            self.session_start_time != NO_SESSION and self.session_start_time <= self.current_time
        )

    def activation(self, now: datetime) -> datetime:
        """The transmitter's activation date: `now` - current time (§2.5)."""
        return now - timedelta(seconds=self.current_time)


GLUCOSE_TX = cs.Struct("opcode" / cs.OneOf(cs.Int8ul, [Opcode.GLUCOSE_TX, Opcode.GLUCOSE_G6_TX]))
GLUCOSE_RX = cs.Struct(
    "opcode" / cs.OneOf(cs.Int8ul, [Opcode.GLUCOSE_RX, Opcode.GLUCOSE_G6_RX]),
    "status" / cs.Int8ul,
    "sequence" / cs.Int32ul,
    "record" / GLUCOSE_RECORD,
)


@dataclass(frozen=True, slots=True)
class GlucoseTx:
    """Glucose request: `30 53 36` (G5 style, VERIFIED) or `4e 0a a9` with `g6` (VERIFIED)."""

    g6: bool = False

    @classmethod
    def parse(cls, data: bytes) -> GlucoseTx:
        """Decode 3 bytes."""
        c = parse_framed(GLUCOSE_TX, 3, data, "glucose request")
        return cls(c.opcode == Opcode.GLUCOSE_G6_TX)

    def build(self) -> bytes:
        """3 bytes."""
        opcode = Opcode.GLUCOSE_G6_TX if self.g6 else Opcode.GLUCOSE_TX
        return build_framed(GLUCOSE_TX, {"opcode": opcode}, "glucose request")


@dataclass(frozen=True, slots=True)
class GlucoseRx:
    """Glucose 0x31 (answer to 0x30) or 0x4F (answer to 0x4E), 16 bytes (§2.5)."""

    status: int
    sequence: int
    record: GlucoseRecord
    g6: bool = False  # opcode 0x4F

    @classmethod
    def parse(cls, data: bytes) -> GlucoseRx:
        """Decode 16 bytes (CRC checked)."""
        c = parse_framed(GLUCOSE_RX, 16, data, "glucose")
        record = GlucoseRecord.from_container(c.record)
        return cls(c.status, c.sequence, record, c.opcode == Opcode.GLUCOSE_G6_RX)

    def build(self) -> bytes:
        """16 bytes."""
        fields = {
            "opcode": Opcode.GLUCOSE_G6_RX if self.g6 else Opcode.GLUCOSE_RX,
            "status": self.status,
            "sequence": self.sequence,
            "record": self.record.as_dict(),
        }
        return build_framed(GLUCOSE_RX, fields, "glucose")
