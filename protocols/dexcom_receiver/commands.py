"""Dexcom receiver commands: request builders and answer parsers (protocols.md §3.3).

Requests (framed bytes): `ping()`, `read_firmware_header()`, `read_database_partition_info()`,
`read_page_range(record_type)`, `read_pages(record_type, first_page, count)`,
`read_system_time()`. Answers: `expect_ack(packet, what)` (the payload of an ACK, else
`NakError` with `.code`), `parse_page_range` (first, last page u32 inclusive; None when
empty), `parse_system_time` (u32), `parse_xml_attributes` (ReadFirmwareHeader,
ReadDatabasePartitionInfo and MANUFACTURING_DATA records answer flat XML). Builders of the
answers (`build_page_range`, `build_u32`) and `parse_read_pages` serve emulators.

Time [H]: receiver seconds since 2009-01-01T00:00:00 (`EPOCH`). `system_time` is the receiver's
own clock and is UTC: a real MANUFACTURING_DATA record (blood-shepherd capture) has system_time
2013-01-03T21:54:05Z = its DateTimeCreated "13:54:05 -08:00", and display_time 8 h earlier
(display_time = system_time + the user's display offset, i.e. local wall time).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

import construct as cs

from protocols.codec import build_construct, parse_construct
from protocols.dexcom_receiver.frames import Command, NakError, Packet, build_packet
from protocols.errors import ProtocolError

EPOCH: Final = datetime(2009, 1, 1, tzinfo=UTC)
#: ReadDatabasePageRange answers this (first, last) for an empty partition [L].
EMPTY_PAGE: Final = 0xFFFFFFFF

_U32 = cs.Int32ul
_PAGE_RANGE = cs.Struct("first" / cs.Int32ul, "last" / cs.Int32ul)
_READ_PAGES = cs.Struct("record_type" / cs.Int8ul, "first" / cs.Int32ul, "count" / cs.Int8ul)


def ping() -> bytes:
    """PING (10): answered by an empty ACK."""
    return build_packet(Command.PING)


def read_firmware_header() -> bytes:
    """READ_FIRMWARE_HEADER (11): answered by `<FirmwareHeader ... />` XML."""
    return build_packet(Command.READ_FIRMWARE_HEADER)


def read_database_partition_info() -> bytes:
    """READ_DATABASE_PARTITION_INFO (15): answered by XML describing the partitions."""
    return build_packet(Command.READ_DATABASE_PARTITION_INFO)


def read_page_range(record_type: int) -> bytes:
    """READ_DATABASE_PAGE_RANGE (16) of a partition: answered by first, last page (u32, u32)."""
    return build_packet(Command.READ_DATABASE_PAGE_RANGE, bytes([record_type]))


def read_pages(record_type: int, first_page: int, count: int = 1) -> bytes:
    """READ_DATABASE_PAGES (17): record type u8, first page u32, page count u8."""
    value = {"record_type": record_type, "first": first_page, "count": count}
    return build_packet(Command.READ_DATABASE_PAGES, build_construct(_READ_PAGES, value, "pages"))


def parse_read_pages(payload: bytes) -> tuple[int, int, int]:
    """(record type, first page, count) of a READ_DATABASE_PAGES request payload."""
    if len(payload) != _READ_PAGES.sizeof():
        raise ProtocolError(f"read pages request of {len(payload)} bytes, expected 6", payload)
    value = parse_construct(_READ_PAGES, payload, "read pages request")
    return int(value.record_type), int(value.first), int(value.count)


def read_system_time() -> bytes:
    """READ_SYSTEM_TIME (34): answered by u32 seconds since `EPOCH`."""
    return build_packet(Command.READ_SYSTEM_TIME)


# -- answers ----------------------------------------------------------------------------------


def expect_ack(packet: Packet, what: str) -> bytes:
    """The payload of an ACK; `NakError` (with the code) for any other answer."""
    if packet.command == Command.ACK:
        return packet.payload
    try:
        name = Command(packet.command).name
    except ValueError:
        name = f"code {packet.command}"
    raise NakError(f"{what}: receiver answered {name}", packet.payload, code=packet.command)


def parse_page_range(payload: bytes) -> tuple[int, int] | None:
    """(first, last) page numbers, inclusive; None for an empty partition."""
    if len(payload) != _PAGE_RANGE.sizeof():
        raise ProtocolError(f"page range of {len(payload)} bytes, expected 8", payload)
    value = parse_construct(_PAGE_RANGE, payload, "page range")
    first, last = int(value.first), int(value.last)
    if EMPTY_PAGE in (first, last) or first > last:
        return None
    return first, last


def build_page_range(pages: tuple[int, int] | None) -> bytes:
    """The payload answering READ_DATABASE_PAGE_RANGE (None: an empty partition)."""
    first, last = pages if pages is not None else (EMPTY_PAGE, EMPTY_PAGE)
    return build_construct(_PAGE_RANGE, {"first": first, "last": last}, "page range")


def parse_system_time(payload: bytes) -> int:
    """Receiver seconds since `EPOCH` (u32) of a READ_SYSTEM_TIME answer."""
    if len(payload) != 4:
        raise ProtocolError(f"system time of {len(payload)} bytes, expected 4", payload)
    return int(parse_construct(_U32, payload, "system time"))


def build_u32(value: int) -> bytes:
    """A u32 payload (system time answers)."""
    return build_construct(_U32, value, "u32")


def receiver_time(seconds: int) -> datetime:
    """Aware UTC time of receiver `seconds` since 2009-01-01."""
    return EPOCH + timedelta(seconds=seconds)


def receiver_seconds(moment: datetime) -> int:
    """Whole receiver seconds since 2009-01-01 of an aware `moment` (floored)."""
    return int((moment - EPOCH) // timedelta(seconds=1))


_TAG = re.compile(r"\s*<\s*([A-Za-z_][\w.:-]*)")
_ATTRIBUTE = re.compile(r"""([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def parse_xml_attributes(payload: bytes) -> tuple[str, dict[str, str]]:
    """(element name, attributes) of the receiver's one-element XML answers.

    ReadFirmwareHeader answers e.g. ``<FirmwareHeader ... ProductName='Dexcom G4 Receiver'
    FirmwareVersion='2.0.1.104' .../>``; a MANUFACTURING_DATA record holds
    ``<ManufacturingParameters SerialNumber="sm30140752" .../>`` padded with NULs. Parsed with
    a pattern, not an XML library: the answers are flat, and no entity is ever expanded.
    """
    try:
        text = bytes(payload).split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"XML answer is not UTF-8: {exc}", bytes(payload)) from exc
    tag = _TAG.match(text)
    if tag is None:
        raise ProtocolError("XML answer has no element", bytes(payload))
    attributes = {m[1]: m[2] if m[3] is None else m[3] for m in _ATTRIBUTE.finditer(text)}
    return tag[1], attributes
