"""CGM Measurement (0x2AA7) records of the Bluetooth SIG CGMS (0x181F; protocols.md §1.3).

UUIDs are in `protocols.cgms.uuids`; the state characteristics in `protocols.cgms.state`, the
SOCP in `protocols.cgms.socp`, RACP (shared with GLS) in `protocols.gatt.racp`.

Values that may carry the E2E-CRC (CRC-16/MCRF4XX, appended when CGM Feature bit 12 is set:
measurement records, status, session start/run time, SOCP; §1.4) have an `e2e_crc: bool` field:
parsing sets it from the length (and checks the CRC, `CrcError`), building appends the CRC when
it is true. Every `parse` raises only `ProtocolError` (or a subclass) on bad bytes.

* `CgmMeasurement` (0x2AA7, §1.3): Size | Flags | glucose SFLOAT mg/dL | time offset uint16 min |
  0-3 Sensor Status Annunciation octets | trend SFLOAT (mg/dL)/min (flag b0) | quality SFLOAT %
  (flag b1) | E2E-CRC. A notification holds 1..n records: `parse_measurements(data)`,
  `decode_records(data)` (per-record results), `CgmMeasurement.parse(record)`,
  `build_measurements(records)`. The CRC presence is derived per record from Size vs flags.
  Fields: `glucose`, `time_offset`, `status` (`SensorStatus`), `trend`, `quality` (SFLOAT
  values or None), `octets` (which annunciation octets travel; None = the non-zero ones),
  `e2e_crc`; helpers `glucose_mgdl` (None for specials) and `out_of_range` ("low"/"high").
  `RECORD` is the construct of the layout (used to build); parsing runs construct-compiled
  fixed layouts per flag combination (bench/cgms_decode.py measures it against `struct`).
* `StatusOctetOrder` — the per-device quirk of §1.3 / §8.1: `SIG` (default; flag b7 = Status
  octet, b6 = Cal/Temp, b5 = Warning) or `NORDIC` (b5 = Status, b7 = Warning, as Nordic's
  Android library and Bluetopia read it). Octets are always on the wire Status, Cal/Temp,
  Warning (LSO first), so both agree when all three are present. V6 `07 80 FA 00 1E 00 02` is
  "device battery low" under SIG and "result above patient high" under NORDIC.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum, IntFlag
from typing import Any, Final, Literal

import construct as cs

from protocols.cgms.state import SensorStatus
from protocols.codec import build_construct, compile_parser, parse_compiled
from protocols.crc import split_e2e_crc, with_e2e_crc
from protocols.errors import ProtocolError
from protocols.sfloat import SFloat, SFloatSpecial, SFloatValue, decode_sfloat, encode_sfloat

__all__ = [
    "RECORD",
    "CgmMeasurement",
    "StatusOctetOrder",
    "StatusOctets",
    "build_measurements",
    "decode_records",
    "parse_measurements",
]


_NO_STATUS: Final = SensorStatus(0)


class StatusOctets(IntFlag):
    """Which annunciation octets a record carries (logical octets, not flag bits)."""

    STATUS = 1
    CAL_TEMP = 2
    WARNING = 4


class StatusOctetOrder(Enum):
    """How flag bits b5-b7 map to annunciation octets (see the module docstring)."""

    SIG = "sig"
    NORDIC = "nordic"


#: Flag bit of each logical octet, per reading.
_OCTET_FLAG: Final = {
    StatusOctetOrder.SIG: (
        (StatusOctets.STATUS, 0x80),
        (StatusOctets.CAL_TEMP, 0x40),
        (StatusOctets.WARNING, 0x20),
    ),
    StatusOctetOrder.NORDIC: (
        (StatusOctets.STATUS, 0x20),
        (StatusOctets.CAL_TEMP, 0x40),
        (StatusOctets.WARNING, 0x80),
    ),
}
_Layout = list[tuple[tuple[int, ...], StatusOctets]]
#: order → flags → (bit shifts of the octets present in wire order, which octets they are).
_LAYOUT: Final[dict[StatusOctetOrder, _Layout]] = {
    order: [
        (
            tuple(8 * i for i, (_, bit) in enumerate(pairs) if flags & bit),
            StatusOctets(sum(logical for logical, bit in pairs if flags & bit)),
        )
        for flags in range(256)
    ]
    for order, pairs in _OCTET_FLAG.items()
}
#: flags → record length without CRC (6 + 2·trend + 2·quality + one byte per octet flag).
_BODY: Final = [6 + 2 * (f & 1) + (f & 2) + bin(f & 0xE0).count("1") for f in range(256)]

_F = cs.this.flags
RECORD = cs.Struct(
    "size" / cs.Int8ul,
    "flags" / cs.Int8ul,
    "glucose" / cs.Int16ul,
    "time_offset" / cs.Int16ul,
    "annunciation" / cs.Bytes((_F >> 5 & 1) + (_F >> 6 & 1) + (_F >> 7 & 1)),
    "trend" / cs.If(_F & 0x01, cs.Int16ul),
    "quality" / cs.If(_F & 0x02, cs.Int16ul),
)
#: Compiled parsers per record layout (flag bits 0, 1, 5-7: 32 at most), made on first use.
_PARSERS: dict[int, cs.Compiled] = {}


@dataclass(frozen=True, slots=True)
class CgmMeasurement:
    """One CGM Measurement record. `octets=None` (building) sends exactly the non-zero octets."""

    glucose: SFloatValue  # mg/dL; ±INFINITY = below/above the measurable range
    time_offset: int  # minutes since Session Start Time: the record's key within a session
    status: SensorStatus = _NO_STATUS
    trend: SFloatValue | None = None  # (mg/dL)/min
    quality: SFloatValue | None = None  # %
    octets: StatusOctets | None = None
    e2e_crc: bool = False

    @property
    def glucose_mgdl(self) -> float | None:
        """The value as a float, None for any SFLOAT special (see `out_of_range`)."""
        return self.glucose.value if isinstance(self.glucose, SFloat) else None

    @property
    def out_of_range(self) -> Literal["low", "high"] | None:
        """ "low"/"high" for ±INFINITY or a device-range annunciation, else None."""
        if (
            self.glucose is SFloatSpecial.NEGATIVE_INFINITY
            or self.status & SensorStatus.RESULT_BELOW_DEVICE_RANGE
        ):
            return "low"
        if (
            self.glucose is SFloatSpecial.POSITIVE_INFINITY
            or self.status & SensorStatus.RESULT_ABOVE_DEVICE_RANGE
        ):
            return "high"
        return None

    @classmethod
    def parse(cls, record: bytes, order: StatusOctetOrder = StatusOctetOrder.SIG) -> CgmMeasurement:
        """Decode one record (exactly Size bytes) and check its CRC if it has one."""
        record = bytes(record)
        if len(record) < 6 or record[0] != len(record):  # Size, Flags, SFLOAT, offset at least
            raise ProtocolError("CGM measurement: Size byte does not match the record", record)
        return _decode(record, 0, io.BytesIO(record), _LAYOUT[order])

    def build(self, order: StatusOctetOrder = StatusOctetOrder.SIG) -> bytes:
        """The record's bytes (Size first, CRC last when `e2e_crc`)."""
        octets = self.octets
        if octets is None:
            octets = StatusOctets(sum(1 << i for i in range(3) if self.status >> 8 * i & 0xFF))
        flags = (self.trend is not None) | (self.quality is not None) << 1
        annunciation = bytearray()
        for i, (logical, bit) in enumerate(_OCTET_FLAG[order]):
            if octets & logical:
                flags |= bit
                annunciation.append(self.status >> 8 * i & 0xFF)
            elif self.status >> 8 * i & 0xFF:
                raise ProtocolError(f"status bits set in the omitted {logical.name} octet")
        fields = {
            "size": _BODY[flags] + 2 * self.e2e_crc,
            "flags": flags,
            "glucose": encode_sfloat(self.glucose),
            "time_offset": self.time_offset,
            "annunciation": bytes(annunciation),
            "trend": None if self.trend is None else encode_sfloat(self.trend),
            "quality": None if self.quality is None else encode_sfloat(self.quality),
        }
        return with_e2e_crc(build_construct(RECORD, fields, "CGM measurement"), self.e2e_crc)


