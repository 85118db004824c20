"""Every verified vector of protocols.md §3 (and Appendix A), plus real receiver captures.

Round trips both ways: the codec builds exactly the verified bytes, and parses them back.
The captures in data/ are a real G4 receiver's answers (blood-shepherd's test fixtures).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.dexcom_receiver.session import TREND_DIRECTION
from gatewayd.models import Direction
from protocols.crc import crc16_xmodem
from protocols.dexcom_receiver.commands import (
    EPOCH,
    build_page_range,
    expect_ack,
    parse_page_range,
    parse_read_pages,
    parse_xml_attributes,
    ping,
    read_firmware_header,
    read_page_range,
    read_pages,
    read_system_time,
    receiver_seconds,
    receiver_time,
)
from protocols.dexcom_receiver.frames import Command, NakError, Packet, RecordType, parse_packet
from protocols.dexcom_receiver.records import (
    EGV_LAYOUTS,
    HEADER_SIZE,
    PAGE_SIZE,
    EgvRecord,
    PageHeader,
    TrendArrow,
    build_page,
    build_xml_record,
    parse_egv_page,
    parse_xml_page,
)
from protocols.errors import CrcError, ProtocolError

DATA = Path(__file__).parent / "data"


def capture(name: str) -> bytes:
    lines = (DATA / name).read_text().splitlines()
    return bytes.fromhex("".join(line for line in lines if not line.startswith("#")))


@pytest.mark.parametrize(
    ("built", "hex_", "command", "payload"),
    [
        (ping(), "0106000a5e65", Command.PING, b""),
        (read_firmware_header(), "0106000b7f75", Command.READ_FIRMWARE_HEADER, b""),
        (
            read_page_range(RecordType.EGV_DATA),
            "01070010048bb8",
            Command.READ_DATABASE_PAGE_RANGE,
            b"\x04",
        ),
        (
            read_pages(RecordType.EGV_DATA, 500, 1),
            "010c001104f4010000012b83",
            Command.READ_DATABASE_PAGES,
            bytes.fromhex("04f401000001"),
        ),
        (read_system_time(), "0106002234c0", Command.READ_SYSTEM_TIME, b""),
    ],
)
def test_verified_request_packets(
    built: bytes, hex_: str, command: Command, payload: bytes
) -> None:
    assert built.hex() == hex_
    assert parse_packet(bytes.fromhex(hex_)) == Packet(command, payload)
    assert Packet(command, payload).build() == built


def test_read_pages_request_round_trip() -> None:
    packet = parse_packet(read_pages(RecordType.EGV_DATA, 500, 1))
    assert parse_read_pages(packet.payload) == (RecordType.EGV_DATA, 500, 1)


def test_crc_is_xmodem() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3


def test_verified_g4_egv_record() -> None:
    raw = bytes.fromhex("0017561af008561a78001476d8")
    record = EgvRecord.parse(raw)
    assert receiver_time(record.system_time) == datetime(2023, 1, 2, tzinfo=UTC)
    assert receiver_time(record.display_time) == datetime(2023, 1, 1, 23, tzinfo=UTC)
    assert (record.value, record.glucose_mgdl, record.out_of_range) == (120, 120, None)
    assert record.trend == TrendArrow.FLAT
    assert record.noise == 1
    assert not record.display_only
    assert record.special is None
    assert record.build() == raw
    with pytest.raises(CrcError):
        EgvRecord.parse(raw[:-1] + b"\x00")


def test_epoch_is_2009_utc() -> None:
    assert datetime(2009, 1, 1, tzinfo=UTC) == EPOCH
    assert receiver_time(0) == EPOCH
    assert receiver_seconds(EPOCH + timedelta(seconds=441849600.9)) == 441849600


def test_page_header_layout_and_crc() -> None:
    header = PageHeader(first_index=38, count=2, record_type=4, revision=2, page=1)
    raw = header.build()
    assert len(raw) == HEADER_SIZE == 28
    assert raw[:26] == bytes.fromhex("2600000002000000040201000000") + bytes(12)
    assert int.from_bytes(raw[26:], "little") == crc16_xmodem(raw[:26])
    assert PageHeader.parse(raw) == header
    with pytest.raises(CrcError):
        PageHeader.parse(raw[:26] + b"\x00\x00")


def test_egv_page_with_records_of_each_generation() -> None:
    for size, revision in ((13, 2), (23, 3), (25, 5)):
        before, after = EGV_LAYOUTS[size]
        records = [
            EgvRecord(441849600 + 300 * i, 441846000 + 300 * i, 100 + i, 0x14, *_extra(size))
            for i in range(3)
        ]
        assert all(len(r.build()) == size for r in records)
        header = PageHeader(76, 3, RecordType.EGV_DATA, revision, 2)
        page = parse_egv_page(build_page(header, b"".join(r.build() for r in records)))
        assert (page.header, page.records, page.bad, page.record_size) == (
            header,
            tuple(records),
            (),
            size,
        )
        assert (before, after) == (len(records[0].before), len(records[0].after))


def _extra(size: int) -> tuple[bytes, bytes]:
    before, after = EGV_LAYOUTS[size]
    return bytes(range(1, before + 1)), bytes(range(after))


def test_egv_page_reports_a_bad_record_and_keeps_the_others() -> None:
    records = [EgvRecord(1000 + 300 * i, 1000 + 300 * i, 150, 0x14).build() for i in range(4)]
    records[2] = records[2][:-1] + bytes([records[2][-1] ^ 1])
    page = parse_egv_page(build_page(PageHeader(0, 4, 4, 2, 0), b"".join(records)))
    assert [r.system_time for r in page.records] == [1000, 1300, 1900]
    assert page.bad == ((2, records[2]),)
    assert page.indices == (0, 1, 3)


def test_egv_page_of_another_partition_is_refused() -> None:
    with pytest.raises(ProtocolError):
        parse_egv_page(build_page(PageHeader(0, 0, RecordType.METER_DATA, 1, 0), b""))


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0, "none"),
        (1, "sensor_not_active"),
        (2, "minimal_deviation"),
        (3, "no_antenna"),
        (5, "sensor_not_calibrated"),
        (6, "counts_deviation"),
        (9, "absolute_deviation"),
        (10, "power_deviation"),
        (12, "bad_rf"),
        (4, "special_4"),
    ],
)
def test_special_glucose_values_are_statuses_not_glucose(code: int, name: str) -> None:
    record = EgvRecord(0, 0, code, 0x14)
    assert record.special == name
    assert record.glucose_mgdl is None
    assert record.out_of_range is None


@pytest.mark.parametrize(
    ("raw", "glucose", "out_of_range"),
    [(13, None, "low"), (39, None, "low"), (40, 40, None), (400, 400, None), (401, None, "high")],
)
def test_low_and_high(raw: int, glucose: int | None, out_of_range: str | None) -> None:
    record = EgvRecord(0, 0, raw, 0x14)
    assert (record.glucose_mgdl, record.out_of_range, record.special) == (
        glucose,
        out_of_range,
        None,
    )


def test_display_only_bit_and_noise_bits() -> None:
    record = EgvRecord(0, 0, 0x8000 | 123, 0x35)
    assert (record.value, record.display_only, record.trend, record.noise) == (123, True, 5, 3)


def test_trend_codes_are_nightscouts_numeric_trend() -> None:
    names = [
        Direction.NONE,
        Direction.DOUBLE_UP,
        Direction.SINGLE_UP,
        Direction.FORTY_FIVE_UP,
        Direction.FLAT,
        Direction.FORTY_FIVE_DOWN,
        Direction.SINGLE_DOWN,
        Direction.DOUBLE_DOWN,
        Direction.NOT_COMPUTABLE,
        Direction.RATE_OUT_OF_RANGE,
    ]
    assert [TREND_DIRECTION[code] for code in range(10)] == names
    assert [a.value for a in TrendArrow] == list(range(10))


def test_real_firmware_header_answer() -> None:
    packet = parse_packet(capture("G4Receiver_2.0.1.104_firmware_header.hex"))
    tag, attributes = parse_xml_attributes(expect_ack(packet, "firmware header"))
    assert tag == "FirmwareHeader"
    assert attributes["ProductName"] == "Dexcom G4 Receiver"
    assert attributes["ProductId"] == "G4Receiver"
    assert attributes["FirmwareVersion"] == "2.0.1.104"


def test_real_page_range_answer() -> None:
    packet = parse_packet(capture("G4Receiver_2.0.1.104_page_range.hex"))
    assert parse_page_range(expect_ack(packet, "range")) == (1, 2)
    assert build_page_range((1, 2)) == packet.payload


def test_real_manufacturing_page_gives_the_serial_and_a_utc_system_time() -> None:
    raw = capture("G4Receiver_2.0.1.104_manufacturing_page.hex")
    packet = parse_packet(raw)
    assert len(raw) == 534
    assert len(packet.payload) == PAGE_SIZE == 528
    header = PageHeader.parse(packet.payload)
    assert header == PageHeader(0, 1, RecordType.MANUFACTURING_DATA, 1, 0)
    record = parse_xml_page(packet.payload, RecordType.MANUFACTURING_DATA)
    assert record.tag == "ManufacturingParameters"
    assert record.attributes["SerialNumber"] == "sm30140752"
    # DateTimeCreated "2013-01-03 13:54:05.536 -08:00": system_time is UTC, display_time local.
    assert receiver_time(record.system_time) == datetime(2013, 1, 3, 21, 54, 5, tzinfo=UTC)
    assert record.system_time - record.display_time == 8 * 3600
    rebuilt = build_xml_record(record.system_time, record.display_time, _xml_text(packet.payload))
    assert rebuilt == packet.payload[28:]


def _xml_text(payload: bytes) -> str:
    return payload[36:526].split(b"\0", 1)[0].decode()


def test_answers_other_than_ack_raise_with_their_code() -> None:
    with pytest.raises(NakError) as caught:
        expect_ack(Packet(Command.INVALID_PARAM), "pages")
    assert caught.value.code == Command.INVALID_PARAM
    assert "INVALID_PARAM" in str(caught.value)


def test_empty_partition_page_range() -> None:
    assert parse_page_range(build_page_range(None)) is None
