"""protocols.dexcom_g6 codecs under fuzzing: arbitrary or mutated bytes give a message or
ProtocolError, nothing else; whatever parses builds back to the same bytes; whatever builds
parses back to the same message."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocols.crc import append_xmodem_crc
from protocols.dexcom_g6.auth import (
    AuthChallengeTx,
    AuthRequestRx,
    AuthRequestTx,
    AuthStatusRx,
    KeepAliveTx,
    parse_authentication,
)
from protocols.dexcom_g6.backfill import (
    BackfillRx,
    BackfillStream,
    BackfillTx,
    build_backfill_frames,
)
from protocols.dexcom_g6.control import parse_control
from protocols.dexcom_g6.glucose import GlucoseRecord, GlucoseRx, GlucoseTx, TransmitterTimeRx
from protocols.errors import ProtocolError

#: A hang is a failure: every input is handled in bounded time.
pytestmark = pytest.mark.timeout(20)

#: name -> (parse, valid vectors to mutate); every parsed value has `.build()`.
PARSERS: dict[str, tuple[Callable[[bytes], Any], list[str]]] = {
    "control": (
        parse_control,
        [
            "24e664",
            "305336",
            "4e0aa9",
            "2500e8f87100ffffffff010000000a70",
            "2500470272007cff710001000000fa1d",
            "3100680a00008a715700cc0006ffc42a",
            "31006f0a0000be7957007a0006e4818d",
            "3100700a0000f17a5700584006e3cee9",
            "50050200b7ff5200660453000000000000007138",
            "51000100b7ff52006604530032000000e6cb9805",
        ],
    ),
    "authentication": (
        parse_authentication,
        ["01118a8327702f45ee02", "03" + "11" * 16, "04" + "22" * 8, "050101", "0619", "07"],
    ),
    "glucose_record": (GlucoseRecord.parse, ["b7ff52008b0006ee", "f17a5700584006e3"]),
}


def _check(parse: Callable[[bytes], Any], data: bytes) -> None:
    try:
        value = parse(data)
    except ProtocolError:
        return
    assert value.build() == data


@pytest.mark.parametrize("name", PARSERS)
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=24))
def test_arbitrary_bytes(name: str, data: bytes) -> None:
    _check(PARSERS[name][0], data)


@pytest.mark.parametrize("name", PARSERS)
@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_vectors(name: str, data: st.DataObject) -> None:
    parse, vectors = PARSERS[name]
    raw = bytearray.fromhex(data.draw(st.sampled_from(vectors)))
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["flip", "cut", "add"]))
        if action == "flip" and raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        elif action == "cut" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1))]
        else:
            raw.insert(data.draw(st.integers(0, len(raw))), data.draw(st.integers(0, 255)))
    _check(parse, bytes(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=14))
def test_any_payload_with_a_valid_crc(payload: bytes) -> None:
    """Past the CRC check, the layouts themselves must refuse bad bytes cleanly."""
    for opcode in (0x24, 0x25, 0x30, 0x31, 0x4E, 0x4F, 0x50, 0x51):
        _check(parse_control, append_xmodem_crc(bytes((opcode,)) + payload))


u8 = st.integers(0, 0xFF)
u32 = st.integers(0, 0xFFFFFFFF)
eight = st.binary(min_size=8, max_size=8)
records = st.builds(
    GlucoseRecord,
    timestamp=u32,
    glucose=st.integers(0, 0xFFF),
    state=u8,
    trend=st.integers(-128, 127),
    flags=st.integers(0, 0xF),
)
messages = st.one_of(
    st.builds(AuthRequestTx, eight, u8),
    st.builds(AuthRequestRx, eight, eight),
    st.builds(AuthChallengeTx, eight),
    st.builds(AuthStatusRx, u8, u8),
    st.builds(KeepAliveTx, u8),
    st.builds(TransmitterTimeRx, u8, u32, u32, st.binary(min_size=4, max_size=4)),
    st.builds(GlucoseTx, st.booleans()),
    st.builds(GlucoseRx, u8, u32, records, st.booleans()),
    st.builds(BackfillTx, u32, u32, u8, u8, u8, u32, st.integers(0, 0xFFFF)),
    st.builds(BackfillRx, u8, u8, u8, u32, u32, u32, st.integers(0, 0xFFFF)),
)


@settings(max_examples=400, deadline=None)
@given(messages)
def test_build_then_parse(message: Any) -> None:
    data = message.build()
    parse = parse_authentication if data[0] < 0x10 else parse_control
    parsed = parse(data)
    assert parsed == message
    assert parsed.build() == data


@settings(max_examples=200, deadline=None)
@given(st.lists(records, max_size=40), u8, st.integers(3, 40))
def test_backfill_stream_round_trip(items: list[GlucoseRecord], identifier: int, size: int) -> None:
    # the frame index is one byte: a stream needing more than 255 frames cannot be sent
    assume(-(-(4 + 8 * len(items)) // (size - 2)) <= 0xFF)
    frames = build_backfill_frames(items, identifier=identifier, frame_size=size)
    stream = BackfillStream()
    for frame in frames:
        stream.append(frame)
    stream.check(BackfillRx.for_frames(frames, 0, 0, identifier=identifier))
    assert [r.build() for r in stream.records()] == [r.build() for r in items]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=24), max_size=12), st.binary(min_size=20, max_size=20))
def test_backfill_stream_arbitrary_frames(frames: list[bytes], summary: bytes) -> None:
    stream = BackfillStream()
    for frame in frames:
        try:
            stream.append(frame)
        except ProtocolError:
            continue
    with contextlib.suppress(ProtocolError):
        stream.check(BackfillRx.parse(summary))
    with contextlib.suppress(ProtocolError):
        stream.records()
