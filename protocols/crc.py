"""CRC-16 variants of the glucose protocols, in C speed through `binascii.crc_hqx`.

* `crc16_mcrf4xx` — the Bluetooth CGMS E2E-CRC (protocols.md §0, §1.3): poly 0x1021 reflected
  (0x8408), init 0xFFFF, refin = refout = true, xorout 0, stored little-endian.
  Catalogue check: `crc16_mcrf4xx(b"123456789") == 0x6F91`. The SIG XML calls it "CRC-CCITT
  g(D)=D16+D12+D5+1 with a seed of 0xFFFF"; Nordic's implementation and test vectors pin the
  reflection.
* `crc16_xmodem` — Dexcom G5/G6/G7 BLE and the G4/G5 receiver USB frames: poly 0x1021, init 0,
  no reflection, stored little-endian. Check 0x31C3.

`binascii.crc_hqx` is the non-reflected CCITT CRC; a reflected CRC equals the bit-reversal of
the non-reflected one over bit-reversed bytes with a bit-reversed seed (0xFFFF is its own
reversal), which costs one `bytes.translate`.

One helper pair per algorithm, used by every family (both store the CRC little-endian after
the bytes it covers):

* CRC-16/MCRF4XX (CGMS E2E-CRC): `append_e2e_crc(payload)`, `split_e2e_crc(data, what)`, and
  for the CGMS values whose CRC is optional `e2e_payload(data, length, what)` /
  `with_e2e_crc(payload, e2e_crc)`.
* CRC-16/XMODEM (Dexcom transmitter Control messages, receiver packets and records):
  `append_xmodem_crc(payload)`, `split_xmodem_crc(data, what)`, `xmodem_crc_ok(data)`.

`split_*` checks and strips the trailing CRC: `CrcError` (with `received`, `computed`, and the
whole value as `data`) on a mismatch, `ProtocolError` when `data` is too short to hold one.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable

from protocols.errors import CrcError, ProtocolError

#: Byte → the same byte with its bit order reversed.
_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))

Buffer = bytes | bytearray | memoryview


def _reflect16(value: int) -> int:
    return (_REVERSED[value & 0xFF] << 8) | _REVERSED[value >> 8]


def crc16_mcrf4xx(data: Buffer, seed: int = 0xFFFF) -> int:
    """CRC-16/MCRF4XX of `data` (the CGMS E2E-CRC); check value 0x6F91."""
    return _reflect16(binascii.crc_hqx(bytes(data).translate(_REVERSED), _reflect16(seed)))


def crc16_xmodem(data: Buffer, seed: int = 0x0000) -> int:
    """CRC-16/XMODEM of `data` (Dexcom transmitter and receiver frames); check value 0x31C3."""
    return binascii.crc_hqx(data, seed)


def _append(crc: Callable[[Buffer], int], payload: Buffer) -> bytes:
    return bytes(payload) + crc(payload).to_bytes(2, "little")


def _split(crc: Callable[[Buffer], int], data: Buffer, what: str, name: str) -> bytes:
    raw = bytes(data)
    if len(raw) < 2:
        raise ProtocolError(f"{what}: too short to hold {name}", raw)
    payload = raw[:-2]
    received = int.from_bytes(raw[-2:], "little")
    computed = crc(payload)
    if received != computed:
        raise CrcError(what, raw, received=received, computed=computed)
    return payload


def append_e2e_crc(payload: Buffer) -> bytes:
    """`payload` followed by its CGMS E2E-CRC (CRC-16/MCRF4XX), little-endian."""
    return _append(crc16_mcrf4xx, payload)


def split_e2e_crc(data: Buffer, what: str = "value") -> bytes:
    """The payload of `data` whose last two bytes are its E2E-CRC; `CrcError` on a mismatch."""
    return _split(crc16_mcrf4xx, data, what, "an E2E-CRC")


def append_xmodem_crc(payload: Buffer) -> bytes:
    """`payload` followed by its CRC-16/XMODEM, little-endian (Dexcom framing)."""
    return _append(crc16_xmodem, payload)


def split_xmodem_crc(data: Buffer, what: str = "value") -> bytes:
    """The payload of `data` whose last two bytes are its CRC-16/XMODEM; `CrcError` on a
    mismatch."""
    return _split(crc16_xmodem, data, what, "a CRC")


def xmodem_crc_ok(data: Buffer) -> bool:
    """Whether the last two bytes of `data` are the CRC-16/XMODEM of the rest."""
    return len(data) >= 2 and crc16_xmodem(data[:-2]) == int.from_bytes(data[-2:], "little")


def e2e_payload(data: Buffer, length: int, what: str) -> tuple[bytes, bool]:
    """(payload, had_crc) of a CGMS value of `length` payload bytes with an optional E2E-CRC.

    `length` bytes → no CRC; `length + 2` → the CRC is checked (`CrcError`) and stripped;
    anything else → `ProtocolError`.
    """
    raw = bytes(data)
    if len(raw) == length:
        return raw, False
    if len(raw) == length + 2:
        return split_e2e_crc(raw, what), True
    raise ProtocolError(f"{what}: {len(raw)} bytes, expected {length} or {length + 2}", raw)


def with_e2e_crc(payload: bytes, e2e_crc: bool) -> bytes:
    """`payload`, followed by its E2E-CRC when `e2e_crc`."""
    return append_e2e_crc(payload) if e2e_crc else payload