def _parser(flags: int) -> cs.Compiled:
    """The compiled construct of one record layout: a fixed `Sequence`, no `If`, no expression.

    Same fields as `RECORD` (which builds records and documents the layout) with the flag
    conditions resolved: half the cost of compiling `RECORD` itself, on the hot path.
    """
    key = flags & 0xE3
    parser = _PARSERS.get(key)
    if parser is None:
        octets = cs.Bytes(bin(key & 0xE0).count("1"))
        fields: list[cs.Construct[Any, Any]] = [
            cs.Int8ul,
            cs.Int8ul,
            cs.Int16ul,
            cs.Int16ul,
            octets,
        ]
        fields += [cs.Int16ul] * bin(key & 0x03).count("1")
        parser = _PARSERS[key] = compile_parser(cs.Sequence(*fields))
    return parser


def _decode(data: bytes, pos: int, stream: io.BytesIO, layout: _Layout) -> CgmMeasurement:
    """The record at `pos` of `data` (its Size byte already checked to fit), CRC checked.

    The hot path of every CGMS reading: the compiled construct of the record's layout parses
    from a stream shared by the whole notification, with a shared root context.
    """
    size, flags = data[pos], data[pos + 1]
    body = _BODY[flags]
    if size == body + 2:
        split_e2e_crc(data[pos : pos + size], "CGM measurement")
    elif size != body:
        record = data[pos : pos + size]
        raise ProtocolError(f"CGM measurement: Size {size} for flags 0x{flags:02x}", record)
    stream.seek(pos)
    # [size, flags, glucose, offset, octets, trend?, quality?]
    values = parse_compiled(_parser(flags), stream, "CGM measurement")
    shifts, octets = layout[flags]
    status = 0
    for shift, octet in zip(shifts, values[4], strict=True):
        status |= octet << shift
    return CgmMeasurement(
        decode_sfloat(values[2]),
        values[3],
        SensorStatus(status) if status else _NO_STATUS,
        decode_sfloat(values[5]) if flags & 0x01 else None,
        decode_sfloat(values[-1]) if flags & 0x02 else None,
        octets,
        size != body,
    )


