"""Dexcom receiver database pages and records: page header, EGV records, XML records (§3.4).

A READ_DATABASE_PAGES answer holds whole pages: a 28-byte header (`<2IcB4IH`: first record
index u32, record count u32, record type u8, revision u8, page number u32, 3 x u32 reserved,
CRC-16/XMODEM over the first 26 bytes) then `count` back-to-back records, each ending in its own
XMODEM CRC over the record minus 2 [H]. A page is 528 bytes (a real MANUFACTURING_DATA page:
28 + one 500-byte record; three pages fill the 1584-byte maximum payload) [M]; the unused tail
of the newest page is padding (0xFF assumed by the emulator [L]).

EGV records [H layout]: G4 13 bytes `<2IHcH` (system_time u32, display_time u32, glucose u16,
trend/noise u8, CRC); G5 23 and G6 25 bytes with 9 undecoded bytes after the glucose, the
trend/noise byte at offset 19, then 1 (G5) or 3 (G6) undecoded bytes. protocols.md gives page
revision > 4 as the 25-byte layout [M]; the exact G5 threshold is open (§8.6), so
`parse_egv_page` picks the layout under which the most records pass their CRC (a wrong size
fails the CRC with probability 1 - 2^-16 per record), trying the revision's likely size first.

Glucose u16: bits 0-9 value (mask 1023), bit 15 display-only (a value shown on the receiver but
not part of the 5-minute series: calibration or not-calibrated periods, per DexcTrack [M]).
Values below 13 are status codes, not glucose (`SpecialGlucose`, §3.4 [H]). The receiver
measures 40-400 mg/dL and shows LOW / HIGH outside it; values 13-39 are read as below range
(LOW is stored as 39 [L]) and values above 400 as above range (HIGH is 401 [L]).
Trend/noise u8: bits 0-3 `TrendArrow` (0-9, identical to Nightscout's numeric trend) [H];
bits 4-6 noise ((b & 0x70) >> 4) [H]. VERIFIED synthetic G4 EGV:
`00 17 56 1a f0 08 56 1a 78 00 14 76 d8` -> system 2023-01-02T00:00:00, display 23:00 the day
before, 120 mg/dL, trend FLAT, noise 1.

XML records (MANUFACTURING_DATA, PC_SOFTWARE_PARAMETER): `<II490sH` - system_time,
display_time, 490 bytes of NUL-padded XML, CRC (openaps/dexcom_reader `GenericXMLRecord`) [H].
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import Any, Final, Literal

import construct as cs

from protocols.codec import build_construct, parse_construct
from protocols.crc import append_xmodem_crc, split_xmodem_crc, xmodem_crc_ok
from protocols.dexcom_receiver.commands import parse_xml_attributes
from protocols.dexcom_receiver.frames import RecordType
from protocols.errors import ProtocolError

PAGE_SIZE: Final = 528
HEADER_SIZE: Final = 28
XML_RECORD_SIZE: Final = 500
#: Bytes (before, after) the trend byte that G5 / G6 records carry undecoded, by record size.
EGV_LAYOUTS: Final = {13: (0, 0), 23: (9, 1), 25: (9, 3)}
VALUE_MASK: Final = 0x03FF
DISPLAY_ONLY: Final = 0x8000
#: Glucose values below this are status codes (`SpecialGlucose`), not readings.
SPECIAL_LIMIT: Final = 13
#: The receiver's measurable range, mg/dL (LOW below, HIGH above).
LOW_LIMIT: Final = 40
HIGH_LIMIT: Final = 400


class TrendArrow(IntEnum):
    """Trend arrow of an EGV record (bits 0-3); Nightscout's numeric trend uses the same."""

    NONE = 0
    DOUBLE_UP = 1
    SINGLE_UP = 2
    FORTY_FIVE_UP = 3
    FLAT = 4
    FORTY_FIVE_DOWN = 5
    SINGLE_DOWN = 6
    DOUBLE_DOWN = 7
    NOT_COMPUTABLE = 8
    RATE_OUT_OF_RANGE = 9


class SpecialGlucose(IntEnum):
    """EGV glucose values below 13: the receiver's status instead of a number [H]."""

    NONE = 0
    SENSOR_NOT_ACTIVE = 1
    MINIMAL_DEVIATION = 2
    NO_ANTENNA = 3
    SENSOR_NOT_CALIBRATED = 5
    COUNTS_DEVIATION = 6
    ABSOLUTE_DEVIATION = 9
    POWER_DEVIATION = 10
    BAD_RF = 12


