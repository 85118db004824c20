"""Dexcom G5/G6 backfill: request, summary and the frame stream (protocols.md §2.6, VERIFIED).

The family's API is documented in `protocols.dexcom_g6` (package docstring). Source:
CGMBLEKit `Messages/GlucoseBackfillMessage.swift` and `Transmitter.swift` (the checks), xDrip
`g5model/BackFillStream.java`.

* `BackfillTx` on Control: `50 05 02 00 | start u32 | end u32 | 00 x 6 | CRC` (20 bytes; the
  zeros are "length u32" and "crc u16" in CGMBLEKit naming). VERIFIED: 5 439 415..5 440 614 ->
  `50050200b7ff5200660453000000000000007138`.
* Frames, notified on Backfill before the summary: `index (1-based) | identifier | payload`
  (≤ 20 bytes). The payloads joined = 4-byte header (seen `bc 46 00 00`, meaning unknown) +
  N x 8-byte `GlucoseRecord`. `BackfillStream` reassembles them: frame 1 starts a stream, each
  next frame must carry index + 1 and the same identifier (else `ProtocolError`).
* `BackfillRx` on Control (20 bytes): `51 | status | backfillStatus | identifier | start u32 |
  end u32 | bufferLength u32 | bufferCRC u16 | CRC`: length and CRC-16/XMODEM of all frames
  *including* their 2-byte headers; `BackfillStream.check(summary)` compares both.
* For an emulator: `build_backfill_frames(records, identifier, header)` and
  `BackfillRx.for_frames(frames, start, end)` give the stream a transmitter would send.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import construct as cs

from protocols.crc import crc16_xmodem
from protocols.dexcom_g6.framing import Opcode, build_framed, parse_framed
from protocols.dexcom_g6.glucose import GlucoseRecord
from protocols.errors import CrcError, ProtocolError

#: The 4 bytes that open the stream in the verified capture (meaning unknown, §2.6).
DEFAULT_HEADER: Final = bytes.fromhex("bc460000")
HEADER_SIZE: Final = 4
#: Bytes per notification at the default ATT MTU (23 - 3).
FRAME_SIZE: Final = 20
#: An ATT value is at most 512 bytes; anything longer is not a frame.
MAX_FRAME: Final = 512

BACKFILL_TX = cs.Struct(
    "opcode" / cs.Const(Opcode.BACKFILL_TX, cs.Int8ul),
    "byte1" / cs.Int8ul,
    "byte2" / cs.Int8ul,
    "identifier" / cs.Int8ul,
    "start" / cs.Int32ul,
    "end" / cs.Int32ul,
    "length" / cs.Int32ul,
    "buffer_crc" / cs.Int16ul,
)
BACKFILL_RX = cs.Struct(
    "opcode" / cs.Const(Opcode.BACKFILL_RX, cs.Int8ul),
    "status" / cs.Int8ul,
    "backfill_status" / cs.Int8ul,
    "identifier" / cs.Int8ul,
    "start" / cs.Int32ul,
    "end" / cs.Int32ul,
    "buffer_length" / cs.Int32ul,
    "buffer_crc" / cs.Int16ul,
)


@dataclass(frozen=True, slots=True)
class BackfillTx:
    """Backfill request for transmitter times `start`..`end` (seconds since activation)."""

    start: int
    end: int
    byte1: int = 0x05  # constant in CGMBLEKit and xDrip; meaning unknown
    byte2: int = 0x02
    identifier: int = 0x00
    length: int = 0
    buffer_crc: int = 0

    @classmethod
    def parse(cls, data: bytes) -> BackfillTx:
        """Decode 20 bytes (CRC checked)."""
        c = parse_framed(BACKFILL_TX, 20, data, "backfill request")
        return cls(c.start, c.end, c.byte1, c.byte2, c.identifier, c.length, c.buffer_crc)

    def build(self) -> bytes:
        """20 bytes."""
        fields = {
            "byte1": self.byte1,
            "byte2": self.byte2,
            "identifier": self.identifier,
            "start": self.start,
            "end": self.end,
            "length": self.length,
            "buffer_crc": self.buffer_crc,
        }
        return build_framed(BACKFILL_TX, fields, "backfill request")


@dataclass(frozen=True, slots=True)
class BackfillRx:
    """Backfill summary: the range sent and the length/CRC of the frames that carried it."""

    status: int
    backfill_status: int
    identifier: int
    start: int
    end: int
    buffer_length: int
    buffer_crc: int

    @classmethod
    def parse(cls, data: bytes) -> BackfillRx:
        """Decode 20 bytes (CRC checked)."""
        c = parse_framed(BACKFILL_RX, 20, data, "backfill summary")
        return cls(
            c.status,
            c.backfill_status,
            c.identifier,
            c.start,
            c.end,
            c.buffer_length,
            c.buffer_crc,
        )

    @classmethod
    def for_frames(
        cls,
        frames: Iterable[bytes],
        start: int,
        end: int,
        *,
        status: int = 0,
        backfill_status: int = 1,
        identifier: int = 0,
    ) -> BackfillRx:
        """The summary a transmitter sends after `frames` (`backfill_status` 1 as captured)."""
        buffer = b"".join(frames)
        return cls(
            status, backfill_status, identifier, start, end, len(buffer), crc16_xmodem(buffer)
        )

    def build(self) -> bytes:
        """20 bytes."""
        fields = {
            "status": self.status,
            "backfill_status": self.backfill_status,
            "identifier": self.identifier,
            "start": self.start,
            "end": self.end,
            "buffer_length": self.buffer_length,
            "buffer_crc": self.buffer_crc,
        }
        return build_framed(BACKFILL_RX, fields, "backfill summary")


class BackfillStream:
    """Reassembles the backfill frames of one request (a pure buffer: no clock, no I/O)."""

    def __init__(self) -> None:
        """An empty stream; frame 1 (re)starts it."""
        self.frames: list[bytes] = []
        self.identifier: int | None = None

    def append(self, frame: bytes) -> None:
        """Add one notification; `ProtocolError` if it is not the next frame of this stream."""
        raw = bytes(frame)
        if not 3 <= len(raw) <= MAX_FRAME:
            raise ProtocolError(f"backfill frame: {len(raw)} bytes, expected 3..512", raw)
        index, identifier = raw[0], raw[1]
        if index == 1:
            self.frames, self.identifier = [], identifier
        elif index != len(self.frames) + 1 or identifier != self.identifier:
            expected = f"{len(self.frames) + 1}/{self.identifier}"
            raise ProtocolError(f"backfill frame {index}/{identifier}, expected {expected}", raw)
        self.frames.append(raw)

    @property
    def length(self) -> int:
        """Bytes of all frames, headers included (the summary's bufferLength)."""
        return sum(len(frame) for frame in self.frames)

    @property
    def crc(self) -> int:
        """CRC-16/XMODEM over all frames, headers included (the summary's bufferCRC)."""
        return crc16_xmodem(b"".join(self.frames))

    def check(self, summary: BackfillRx) -> None:
        """`ProtocolError` (length) or `CrcError` unless the frames are the ones summarised."""
        buffer = b"".join(self.frames)
        if summary.buffer_length != len(buffer):
            raise ProtocolError(
                f"backfill: summary announces {summary.buffer_length} bytes, got {len(buffer)}",
                buffer,
            )
        computed = crc16_xmodem(buffer)
        if summary.buffer_crc != computed:
            raise CrcError(
                "backfill buffer", buffer, received=summary.buffer_crc, computed=computed
            )

    def payload(self) -> bytes:
        """The frames without their 2-byte headers, joined."""
        return b"".join(frame[2:] for frame in self.frames)

    def header(self) -> bytes:
        """The stream's first 4 bytes (b"" when no frame came)."""
        return self.payload()[:HEADER_SIZE]

    def records(self) -> list[GlucoseRecord]:
        """The 8-byte records after the header; `ProtocolError` if they do not divide evenly."""
        payload = self.payload()
        if not payload:
            return []
        body = payload[HEADER_SIZE:]
        if len(payload) < HEADER_SIZE or len(body) % GlucoseRecord.SIZE:
            raise ProtocolError(
                f"backfill: {len(payload)} payload bytes are not 4 + 8 x N", payload
            )
        size = GlucoseRecord.SIZE
        return [GlucoseRecord.parse(body[i : i + size]) for i in range(0, len(body), size)]


def build_backfill_frames(
    records: Sequence[GlucoseRecord],
    *,
    identifier: int = 0,
    header: bytes = DEFAULT_HEADER,
    frame_size: int = FRAME_SIZE,
) -> list[bytes]:
    """The notifications carrying `records` (what a transmitter emulator sends)."""
    if len(header) != HEADER_SIZE or not 3 <= frame_size <= MAX_FRAME:
        raise ProtocolError("backfill: header must be 4 bytes, frames 3..512 bytes")
    stream = header + b"".join(record.build() for record in records)
    chunk = frame_size - 2
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    if len(chunks) > 0xFF:
        raise ProtocolError(f"backfill: {len(chunks)} frames exceed the 1-byte frame index")
    return [bytes((n, identifier)) + part for n, part in enumerate(chunks, start=1)]
