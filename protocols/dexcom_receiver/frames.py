"""Dexcom receiver USB serial framing: packets, command codes, stream decoding (protocols.md §3.2).

Framing (VERIFIED) [H]::

    SOF 0x01 | length u16 LE (whole packet) | command u8 | payload | CRC-16/XMODEM LE

The length counts SOF, length, command, payload and CRC: 6..1590 bytes (payload <= 1584, three
528-byte database pages). The CRC covers everything before it. Answers use the same framing
with command 0x01 ACK, or an error code (`Command.NAK` .. `Command.INVALID_MODE`).

`FrameDecoder` turns a byte stream into `Frame`, `BadFrame` (a CRC or length failure) and
`Garbage` (bytes outside any frame) events. It resynchronises like zigpy-znp's uart: after
garbage it searches the next SOF, and after a bad frame it searches again from the byte after
the bad frame's SOF (a corrupted length must not swallow the next good frame). Every step
consumes at least one byte or waits for more, so no input can make it loop.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import construct as cs

from protocols.codec import build_construct, parse_construct
from protocols.crc import append_xmodem_crc, split_xmodem_crc
from protocols.errors import ProtocolError

SOF: Final = 0x01
MIN_PACKET: Final = 6
MAX_PACKET: Final = 1590


class Command(IntEnum):
    """Command and answer codes (decimal ids, §3.3) [H]."""

    NULL = 0
    ACK = 1
    NAK = 2
    INVALID_COMMAND = 3
    INVALID_PARAM = 4
    INCOMPLETE_PACKET_RECEIVED = 5
    RECEIVER_ERROR = 6
    INVALID_MODE = 7
    PING = 10
    READ_FIRMWARE_HEADER = 11
    READ_DATABASE_PARTITION_INFO = 15
    READ_DATABASE_PAGE_RANGE = 16
    READ_DATABASE_PAGES = 17
    READ_DATABASE_PAGE_HEADER = 18
    READ_TRANSMITTER_ID = 25
    WRITE_TRANSMITTER_ID = 26
    READ_LANGUAGE = 27
    WRITE_LANGUAGE = 28
    READ_DISPLAY_TIME_OFFSET = 29
    WRITE_DISPLAY_TIME_OFFSET = 30
    READ_RTC = 31
    RESET_RECEIVER = 32
    READ_BATTERY_LEVEL = 33
    READ_SYSTEM_TIME = 34
    READ_SYSTEM_TIME_OFFSET = 35
    WRITE_SYSTEM_TIME = 36
    READ_GLUCOSE_UNIT = 37
    WRITE_GLUCOSE_UNIT = 38
    READ_BLINDED_MODE = 39
    WRITE_BLINDED_MODE = 40
    READ_CLOCK_MODE = 41
    WRITE_CLOCK_MODE = 42
    READ_DEVICE_MODE = 43
    ERASE_DATABASE = 45
    SHUTDOWN_RECEIVER = 46
    WRITE_PC_PARAMETERS = 47
    READ_BATTERY_STATE = 48
    READ_HARDWARE_BOARD_ID = 49
    READ_FIRMWARE_SETTINGS = 54
    READ_ENABLE_SETUP_WIZARD_FLAG = 55
    READ_SETUP_WIZARD_STATE = 57
    READ_CHARGER_CURRENT_SETTING = 59
    WRITE_CHARGER_CURRENT_SETTING = 60


#: The command bytes a receiver answers with: ACK and the error codes (§3.2) [H].
ANSWERS: Final = frozenset(range(Command.ACK, Command.INVALID_MODE + 1))


class RecordType(IntEnum):
    """Database partitions (the byte sent to the page commands, §3.3) [H]."""

    MANUFACTURING_DATA = 0
    FIRMWARE_PARAMETER_DATA = 1
    PC_SOFTWARE_PARAMETER = 2
    SENSOR_DATA = 3
    EGV_DATA = 4
    CAL_SET = 5
    DEVIATION = 6
    INSERTION_TIME = 7
    RECEIVER_LOG_DATA = 8
    RECEIVER_ERROR_DATA = 9
    METER_DATA = 10
    USER_EVENT_DATA = 11
    USER_SETTING_DATA = 12


class NakError(ProtocolError):
    """A well-formed answer that is not an ACK; `code` is the receiver's answer code."""

    def __init__(self, message: str, data: bytes = b"", *, code: int) -> None:
        super().__init__(message, data)
        self.code = code


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet: a command (request) or answer code (response) and its payload."""

    command: int
    payload: bytes = b""

    def build(self) -> bytes:
        """The framed bytes (SOF, length, command, payload, CRC)."""
        return build_packet(self.command, self.payload)


_HEADER = cs.Struct("sof" / cs.Const(bytes([SOF])), "length" / cs.Int16ul, "command" / cs.Int8ul)


def build_packet(command: int, payload: bytes = b"") -> bytes:
    """Frame `payload` under `command`; `ProtocolError` when it does not fit one packet."""
    length = len(payload) + MIN_PACKET
    if length > MAX_PACKET:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PACKET - MIN_PACKET}")
    head = build_construct(_HEADER, {"length": length, "command": command}, "packet header")
    return append_xmodem_crc(head + bytes(payload))


def parse_packet(data: bytes) -> Packet:
    """Exactly one framed packet; `CrcError` on a CRC mismatch, `ProtocolError` otherwise."""
    raw = bytes(data)
    if len(raw) < MIN_PACKET:
        raise ProtocolError(f"packet of {len(raw)} bytes is shorter than {MIN_PACKET}", raw)
    head = parse_construct(_HEADER, raw[:4], "packet header")
    if not MIN_PACKET <= head.length <= MAX_PACKET or head.length != len(raw):
        raise ProtocolError(f"packet length field {head.length} != {len(raw)} bytes", raw)
    return Packet(head.command, split_xmodem_crc(raw, "packet")[4:])


# -- stream decoding --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """A valid packet found in the stream, with its raw bytes."""

    packet: Packet
    raw: bytes


@dataclass(frozen=True, slots=True)
class BadFrame:
    """Bytes that started like a frame but failed its checks (`error`: CrcError or length)."""

    raw: bytes
    error: ProtocolError


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes outside any frame (line noise, a partial frame after a reconnect)."""

    raw: bytes