_HEADER = cs.Struct(
    "first_index" / cs.Int32ul,
    "count" / cs.Int32ul,
    "record_type" / cs.Int8ul,
    "revision" / cs.Int8ul,
    "page" / cs.Int32ul,
    "reserved" / cs.Array(3, cs.Int32ul),
)
_XML = cs.Struct("system_time" / cs.Int32ul, "display_time" / cs.Int32ul, "xml" / cs.Bytes(490))


@cache
def _egv_struct(size: int) -> cs.Construct[Any, Any]:
    before, after = EGV_LAYOUTS[size]
    return cs.Struct(
        "system_time" / cs.Int32ul,
        "display_time" / cs.Int32ul,
        "glucose_raw" / cs.Int16ul,
        "before" / cs.Bytes(before),
        "trend_noise" / cs.Int8ul,
        "after" / cs.Bytes(after),
    )


@dataclass(frozen=True, slots=True)
class PageHeader:
    """The 28-byte header of a database page."""

    first_index: int
    count: int
    record_type: int
    revision: int
    page: int
    reserved: tuple[int, int, int] = (0, 0, 0)

    def build(self) -> bytes:
        """The header with its CRC."""
        value = {
            "first_index": self.first_index,
            "count": self.count,
            "record_type": self.record_type,
            "revision": self.revision,
            "page": self.page,
            "reserved": list(self.reserved),
        }
        return append_xmodem_crc(build_construct(_HEADER, value, "page header"))

    @classmethod
    def parse(cls, data: bytes) -> PageHeader:
        """The header at the start of `data` (its CRC checked: `CrcError`)."""
        raw = bytes(data[:HEADER_SIZE])
        if len(raw) < HEADER_SIZE:
            raise ProtocolError(f"page of {len(data)} bytes is shorter than its header", raw)
        v = parse_construct(_HEADER, split_xmodem_crc(raw, "page header"), "page header")
        reserved = (int(v.reserved[0]), int(v.reserved[1]), int(v.reserved[2]))
        return cls(v.first_index, v.count, v.record_type, v.revision, v.page, reserved)


def build_page(header: PageHeader, records: bytes, size: int = PAGE_SIZE) -> bytes:
    """A page: header, records, then 0xFF padding up to `size`."""
    body = header.build() + records
    return body + b"\xff" * (size - len(body))


@dataclass(frozen=True, slots=True)
class EgvRecord:
    """One EGV record; `before` / `after` are the undecoded G5/G6 bytes around the trend."""

    system_time: int
    display_time: int
    glucose_raw: int
    trend_noise: int
    before: bytes = b""
    after: bytes = b""

    @property
    def value(self) -> int:
        """The 10-bit glucose field (mg/dL, or a status code below 13)."""
        return self.glucose_raw & VALUE_MASK

    @property
    def display_only(self) -> bool:
        """Bit 15: shown on the receiver, not part of the 5-minute series."""
        return bool(self.glucose_raw & DISPLAY_ONLY)

    @property
    def trend(self) -> int:
        """Bits 0-3 of the trend/noise byte (`TrendArrow` for 0-9)."""
        return self.trend_noise & 0x0F

    @property
    def noise(self) -> int:
        """Bits 4-6 of the trend/noise byte."""
        return (self.trend_noise & 0x70) >> 4

    @property
    def special(self) -> str | None:
        """The status a value below 13 stands for (snake_case), None for glucose values."""
        if self.value >= SPECIAL_LIMIT:
            return None
        try:
            return SpecialGlucose(self.value).name.lower()
        except ValueError:
            return f"special_{self.value}"

    @property
    def out_of_range(self) -> Literal["low", "high"] | None:
        """Below (13-39: LOW) or above (> 400: HIGH) the measurable range; else None."""
        if SPECIAL_LIMIT <= self.value < LOW_LIMIT:
            return "low"
        return "high" if self.value > HIGH_LIMIT else None

    @property
    def glucose_mgdl(self) -> int | None:
        """mg/dL within the measurable range, else None (special or out of range)."""
        return self.value if LOW_LIMIT <= self.value <= HIGH_LIMIT else None

    def build(self) -> bytes:
        """The record with its CRC (13, 23 or 25 bytes by the G5/G6 fields)."""
        size = 13 + len(self.before) + len(self.after)
        if EGV_LAYOUTS.get(size) != (len(self.before), len(self.after)):
            raise ProtocolError(f"EGV extra fields of {len(self.before)}+{len(self.after)} bytes")
        value = {
            "system_time": self.system_time,
            "display_time": self.display_time,
            "glucose_raw": self.glucose_raw,
            "before": self.before,
            "trend_noise": self.trend_noise,
            "after": self.after,
        }
        return append_xmodem_crc(build_construct(_egv_struct(size), value, "EGV record"))

    @classmethod
    def parse(cls, data: bytes) -> EgvRecord:
        """One record of 13, 23 or 25 bytes (its CRC checked: `CrcError`)."""
        raw = bytes(data)
        if len(raw) not in EGV_LAYOUTS:
            raise ProtocolError(f"EGV record of {len(raw)} bytes, expected 13, 23 or 25", raw)
        v = parse_construct(
            _egv_struct(len(raw)), split_xmodem_crc(raw, "EGV record"), "EGV record"
        )
        return cls(v.system_time, v.display_time, v.glucose_raw, v.trend_noise, v.before, v.after)


