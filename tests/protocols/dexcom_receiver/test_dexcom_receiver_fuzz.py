"""Fuzzing the receiver protocol: arbitrary and mutated bytes give values, events or
ProtocolError, never another exception and never a hang (each example has a deadline)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.dexcom_receiver.commands import (
    build_page_range,
    parse_page_range,
    parse_read_pages,
    parse_system_time,
    parse_xml_attributes,
    ping,
    read_pages,
)
from protocols.dexcom_receiver.frames import (
    ANSWERS,
    MAX_PACKET,
    BadFrame,
    Command,
    Frame,
    FrameDecoder,
    Garbage,
    Packet,
    RecordType,
    parse_packet,
)
from protocols.dexcom_receiver.records import (
    EGV_LAYOUTS,
    EgvRecord,
    PageHeader,
    build_page,
    parse_egv_page,
    parse_xml_page,
)
from protocols.errors import ProtocolError

pytestmark = pytest.mark.timeout(60)
FUZZ = settings(max_examples=300, deadline=500, suppress_health_check=[HealthCheck.too_slow])

_EGV = [EgvRecord(441849600 + 300 * i, 441846000 + 300 * i, 90 + i, 0x14) for i in range(5)]
VALID = [
    ping(),
    read_pages(RecordType.EGV_DATA, 500, 1),
    Packet(Command.ACK, build_page_range((1, 2))).build(),
    Packet(
        Command.ACK,
        build_page(PageHeader(0, 5, 4, 2, 0), b"".join(r.build() for r in _EGV)),
    ).build(),
]
PAGES = [parse_packet(frame).payload for frame in VALID[3:]]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("flip", "cut", "insert")))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def _egv_page(data: bytes) -> Any:
    page = parse_egv_page(data)
    for record in page.records:
        _ = record.glucose_mgdl, record.out_of_range, record.special, record.trend, record.noise
    return page


PARSERS: list[Callable[[bytes], Any]] = [
    parse_packet,
    PageHeader.parse,
    EgvRecord.parse,
    _egv_page,
    lambda data: parse_xml_page(data, RecordType.MANUFACTURING_DATA),
    parse_xml_attributes,
    parse_page_range,
    parse_system_time,
    parse_read_pages,
]


def _only_protocol_errors(parse: Callable[[bytes], Any], data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse(data)


@pytest.mark.parametrize("parse", PARSERS)
@FUZZ
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes(parse: Callable[[bytes], Any], data: bytes) -> None:
    _only_protocol_errors(parse, data)


@pytest.mark.parametrize("parse", PARSERS)
@FUZZ
@given(data=mutated(VALID + PAGES))
def test_mutated_valid_bytes(parse: Callable[[bytes], Any], data: bytes) -> None:
    _only_protocol_errors(parse, data)


@pytest.mark.parametrize("commands", [None, ANSWERS])
@FUZZ
@given(chunks=st.lists(st.one_of(st.binary(max_size=40), mutated(VALID), st.sampled_from(VALID))))
def test_decoder_never_raises_and_consumes_everything(
    commands: frozenset[int] | None, chunks: list[bytes]
) -> None:
    decoder = FrameDecoder(commands)
    for chunk in chunks:
        for event in decoder.feed(chunk):
            assert isinstance(event, Frame | BadFrame | Garbage)
            if isinstance(event, Frame):
                assert parse_packet(event.raw) == event.packet
    assert decoder.pending < MAX_PACKET


@FUZZ
@given(
    frames=st.lists(st.sampled_from(VALID), min_size=1, max_size=6),
    noise=st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\x01", b"")), max_size=6),
)
def test_valid_frames_survive_garbage_that_cannot_start_a_frame(
    frames: list[bytes], noise: list[bytes]
) -> None:
    stream = b"".join(n + f for n, f in zip(noise + [b""] * len(frames), frames, strict=False))
    events = FrameDecoder().feed(stream)
    assert [e.raw for e in events if isinstance(e, Frame)] == frames


@FUZZ
@given(
    system=st.integers(0, 2**32 - 1),
    display=st.integers(0, 2**32 - 1),
    glucose=st.integers(0, 2**16 - 1),
    trend=st.integers(0, 255),
    size=st.sampled_from(sorted(EGV_LAYOUTS)),
)
def test_egv_records_round_trip(
    system: int, display: int, glucose: int, trend: int, size: int
) -> None:
    before, after = EGV_LAYOUTS[size]
    record = EgvRecord(system, display, glucose, trend, bytes(before), b"\x07" * after)
    assert EgvRecord.parse(record.build()) == record