def decode_records(
    data: bytes, order: StatusOctetOrder = StatusOctetOrder.SIG
) -> Iterator[tuple[bytes, CgmMeasurement | ProtocolError]]:
    """(record bytes, record or its error) for each record of a notification, in order.

    A bad record does not stop the others; a broken Size framing ends the iteration with the
    rest of the notification and its error (what a collector session needs).
    """
    data = bytes(data)
    pos, end = 0, len(data)
    if not end:
        yield data, ProtocolError("CGM measurement: empty notification")
    stream, layout = io.BytesIO(data), _LAYOUT[order]
    while pos < end:
        size = data[pos]
        if size < 6 or pos + size > end:
            rest = data[pos:]
            yield rest, ProtocolError(f"CGM measurement: bad Size {size} at offset {pos}", rest)
            return
        try:
            yield data[pos : pos + size], _decode(data, pos, stream, layout)
        except ProtocolError as exc:
            yield data[pos : pos + size], exc
        pos += size


def parse_measurements(
    data: bytes, order: StatusOctetOrder = StatusOctetOrder.SIG
) -> list[CgmMeasurement]:
    """Every record of one notification; the first bad record (or framing error) raises."""
    data = bytes(data)
    pos, end = 0, len(data)
    if not end:
        raise ProtocolError("CGM measurement: empty notification")
    stream, layout, records = io.BytesIO(data), _LAYOUT[order], []
    while pos < end:
        size = data[pos]
        if size < 6 or pos + size > end:
            raise ProtocolError(f"CGM measurement: bad Size {size} at offset {pos}", data[pos:])
        records.append(_decode(data, pos, stream, layout))
        pos += size
    return records


def build_measurements(
    records: Iterable[CgmMeasurement], order: StatusOctetOrder = StatusOctetOrder.SIG
) -> bytes:
    """One notification holding `records` (the caller keeps it within ATT_MTU - 3)."""
    return b"".join(record.build(order) for record in records)