Event = Frame | BadFrame | Garbage


class FrameDecoder:
    """Sans-I/O stream decoder: `feed(bytes)` returns the events completed so far.

    `commands` narrows what can start a frame: a host decoding answers passes `ANSWERS`, so a
    0x01 in line noise followed by a plausible length is skipped at once instead of holding
    the decoder until that many bytes arrived. Bytes of a `BadFrame` that the
    resynchronisation skips afterwards are not reported again as `Garbage`. `pending` counts
    the bytes waiting for the rest of a frame.
    """

    def __init__(self, commands: Container[int] | None = None) -> None:
        self._buffer = bytearray()
        self._commands = commands
        self._quiet = 0  # bytes after a reported bad frame's SOF that belong to it

    @property
    def pending(self) -> int:
        """Bytes buffered for an incomplete frame."""
        return len(self._buffer)

    def clear(self) -> None:
        """Forget everything buffered (before a new request)."""
        self._buffer.clear()
        self._quiet = 0

    def feed(self, data: bytes) -> list[Event]:
        """Add `data`; the events it completes, in stream order (adjacent garbage merged)."""
        self._buffer += data
        events: list[Event] = []
        while True:
            progressed, event = self._step()
            if not progressed:
                return events
            if isinstance(event, Garbage) and events and isinstance(events[-1], Garbage):
                event = Garbage(events.pop().raw + event.raw)
            if event is not None:
                events.append(event)

    def _skip(self, count: int) -> Garbage | None:
        raw = bytes(self._buffer[:count])
        del self._buffer[:count]
        quiet = min(count, self._quiet)
        self._quiet -= quiet
        return Garbage(raw[quiet:]) if len(raw) > quiet else None

    def _step(self) -> tuple[bool, Event | None]:  # noqa: PLR0911 - one return per state
        """(whether bytes were consumed, the event they make, if any)."""
        buffer = self._buffer
        if not buffer:
            return False, None
        if buffer[0] != SOF:
            start = buffer.find(SOF)
            return True, self._skip(len(buffer) if start < 0 else start)
        if len(buffer) < 4:
            return False, None
        length = buffer[1] | buffer[2] << 8
        plausible = self._commands is None or buffer[3] in self._commands
        if not MIN_PACKET <= length <= MAX_PACKET or not plausible:
            return True, self._skip(1)  # a 0x01 that cannot start a frame
        if len(buffer) < length:
            return False, None
        raw = bytes(buffer[:length])
        try:
            packet = parse_packet(raw)
        except ProtocolError as exc:
            # Resynchronise from the next byte: a corrupted length must not hide a good frame.
            quiet = self._quiet
            del buffer[:1]
            self._quiet = max(quiet - 1, length - 1)
            return True, (BadFrame(raw, exc) if quiet == 0 else None)
        del buffer[:length]
        self._quiet = 0
        return True, Frame(packet, raw)
