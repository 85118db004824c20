"""The receiver's commands as typed calls (zigpy-znp's "api" layer) over a `ReceiverLink`.

Every answer is checked against its request (an EGV page must be the page asked for), so a late
answer to an earlier request is never taken for the current one: it fails to parse and the
link sends the request again. An EGV page that is well framed but damaged in the receiver's
memory (its header CRC fails, or no record layout fits it) is returned as a `DamagedPage`: the
session decides how often to ask for it again (`DeviceContext.record_damaged`).
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.dexcom_receiver.link import ReceiverLink
from protocols.dexcom_receiver.commands import (
    expect_ack,
    parse_page_range,
    parse_system_time,
    parse_xml_attributes,
    ping,
    read_firmware_header,
    read_page_range,
    read_pages,
    read_system_time,
)
from protocols.dexcom_receiver.frames import Packet, RecordType
from protocols.dexcom_receiver.records import (
    EgvPage,
    PageHeader,
    XmlRecord,
    parse_egv_page,
    parse_xml_page,
)
from protocols.errors import CrcError, ProtocolError


@dataclass(frozen=True, slots=True)
class DamagedPage:
    """A well-framed answer holding a damaged EGV page: its payload and why it is damaged."""

    raw: bytes
    reason: str


class ReceiverApi:
    """PING, firmware header, manufacturing data, system time, page range, EGV pages."""

    def __init__(self, link: ReceiverLink) -> None:
        self.link = link

    async def ping(self) -> None:
        """PING: an empty ACK."""

        def parse(packet: Packet) -> None:
            expect_ack(packet, "ping")

        await self.link.request(ping(), "ping", parse)

    async def firmware_header(self) -> dict[str, str]:
        """READ_FIRMWARE_HEADER: ProductName, FirmwareVersion, ProductId, ... attributes."""

        def parse(packet: Packet) -> dict[str, str]:
            tag, attributes = parse_xml_attributes(expect_ack(packet, "firmware header"))
            if tag != "FirmwareHeader":
                raise ProtocolError(f"firmware header answer is <{tag}>")
            return attributes

        return await self.link.request(read_firmware_header(), "firmware header", parse)

    async def system_time(self) -> int:
        """READ_SYSTEM_TIME: receiver seconds since 2009-01-01 (UTC)."""

        def parse(packet: Packet) -> int:
            return parse_system_time(expect_ack(packet, "system time"))

        return await self.link.request(read_system_time(), "system time", parse)

    async def page_range(self, record_type: RecordType) -> tuple[int, int] | None:
        """READ_DATABASE_PAGE_RANGE: (first, last) page, inclusive; None when empty."""
        what = f"page range {record_type.name}"

        def parse(packet: Packet) -> tuple[int, int] | None:
            return parse_page_range(expect_ack(packet, what))

        return await self.link.request(read_page_range(record_type), what, parse)

    async def manufacturing_data(self) -> XmlRecord:
        """The MANUFACTURING_DATA record (`SerialNumber`, `HardwarePartNumber`, ...)."""
        pages = await self.page_range(RecordType.MANUFACTURING_DATA)
        if pages is None:
            raise ProtocolError("the receiver has no manufacturing data")
        what = "manufacturing data"

        def parse(packet: Packet) -> XmlRecord:
            payload = expect_ack(packet, what)
            return parse_xml_page(payload, RecordType.MANUFACTURING_DATA)

        request = read_pages(RecordType.MANUFACTURING_DATA, pages[0])
        return await self.link.request(request, what, parse)

    async def egv_page(self, number: int) -> EgvPage | DamagedPage:
        """READ_DATABASE_PAGES of one EGV page (records that fail their CRC are in `.bad`)."""
        what = f"EGV page {number}"

        def parse(packet: Packet) -> EgvPage | DamagedPage:
            payload = expect_ack(packet, what)
            try:
                header = PageHeader.parse(payload)
            except CrcError:
                return DamagedPage(payload, "egv_page_crc")
            if (header.record_type, header.page) != (RecordType.EGV_DATA, number):
                raise ProtocolError(f"{what}: the answer is page {header.page}")
            try:
                return parse_egv_page(payload)
            except ProtocolError:
                return DamagedPage(payload, "egv_page_records")

        return await self.link.request(read_pages(RecordType.EGV_DATA, number), what, parse)
