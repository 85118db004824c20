"""protocols.crc: catalogue check values, the CGMS E2E helpers and the XMODEM ones."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.crc import (
    append_e2e_crc,
    append_xmodem_crc,
    crc16_mcrf4xx,
    crc16_xmodem,
    e2e_payload,
    split_e2e_crc,
    split_xmodem_crc,
    with_e2e_crc,
    xmodem_crc_ok,
)
from protocols.errors import CrcError, ProtocolError


def reference_mcrf4xx(data: bytes) -> int:
    """Bit-by-bit CRC-16/MCRF4XX (reflected poly 0x8408, init 0xFFFF), the textbook way."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def test_catalogue_check_values() -> None:
    assert crc16_mcrf4xx(b"123456789") == 0x6F91
    assert crc16_xmodem(b"123456789") == 0x31C3


@settings(max_examples=200)
@given(st.binary(max_size=64))
def test_fast_mcrf4xx_matches_the_bitwise_definition(data: bytes) -> None:
    assert crc16_mcrf4xx(data) == reference_mcrf4xx(data)
    assert crc16_mcrf4xx(memoryview(data)) == reference_mcrf4xx(data)


@pytest.mark.parametrize(
    ("payload", "crc"),
    [
        ("1a", "5cb0"),  # SOCP start session (§1.8)
        ("a005000400", "7bd3"),  # CGM Status (§1.6)
        ("e80705020a0f002400", "a63a"),  # Session Start Time (§1.7)
        ("5001", "c632"),  # Session Run Time
        ("00900159", "c45c"),  # CGM Feature
        ("0fe3d2e405000214ff02f0e5f3", "8e3f"),  # V2
    ],
)
def test_verified_e2e_crcs(payload: str, crc: str) -> None:
    assert append_e2e_crc(bytes.fromhex(payload)) == bytes.fromhex(payload + crc)
    assert split_e2e_crc(bytes.fromhex(payload + crc)) == bytes.fromhex(payload)


def test_split_reports_mismatch_with_both_values() -> None:
    with pytest.raises(CrcError) as info:
        split_e2e_crc(bytes.fromhex("08000c100600586f"), "V4")
    assert (info.value.received, info.value.computed) == (0x6F58, 0x6F59)
    assert info.value.data == bytes.fromhex("08000c100600586f")
    assert isinstance(info.value, ProtocolError)
    with pytest.raises(ProtocolError):
        split_e2e_crc(b"\x01")


def test_e2e_payload_lengths() -> None:
    assert e2e_payload(b"\x50\x01", 2, "srt") == (b"\x50\x01", False)
    assert e2e_payload(bytes.fromhex("5001c632"), 2, "srt") == (b"\x50\x01", True)
    for bad in (b"\x50", b"\x50\x01\xc6", b"\x50\x01\xc6\x32\x00"):
        with pytest.raises(ProtocolError):
            e2e_payload(bad, 2, "srt")
    assert with_e2e_crc(b"\x1a", False) == b"\x1a"
    assert with_e2e_crc(b"\x1a", True) == bytes.fromhex("1a5cb0")


def test_xmodem_helpers_append_check_and_strip_the_dexcom_crc() -> None:
    framed = append_xmodem_crc(b"\x24")
    assert framed == bytes.fromhex("24e664")  # Dexcom TransmitterTimeTx (protocols.md §2.2)
    assert split_xmodem_crc(framed, "time") == b"\x24"
    assert xmodem_crc_ok(framed)
    damaged = framed[:-1] + b"\x65"
    assert not xmodem_crc_ok(damaged)
    with pytest.raises(CrcError) as caught:
        split_xmodem_crc(damaged, "time")
    assert (caught.value.received, caught.value.computed) == (0x65E6, 0x64E6)
    assert caught.value.data == damaged
    with pytest.raises(ProtocolError):
        split_xmodem_crc(b"\x24", "time")
    assert not xmodem_crc_ok(b"\x24")