@dataclass(frozen=True, slots=True)
class EgvPage:
    """An EGV page: its header, the records that passed their CRC (each with its index in
    the page), and the raw bad ones (index, bytes)."""

    header: PageHeader
    records: tuple[EgvRecord, ...]
    bad: tuple[tuple[int, bytes], ...]
    record_size: int
    #: The index in the page of each of `records`.
    indices: tuple[int, ...] = ()


def _chunks(data: bytes, count: int, size: int) -> list[bytes]:
    return [data[i * size : (i + 1) * size] for i in range(count)]


def parse_egv_page(payload: bytes) -> EgvPage:
    """An EGV_DATA page; the record size is the layout under which most records check out."""
    header = PageHeader.parse(payload)
    if header.record_type != RecordType.EGV_DATA:
        raise ProtocolError(f"page of record type {header.record_type}, expected EGV", payload)
    data = bytes(payload[HEADER_SIZE:])
    if header.count == 0:
        return EgvPage(header, (), (), 0)
    order = (25, 23, 13) if header.revision > 4 else (13, 23, 25)
    scores = {
        size: sum(map(xmodem_crc_ok, _chunks(data, header.count, size)))
        for size in order
        if header.count * size <= len(data)
    }
    if not scores or max(scores.values()) == 0:
        raise ProtocolError(f"no EGV record layout fits page {header.page}", bytes(payload))
    size = max(scores, key=lambda s: scores[s])
    chunks = list(enumerate(_chunks(data, header.count, size)))
    good = [(i, c) for i, c in chunks if xmodem_crc_ok(c)]
    records = tuple(EgvRecord.parse(c) for _, c in good)
    bad = tuple((i, c) for i, c in chunks if not xmodem_crc_ok(c))
    return EgvPage(header, records, bad, size, tuple(i for i, _ in good))


@dataclass(frozen=True, slots=True)
class XmlRecord:
    """A MANUFACTURING_DATA / PC_SOFTWARE_PARAMETER record: times and the XML element."""

    system_time: int
    display_time: int
    tag: str
    attributes: dict[str, str]


def parse_xml_page(payload: bytes, record_type: int) -> XmlRecord:
    """The first XML record of a page of `record_type` (CRCs checked)."""
    header = PageHeader.parse(payload)
    if header.record_type != record_type:
        raise ProtocolError(f"page of record type {header.record_type}, not {record_type}")
    raw = bytes(payload[HEADER_SIZE : HEADER_SIZE + XML_RECORD_SIZE])
    if header.count < 1 or len(raw) < XML_RECORD_SIZE:
        raise ProtocolError("XML page holds no record", bytes(payload))
    v = parse_construct(_XML, split_xmodem_crc(raw, "XML record"), "XML record")
    tag, attributes = parse_xml_attributes(v.xml)
    return XmlRecord(v.system_time, v.display_time, tag, attributes)


def build_xml_record(system_time: int, display_time: int, xml: str) -> bytes:
    """A 500-byte XML record (the XML NUL-padded to 490 bytes) with its CRC."""
    text = xml.encode()
    if len(text) > 490:
        raise ProtocolError(f"XML of {len(text)} bytes exceeds 490")
    value = {
        "system_time": system_time,
        "display_time": display_time,
        "xml": text.ljust(490, b"\0"),
    }
    return append_xmodem_crc(build_construct(_XML, value, "XML record"))
