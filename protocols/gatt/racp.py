"""Record Access Control Point (RACP, 0x2A52), shared by CGMS (0x181F) and Glucose (0x1808).

Format (protocols.md §1.9): Op Code (1) | Operator (1) | Operand (variable); little-endian; no
E2E-CRC in any implementation read (§1.4, §8.3). Write, then the server indicates a response.

* Op codes (`RacpOpCode`): 0x01 report stored records, 0x02 delete stored records, 0x03 abort
  operation, 0x04 report number of stored records, 0x05 number of stored records response,
  0x06 response code.
* Operators (`RacpOperator`): 0x00 null, 0x01 all records, 0x02 ≤, 0x03 ≥, 0x04 within range
  (inclusive), 0x05 first record (oldest), 0x06 last record (newest).
* Filter type, first operand byte for ≤ / ≥ / range (`RacpFilter`): CGMS allows only 0x01 =
  time offset (uint16 minutes); GLS uses 0x01 = sequence number (uint16) and 0x02 = user facing
  time (7-byte Date Time).
* Responses: `05 00 <uint16 count>` (`RacpNumberOfRecords`; uint16 assumed for CGMS, §8.3) and
  `06 00 <request op code> <code>` (`RacpResponse`, codes in `RacpResponseCode`).

Public API: `RacpCommand(opcode, operator, filter_type, values)` with `.build()`;
`parse_racp(data) -> RacpCommand | RacpNumberOfRecords | RacpResponse`; `RacpNumberOfRecords`,
`RacpResponse` (both with `.build()`); builders `report_records`, `report_number_of_records`,
`delete_records`, `abort`. A request that is framed but invalid raises `ControlPointError` whose
`response_code` is the code a server answers it with (what the emulators send back).
VERIFIED bytes (§1.9): report all `01 01`; number of all `04 01`; time offset ≥ 1440
`01 03 01 a0 05`; range 1440..1500 `01 04 01 a0 05 dc 05`; last `01 06`; abort `03 00`;
288 records `05 00 20 01`; success `06 00 01 01`; no records `06 00 01 06`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import construct as cs

from protocols.codec import build_construct, enum_or_int, parse_construct
from protocols.errors import ControlPointError, ProtocolError
from protocols.gatt.date_time import DATE_TIME, DateTime
from protocols.gatt.uuids import uuid16

RECORD_ACCESS_CONTROL_POINT: Final = uuid16(0x2A52)


class RacpOpCode(IntEnum):
    """RACP op codes."""

    REPORT_STORED_RECORDS = 0x01
    DELETE_STORED_RECORDS = 0x02
    ABORT_OPERATION = 0x03
    REPORT_NUMBER_OF_STORED_RECORDS = 0x04
    NUMBER_OF_STORED_RECORDS_RESPONSE = 0x05
    RESPONSE_CODE = 0x06


class RacpOperator(IntEnum):
    """RACP operators."""

    NULL = 0x00
    ALL_RECORDS = 0x01
    LESS_THAN_OR_EQUAL = 0x02
    GREATER_THAN_OR_EQUAL = 0x03
    WITHIN_RANGE = 0x04
    FIRST_RECORD = 0x05
    LAST_RECORD = 0x06


class RacpFilter(IntEnum):
    """Filter types (first operand byte of ≤ / ≥ / range); 0x01 means time offset in CGMS."""

    TIME_OFFSET = 0x01
    SEQUENCE_NUMBER = 0x01  # the GLS name of the same byte
    USER_FACING_TIME = 0x02


class RacpResponseCode(IntEnum):
    """Response code values (`06 00 <op> <code>`)."""

    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_OPERATOR = 0x03
    OPERATOR_NOT_SUPPORTED = 0x04
    INVALID_OPERAND = 0x05
    NO_RECORDS_FOUND = 0x06
    ABORT_UNSUCCESSFUL = 0x07
    PROCEDURE_NOT_COMPLETED = 0x08
    OPERAND_NOT_SUPPORTED = 0x09


_FILTERED = frozenset(
    {RacpOperator.LESS_THAN_OR_EQUAL, RacpOperator.GREATER_THAN_OR_EQUAL, RacpOperator.WITHIN_RANGE}
)
_RECORD_OPS = frozenset(
    {
        RacpOpCode.REPORT_STORED_RECORDS,
        RacpOpCode.DELETE_STORED_RECORDS,
        RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS,
    }
)
#: Operand width of one filter value per filter type.
_FILTER_WIDTH: Final = {RacpFilter.TIME_OFFSET: 2, RacpFilter.USER_FACING_TIME: 7}

FilterValue = int | DateTime

#: Every RACP packet: op code, operator, then an operand that depends on both.
PACKET = cs.Struct("opcode" / cs.Int8ul, "operator" / cs.Int8ul, "operand" / cs.GreedyBytes)
#: The operand of ≤ / ≥ / range: the filter type, then one or two values of its layout.
FILTER_VALUE: Final[dict[RacpFilter, cs.Construct[Any, Any]]] = {
    RacpFilter.TIME_OFFSET: cs.Int16ul,
    RacpFilter.USER_FACING_TIME: DATE_TIME,
}
#: `05 00 <uint16 count>`: number of stored records response.
NUMBER_OF_RECORDS = cs.Struct(
    "opcode" / cs.Const(RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, cs.Int8ul),
    "operator" / cs.Const(RacpOperator.NULL, cs.Int8ul),
    "count" / cs.Int16ul,
)
#: `06 00 <request op code> <response code>`: response code.
RESPONSE = cs.Struct(
    "opcode" / cs.Const(RacpOpCode.RESPONSE_CODE, cs.Int8ul),
    "operator" / cs.Const(RacpOperator.NULL, cs.Int8ul),
    "request_opcode" / cs.Int8ul,
    "code" / cs.Int8ul,
)


@dataclass(frozen=True, slots=True)
class RacpCommand:
    """A RACP request (op codes 0x01-0x04).

    `values` is () for all/first/last/abort, (bound,) for ≤ / ≥, (low, high) for a range; ints
    for filter 0x01 (time offset or sequence number), `DateTime` for filter 0x02.
    """

    opcode: RacpOpCode
    operator: RacpOperator = RacpOperator.ALL_RECORDS
    filter_type: RacpFilter | None = None
    values: tuple[FilterValue, ...] = ()

    def build(self) -> bytes:
        """The bytes to write to 0x2A52 (validated as `parse_racp` would)."""
        operand = bytearray()
        if self.filter_type is not None:
            operand.append(self.filter_type)
            for value in self.values:
                if isinstance(value, DateTime):
                    operand += build_construct(DATE_TIME, value.as_dict(), "RACP filter time")
                elif 0 <= value <= 0xFFFF:
                    operand += build_construct(cs.Int16ul, value, "RACP filter value")
                else:
                    raise ProtocolError(f"RACP filter value {value} does not fit uint16")
        fields = {"opcode": self.opcode, "operator": self.operator, "operand": bytes(operand)}
        data = build_construct(PACKET, fields, "RACP request")
        _parse_command(data)  # never emit a request the format forbids
        return data


@dataclass(frozen=True, slots=True)
class RacpNumberOfRecords:
    """Response `05 00 <uint16 count>` to "report number of stored records"."""

    count: int

    def build(self) -> bytes:
        """The indication bytes."""
        if not 0 <= self.count <= 0xFFFF:
            raise ProtocolError(f"record count {self.count} does not fit uint16")
        return build_construct(NUMBER_OF_RECORDS, {"count": self.count}, "RACP record count")


@dataclass(frozen=True, slots=True)
class RacpResponse:
    """Response `06 00 <request op code> <response code>`; the procedure has ended."""

    request_opcode: RacpOpCode | int
    code: RacpResponseCode | int

    @property
    def success(self) -> bool:
        """True for "success" (records were sent / deleted / aborted)."""
        return self.code == RacpResponseCode.SUCCESS

    def build(self) -> bytes:
        """The indication bytes."""
        if not (0 <= self.request_opcode <= 0xFF and 0 <= self.code <= 0xFF):
            raise ProtocolError("RACP response fields are single octets")
        fields = {"request_opcode": int(self.request_opcode), "code": int(self.code)}
        return build_construct(RESPONSE, fields, "RACP response")


RacpMessage = RacpCommand | RacpNumberOfRecords | RacpResponse


def _invalid(message: str, data: bytes, code: RacpResponseCode) -> ControlPointError:
    return ControlPointError(f"RACP: {message}", data, response_code=code)


def _parse_command(data: bytes) -> RacpCommand:
    packet = parse_construct(PACKET, data, "RACP request")
    opcode = RacpOpCode(packet.opcode)
    if opcode not in _RECORD_OPS and opcode != RacpOpCode.ABORT_OPERATION:
        raise _invalid(
            f"{opcode.name} is not a request", data, RacpResponseCode.OP_CODE_NOT_SUPPORTED
        )
    operator_byte, operand = packet.operator, packet.operand
    if operator_byte > max(RacpOperator):
        raise _invalid(
            f"operator 0x{operator_byte:02x} unknown", data, RacpResponseCode.INVALID_OPERATOR
        )
    operator = RacpOperator(operator_byte)
    if (operator == RacpOperator.NULL) != (opcode == RacpOpCode.ABORT_OPERATION):
        # abort takes exactly the null operator; every other request a real one
        raise _invalid(
            f"{operator.name} with {opcode.name}", data, RacpResponseCode.INVALID_OPERATOR
        )
    if operator not in _FILTERED:
        if operand:
            raise _invalid(
                f"{operator.name} takes no operand", data, RacpResponseCode.INVALID_OPERAND
            )
        return RacpCommand(opcode, operator)
    if not operand:
        raise _invalid(f"{operator.name} needs a filter", data, RacpResponseCode.INVALID_OPERAND)
    try:
        filter_type = RacpFilter(operand[0])
    except ValueError:
        code = RacpResponseCode.OPERAND_NOT_SUPPORTED
        raise _invalid(f"filter type 0x{operand[0]:02x}", data, code) from None
    width = _FILTER_WIDTH[filter_type]
    count = 2 if operator == RacpOperator.WITHIN_RANGE else 1
    if len(operand) != 1 + width * count:
        raise _invalid("operand length", data, RacpResponseCode.INVALID_OPERAND)
    parsed = parse_construct(
        cs.Array(count, FILTER_VALUE[filter_type]), operand[1:], "RACP filter operand"
    )
    values: tuple[FilterValue, ...]
    if filter_type == RacpFilter.TIME_OFFSET:
        ints = tuple(parsed)
        if count == 2 and ints[0] > ints[1]:
            raise _invalid("range low > high", data, RacpResponseCode.INVALID_OPERAND)
        values = ints
    else:
        values = tuple(DateTime.from_container(c) for c in parsed)
    return RacpCommand(opcode, operator, filter_type, values)


def parse_racp(data: bytes) -> RacpMessage:
    """Any RACP packet (request or response); `ProtocolError` / `ControlPointError` if invalid."""
    data = bytes(data)
    if len(data) < 2:
        raise ProtocolError("RACP: shorter than op code + operator", data)
    opcode = enum_or_int(RacpOpCode, data[0])
    if opcode == RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        if len(data) != 4 or data[1] != 0:
            raise ProtocolError("RACP: malformed number-of-records response", data)
        return RacpNumberOfRecords(parse_construct(NUMBER_OF_RECORDS, data, "RACP").count)
    if opcode == RacpOpCode.RESPONSE_CODE:
        if len(data) != 4 or data[1] != 0:
            raise ProtocolError("RACP: malformed response code", data)
        c = parse_construct(RESPONSE, data, "RACP")
        return RacpResponse(
            enum_or_int(RacpOpCode, c.request_opcode), enum_or_int(RacpResponseCode, c.code)
        )
    if not isinstance(opcode, RacpOpCode):
        raise _invalid(f"op code 0x{data[0]:02x}", data, RacpResponseCode.OP_CODE_NOT_SUPPORTED)
    return _parse_command(data)


def _command(
    opcode: RacpOpCode, operator: RacpOperator, values: tuple[FilterValue, ...]
) -> RacpCommand:
    filtered = operator in _FILTERED
    filter_type = None
    if filtered:
        is_time = isinstance(values[0], DateTime) if values else False
        filter_type = RacpFilter.USER_FACING_TIME if is_time else RacpFilter.TIME_OFFSET
    return RacpCommand(opcode, operator, filter_type, values if filtered else ())


def report_records(
    operator: RacpOperator = RacpOperator.ALL_RECORDS, *values: FilterValue
) -> RacpCommand:
    """ "Report stored records" (`01 ..`): e.g. `report_records(GREATER_THAN_OR_EQUAL, 1440)`."""
    return _command(RacpOpCode.REPORT_STORED_RECORDS, operator, values)


def report_number_of_records(
    operator: RacpOperator = RacpOperator.ALL_RECORDS, *values: FilterValue
) -> RacpCommand:
    """ "Report number of stored records" (`04 ..`)."""
    return _command(RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS, operator, values)


def delete_records(
    operator: RacpOperator = RacpOperator.ALL_RECORDS, *values: FilterValue
) -> RacpCommand:
    """ "Delete stored records" (`02 ..`)."""
    return _command(RacpOpCode.DELETE_STORED_RECORDS, operator, values)


def abort() -> RacpCommand:
    """ "Abort operation" (`03 00`)."""
    return RacpCommand(RacpOpCode.ABORT_OPERATION, RacpOperator.NULL)
