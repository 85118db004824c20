"""Dexcom G5/G6 transmitter: GATT UUIDs, opcodes and the Control message framing.

The family's API is documented in `protocols.dexcom_g6` (package docstring). Sources:
protocols.md §2.1-§2.3 (LoopKit/CGMBLEKit `BluetoothServices.swift`, `Opcode.swift`,
`NSData+CRC.swift`; xDrip `g5model`, `libkeks` for the `4e 0a a9` cross-check).

* Control framing (§2.2): opcode u8 + payload + CRC-16/XMODEM over both, little-endian.
  VERIFIED: time request `24 e6 64`, glucose request `30 53 36`, G6 glucose request `4e 0a a9`.
  The CRC helpers are `protocols.crc.append_xmodem_crc` / `split_xmodem_crc`.
* `parse_framed(con, size, data, what)` / `build_framed(con, value, what)`: a construct
  `Struct` of opcode + fields, with the length and CRC checked / appended.
* UUIDs (§2.1) and `Opcode` (§2.3) as listed in `protocols.dexcom_g6`.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Final

import construct as cs

from protocols.codec import build_construct, parse_construct
from protocols.crc import append_xmodem_crc, split_xmodem_crc
from protocols.errors import ProtocolError
from protocols.gatt.uuids import uuid16

#: Service UUID in the advertisement of a G5/G6 (the GATT service below is another one) [H].
ADVERTISED_SERVICE: Final = uuid16(0xFEBC)
CGM_SERVICE: Final = "f8083532-849e-531c-c594-30f1f86a4ea5"
#: read/notify; unused by the open implementations.
COMMUNICATION: Final = "f8083533-849e-531c-c594-30f1f86a4ea5"
#: write/indicate: every command after authentication (CRC-framed).
CONTROL: Final = "f8083534-849e-531c-c594-30f1f86a4ea5"
#: write/indicate (and read): authentication, keep-alive, bond request (no CRC).
AUTHENTICATION: Final = "f8083535-849e-531c-c594-30f1f86a4ea5"
#: read/write/notify: the backfill stream frames.
BACKFILL: Final = "f8083536-849e-531c-c594-30f1f86a4ea5"
#: Device Information manufacturer string of a G5/G6 [H].
MANUFACTURER: Final = "DexcomUN"

NO_SESSION: Final = 0xFFFFFFFF
TREND_NONE: Final = 127
STATUS_OK: Final = 0x00
STATUS_LOW_BATTERY: Final = 0x81


def advertised_name(transmitter_id: str) -> str:
    """The local name a G5/G6 advertises: "Dexcom" + the last two characters of its id."""
    return "Dexcom" + transmitter_id.strip().upper()[-2:]


class Opcode(IntEnum):
    """First byte of every message (§2.3; Tx = hub to transmitter, Rx = the answer)."""

    AUTH_REQUEST_TX = 0x01
    AUTH_REQUEST_TX2 = 0x02  # G7 / ONE+ (xDrip libkeks), not used here
    AUTH_REQUEST_RX = 0x03
    AUTH_CHALLENGE_TX = 0x04
    AUTH_STATUS_RX = 0x05
    KEEP_ALIVE_TX = 0x06  # on Authentication; 0x06 on Control = set advertisement parameters
    BOND_REQUEST_TX = 0x07
    DISCONNECT_TX = 0x09
    SET_ADVERTISEMENT_PARAMETERS_RX = 0x1C
    FIRMWARE_VERSION_TX = 0x20
    FIRMWARE_VERSION_RX = 0x21
    BATTERY_STATUS_TX = 0x22
    BATTERY_STATUS_RX = 0x23
    TRANSMITTER_TIME_TX = 0x24
    TRANSMITTER_TIME_RX = 0x25
    SESSION_START_TX = 0x26
    SESSION_START_RX = 0x27
    SESSION_STOP_TX = 0x28
    SESSION_STOP_RX = 0x29
    GLUCOSE_TX = 0x30
    GLUCOSE_RX = 0x31
    CALIBRATION_DATA_TX = 0x32
    CALIBRATION_DATA_RX = 0x33
    CALIBRATE_GLUCOSE_TX = 0x34
    CALIBRATE_GLUCOSE_RX = 0x35
    GLUCOSE_HISTORY_TX = 0x3E
    RESET_TX = 0x42
    RESET_RX = 0x43
    TRANSMITTER_VERSION_TX = 0x4A
    TRANSMITTER_VERSION_RX = 0x4B
    GLUCOSE_G6_TX = 0x4E
    GLUCOSE_G6_RX = 0x4F
    BACKFILL_TX = 0x50
    BACKFILL_RX = 0x51
    EXTENDED_VERSION_TX = 0x52  # G7
    EXTENDED_VERSION_RX = 0x53  # G7
    BACKFILL_FINISHED = 0x59  # G7


def parse_framed(con: cs.Construct[Any, Any], size: int, data: bytes, what: str) -> Any:
    """Parse a CRC-framed Control message of exactly `size` bytes (CRC included)."""
    if len(data) != size:
        raise ProtocolError(f"{what}: {len(data)} bytes, expected {size}", bytes(data))
    return parse_construct(con, split_xmodem_crc(data, what), what)


def build_framed(con: cs.Construct[Any, Any], value: Any, what: str) -> bytes:
    """Build the fields with `con` and append the CRC."""
    return append_xmodem_crc(build_construct(con, value, what))
