"""protocols.gatt.racp: the VERIFIED byte strings of §1.9 and the codes a server answers."""

from __future__ import annotations

import pytest

from protocols.errors import ControlPointError, ProtocolError
from protocols.gatt.date_time import DateTime
from protocols.gatt.racp import (
    RacpCommand,
    RacpFilter,
    RacpNumberOfRecords,
    RacpOpCode,
    RacpOperator,
    RacpResponse,
    RacpResponseCode,
    abort,
    delete_records,
    parse_racp,
    report_number_of_records,
    report_records,
)

GE = RacpOperator.GREATER_THAN_OR_EQUAL
VERIFIED = [
    ("01 01", report_records()),
    ("04 01", report_number_of_records()),
    ("01 03 01 a0 05", report_records(GE, 1440)),
    ("01 04 01 a0 05 dc 05", report_records(RacpOperator.WITHIN_RANGE, 1440, 1500)),
    ("01 06", report_records(RacpOperator.LAST_RECORD)),
    ("03 00", abort()),
    ("05 00 20 01", RacpNumberOfRecords(288)),
    ("06 00 01 01", RacpResponse(RacpOpCode.REPORT_STORED_RECORDS, RacpResponseCode.SUCCESS)),
    (
        "06 00 01 06",
        RacpResponse(RacpOpCode.REPORT_STORED_RECORDS, RacpResponseCode.NO_RECORDS_FOUND),
    ),
]


@pytest.mark.parametrize(("hex_bytes", "message"), VERIFIED)
def test_verified_vectors(hex_bytes: str, message: object) -> None:
    data = bytes.fromhex(hex_bytes)
    assert parse_racp(data) == message
    assert message.build() == data  # type: ignore[attr-defined]


def test_fields_of_a_filtered_request() -> None:
    command = parse_racp(bytes.fromhex("01 03 01 a0 05"))
    assert isinstance(command, RacpCommand)
    assert command.opcode == RacpOpCode.REPORT_STORED_RECORDS
    assert command.operator == GE
    assert command.filter_type == RacpFilter.TIME_OFFSET == RacpFilter.SEQUENCE_NUMBER
    assert command.values == (1440,)
    assert delete_records().build() == bytes.fromhex("02 01")


def test_user_facing_time_filter_of_gls() -> None:
    when = DateTime(2024, 5, 2, 7, 30, 0)
    command = report_records(GE, when)
    data = command.build()
    assert data == bytes.fromhex("01 03 02 e8 07 05 02 07 1e 00")
    assert parse_racp(data) == command


@pytest.mark.parametrize(
    ("hex_bytes", "code"),
    [
        ("07 01", RacpResponseCode.OP_CODE_NOT_SUPPORTED),
        ("01 00", RacpResponseCode.INVALID_OPERATOR),
        ("01 07", RacpResponseCode.INVALID_OPERATOR),
        ("03 01", RacpResponseCode.INVALID_OPERATOR),
        ("03 00 01", RacpResponseCode.INVALID_OPERAND),
        ("01 01 01", RacpResponseCode.INVALID_OPERAND),
        ("01 03", RacpResponseCode.INVALID_OPERAND),
        ("01 03 01 a0", RacpResponseCode.INVALID_OPERAND),
        ("01 04 01 dc 05 a0 05", RacpResponseCode.INVALID_OPERAND),
        ("01 03 05 a0 05", RacpResponseCode.OPERAND_NOT_SUPPORTED),
    ],
)
def test_invalid_requests_name_the_server_response(hex_bytes: str, code: RacpResponseCode) -> None:
    with pytest.raises(ControlPointError) as info:
        parse_racp(bytes.fromhex(hex_bytes))
    assert info.value.response_code == code


@pytest.mark.parametrize(
    "hex_bytes", ["", "01", "05 00 01", "06 00 01", "06 01 01 01", "05 01 01 00"]
)
def test_malformed_packets(hex_bytes: str) -> None:
    with pytest.raises(ProtocolError):
        parse_racp(bytes.fromhex(hex_bytes))


def test_builders_refuse_what_the_parser_refuses() -> None:
    with pytest.raises(ProtocolError):
        report_records(GE, 70000).build()
    with pytest.raises(ProtocolError):
        report_records(GE).build()
    with pytest.raises(ProtocolError):
        RacpNumberOfRecords(1 << 16).build()
    with pytest.raises(ProtocolError):
        RacpCommand(RacpOpCode.RESPONSE_CODE).build()
    assert RacpResponse(0x01, 0x99).success is False
    assert parse_racp(bytes.fromhex("06 00 09 99")) == RacpResponse(9, 0x99)
