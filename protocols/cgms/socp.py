"""CGM Specific Ops Control Point (SOCP, 0x2AAC) codec (protocols.md §1.8).

Write `op code | operand | E2E-CRC (if CGM Feature bit 12)`; the server indicates a response
on the same characteristic. Op codes (`SocpOpCode`) and their operand (`SOCP_OPERAND`):

=========================  ======================================================
0x01 / 0x02 / 0x03         set / get / response communication interval: uint8 min
0x04 / 0x05 / 0x06         set / get / response glucose calibration value:
                           `CalibrationRecord` (10 B) / uint16 record number / record
0x07-0x09                  set / get / response patient high alert level: SFLOAT mg/dL
0x0A-0x0C, 0x0D-0x0F,      patient low, hypo, hyper alert levels: SFLOAT mg/dL
0x10-0x12
0x13-0x15, 0x16-0x18       rate of decrease / increase alert levels: SFLOAT (mg/dL)/min
0x19, 0x1A, 0x1B           reset device specific alert, START the session, STOP the session
0x1C                       response code: request op code + `SocpResponseCode` (`SocpResult`)
=========================  ======================================================

Gets take no operand. Response codes: 0x01 success, 0x02 op code not supported, 0x03 invalid
operand, 0x04 procedure not completed, 0x05 parameter out of range. Communication interval:
0xFF = fastest supported (Nordic), 0x00 = disable periodic communication per the SIG to the
digest author's knowledge (§8.2: unverified). "Get calibration value" 0xFFFF = last record is
unverified too. Calibration record: SFLOAT mg/dL | uint16 time (min) | type (low nibble) +
sample location (high nibble) | uint16 next calibration time (min) | uint16 record number |
status (`CalibrationStatus`: bit0 rejected, bit1 out of range, bit2 pending).

Public API: `SocpPacket(opcode, operand=None, e2e_crc=False)` with `.build()` and
`SocpPacket.parse(data)` (CRC presence from the length; `CrcError` on a mismatch;
`ControlPointError` with the SOCP `response_code` for an unknown op code or a bad operand);
`CalibrationRecord`, `CalibrationStatus`, `SocpResult`, `SocpOpCode`, `SocpResponseCode`.
VERIFIED (with E2E-CRC): start `1a 5c b0`; stop `1b d5 a1`; set interval 5 `01 05 cd be`; get
interval `02 95 2c`; interval response 5 `03 05 7d 8d`; success for start `1c 1a 01 6d 60`;
set calibration 112 mg/dL, capillary whole blood / finger, t=1440, next 2160
`04 70 00 a0 05 11 70 08 00 00 00 e3 ba`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum, IntFlag
from typing import Any, Final, cast

import construct as cs

from protocols.codec import build_construct, enum_or_int, parse_construct
from protocols.crc import e2e_payload, with_e2e_crc
from protocols.errors import ControlPointError, ProtocolError
from protocols.gatt.sample import (
    SampleLocation,
    SampleType,
    join_type_location,
    split_type_location,
)
from protocols.sfloat import SFloat, SFloatSpecial, SFloatValue, decode_sfloat, encode_sfloat


class SocpOpCode(IntEnum):
    """SOCP op codes."""

    SET_COMMUNICATION_INTERVAL = 0x01
    GET_COMMUNICATION_INTERVAL = 0x02
    COMMUNICATION_INTERVAL_RESPONSE = 0x03
    SET_CALIBRATION_VALUE = 0x04
    GET_CALIBRATION_VALUE = 0x05
    CALIBRATION_VALUE_RESPONSE = 0x06
    SET_PATIENT_HIGH_ALERT_LEVEL = 0x07
    GET_PATIENT_HIGH_ALERT_LEVEL = 0x08
    PATIENT_HIGH_ALERT_LEVEL_RESPONSE = 0x09
    SET_PATIENT_LOW_ALERT_LEVEL = 0x0A
    GET_PATIENT_LOW_ALERT_LEVEL = 0x0B
    PATIENT_LOW_ALERT_LEVEL_RESPONSE = 0x0C
    SET_HYPO_ALERT_LEVEL = 0x0D
    GET_HYPO_ALERT_LEVEL = 0x0E
    HYPO_ALERT_LEVEL_RESPONSE = 0x0F
    SET_HYPER_ALERT_LEVEL = 0x10
    GET_HYPER_ALERT_LEVEL = 0x11
    HYPER_ALERT_LEVEL_RESPONSE = 0x12
    SET_RATE_OF_DECREASE_ALERT_LEVEL = 0x13
    GET_RATE_OF_DECREASE_ALERT_LEVEL = 0x14
    RATE_OF_DECREASE_ALERT_LEVEL_RESPONSE = 0x15
    SET_RATE_OF_INCREASE_ALERT_LEVEL = 0x16
    GET_RATE_OF_INCREASE_ALERT_LEVEL = 0x17
    RATE_OF_INCREASE_ALERT_LEVEL_RESPONSE = 0x18
    RESET_DEVICE_SPECIFIC_ALERT = 0x19
    START_SESSION = 0x1A
    STOP_SESSION = 0x1B
    RESPONSE_CODE = 0x1C


class SocpResponseCode(IntEnum):
    """Response values of op code 0x1C."""

    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_OPERAND = 0x03
    PROCEDURE_NOT_COMPLETED = 0x04
    PARAMETER_OUT_OF_RANGE = 0x05


class CalibrationStatus(IntFlag):
    """Calibration record status bits."""

    DATA_REJECTED = 1 << 0
    DATA_OUT_OF_RANGE = 1 << 1
    PROCESS_PENDING = 1 << 2


class OperandKind(Enum):
    """The operand an op code carries."""

    NONE = "none"
    UINT8 = "uint8"
    UINT16 = "uint16"
    SFLOAT = "sfloat"
    CALIBRATION = "calibration"
    RESULT = "result"

    @property
    def width(self) -> int:
        """Operand bytes on the wire."""
        return _WIDTH[self]


_WIDTH: Final = {
    OperandKind.NONE: 0,
    OperandKind.UINT8: 1,
    OperandKind.UINT16: 2,
    OperandKind.SFLOAT: 2,
    OperandKind.CALIBRATION: 10,
    OperandKind.RESULT: 2,
}


_ALERT_LEVELS = range(
    SocpOpCode.SET_PATIENT_HIGH_ALERT_LEVEL, SocpOpCode.RESET_DEVICE_SPECIFIC_ALERT
)
SOCP_OPERAND: Final[dict[SocpOpCode, OperandKind]] = (
    dict.fromkeys(SocpOpCode, OperandKind.NONE)
    | {
        SocpOpCode.SET_COMMUNICATION_INTERVAL: OperandKind.UINT8,
        SocpOpCode.COMMUNICATION_INTERVAL_RESPONSE: OperandKind.UINT8,
        SocpOpCode.SET_CALIBRATION_VALUE: OperandKind.CALIBRATION,
        SocpOpCode.GET_CALIBRATION_VALUE: OperandKind.UINT16,
        SocpOpCode.CALIBRATION_VALUE_RESPONSE: OperandKind.CALIBRATION,
        SocpOpCode.RESPONSE_CODE: OperandKind.RESULT,
    }
    | {
        SocpOpCode(op): OperandKind.SFLOAT
        for op in _ALERT_LEVELS
        if (op - SocpOpCode.SET_PATIENT_HIGH_ALERT_LEVEL) % 3 != 1  # not a "get"
    }
)

_CAL_OK: Final = CalibrationStatus(0)
CALIBRATION = cs.Struct(
    "glucose" / cs.Int16ul,
    "time" / cs.Int16ul,
    "type_location" / cs.Int8ul,
    "next_time" / cs.Int16ul,
    "record_number" / cs.Int16ul,
    "status" / cs.Int8ul,
)


RESULT = cs.Struct("request_opcode" / cs.Int8ul, "code" / cs.Int8ul)
#: The construct of each operand kind (an SFLOAT travels as its raw uint16 word).
OPERAND: Final[dict[OperandKind, cs.Construct[Any, Any]]] = {
    OperandKind.NONE: cs.Pass,
    OperandKind.UINT8: cs.Int8ul,
    OperandKind.UINT16: cs.Int16ul,
    OperandKind.SFLOAT: cs.Int16ul,
    OperandKind.CALIBRATION: CALIBRATION,
    OperandKind.RESULT: RESULT,
}


@dataclass(frozen=True, slots=True)
class CalibrationRecord:
    """Operand of set calibration value (0x04) and its response (0x06)."""

    glucose: SFloatValue  # mg/dL
    time: int  # minutes since session start
    sample_type: SampleType | int = SampleType.CAPILLARY_WHOLE_BLOOD
    sample_location: SampleLocation | int = SampleLocation.FINGER
    next_time: int = 0  # minutes since session start
    record_number: int = 0
    status: CalibrationStatus = _CAL_OK


@dataclass(frozen=True, slots=True)
class SocpResult:
    """Operand of response code 0x1C: which request, and how it went."""

    request_opcode: SocpOpCode | int
    code: SocpResponseCode | int

    @property
    def success(self) -> bool:
        """True for response value 0x01."""
        return self.code == SocpResponseCode.SUCCESS


SocpOperand = int | SFloat | SFloatSpecial | CalibrationRecord | SocpResult | None


def _what(opcode: SocpOpCode, kind: OperandKind) -> str:
    if kind == OperandKind.CALIBRATION:
        return "SOCP calibration record"
    return f"SOCP {opcode.name} operand"


def _bad(message: str, data: bytes, code: SocpResponseCode) -> ControlPointError:
    return ControlPointError(f"SOCP: {message}", data, response_code=code)


@dataclass(frozen=True, slots=True)
class SocpPacket:
    """One SOCP write or indication."""

    opcode: SocpOpCode
    operand: SocpOperand = None
    e2e_crc: bool = False

    @classmethod
    def parse(cls, data: bytes) -> SocpPacket:
        """Decode a write or an indication."""
        data = bytes(data)
        if not data:
            raise ProtocolError("SOCP: empty", data)
        try:
            opcode = SocpOpCode(data[0])
        except ValueError:
            raise _bad(
                f"op code 0x{data[0]:02x}", data, SocpResponseCode.OP_CODE_NOT_SUPPORTED
            ) from None
        kind = SOCP_OPERAND[opcode]
        if len(data) not in (1 + kind.width, 3 + kind.width):
            raise _bad(f"{opcode.name}: operand length", data, SocpResponseCode.INVALID_OPERAND)
        payload, crc = e2e_payload(data, 1 + kind.width, "SOCP")
        c = parse_construct(OPERAND[kind], payload[1:], _what(opcode, kind))
        operand: SocpOperand = None
        if kind in (OperandKind.UINT8, OperandKind.UINT16):
            operand = c
        elif kind == OperandKind.SFLOAT:
            operand = decode_sfloat(c)
        elif kind == OperandKind.RESULT:
            operand = SocpResult(
                enum_or_int(SocpOpCode, c.request_opcode), enum_or_int(SocpResponseCode, c.code)
            )
        elif kind == OperandKind.CALIBRATION:
            sample_type, location = split_type_location(c.type_location)
            operand = CalibrationRecord(
                decode_sfloat(c.glucose),
                c.time,
                sample_type,
                location,
                c.next_time,
                c.record_number,
                CalibrationStatus(c.status),
            )
        return cls(opcode, operand, crc)

    def build(self) -> bytes:
        """The bytes to write (or indicate)."""
        kind = SOCP_OPERAND[SocpOpCode(self.opcode)]
        op, fields = self.operand, cast(Any, None)
        if kind == OperandKind.NONE and op is None:
            pass
        elif kind in (OperandKind.UINT8, OperandKind.UINT16) and type(op) is int:
            if not 0 <= op < 1 << 8 * kind.width:
                raise ProtocolError(f"SOCP {self.opcode.name}: operand {op} out of range")
            fields = op
        elif kind == OperandKind.SFLOAT and isinstance(op, SFloat | SFloatSpecial):
            fields = encode_sfloat(op)
        elif kind == OperandKind.RESULT and isinstance(op, SocpResult):
            if not (0 <= op.request_opcode <= 0xFF and 0 <= op.code <= 0xFF):
                raise ProtocolError("SOCP response fields are single octets")
            fields = {"request_opcode": int(op.request_opcode), "code": int(op.code)}
        elif kind == OperandKind.CALIBRATION and isinstance(op, CalibrationRecord):
            fields = {
                "glucose": encode_sfloat(op.glucose),
                "time": op.time,
                "type_location": join_type_location(op.sample_type, op.sample_location),
                "next_time": op.next_time,
                "record_number": op.record_number,
                "status": int(op.status),
            }
        else:
            raise ProtocolError(f"SOCP {self.opcode.name} takes a {kind.name} operand, not {op!r}")
        value = build_construct(OPERAND[kind], fields, _what(self.opcode, kind))
        return with_e2e_crc(bytes((self.opcode,)) + value, self.e2e_crc)
