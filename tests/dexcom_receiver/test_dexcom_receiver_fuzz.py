"""Fuzzing the receiver protocol: arbitrary and mutated bytes give values, events or
ProtocolError, never another exception and never a hang (each example has a deadline)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import dexcom_receiver as dx
from protocols.errors import ProtocolError

pytestmark = pytest.mark.timeout(60)
FUZZ = settings(max_examples=300, deadline=500, suppress_health_check=[HealthCheck.too_slow])

_EGV = [dx.EgvRecord(441849600 + 300 * i, 441846000 + 300 * i, 90 + i, 0x14) for i in range(5)]
VALID = [
    dx.ping(),
    dx.read_pages(dx.RecordType.EGV_DATA, 500, 1),
    dx.Packet(dx.Command.ACK, dx.build_page_range((1, 2))).build(),
    dx.Packet(
        dx.Command.ACK,
        dx.build_page(dx.PageHeader(0, 5, 4, 2, 0), b"".join(r.build() for r in _EGV)),
    ).build(),
]
PAGES = [dx.parse_packet(frame).payload for frame in VALID[3:]]


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
    page = dx.parse_egv_page(data)
    for record in page.records:
        _ = record.glucose_mgdl, record.out_of_range, record.special, record.trend, record.noise
    return page


PARSERS: list[Callable[[bytes], Any]] = [
    dx.parse_packet,
    dx.PageHeader.parse,
    dx.EgvRecord.parse,
    _egv_page,
    lambda data: dx.parse_xml_page(data, dx.RecordType.MANUFACTURING_DATA),
    dx.parse_xml_attributes,
    dx.parse_page_range,
    dx.parse_system_time,
    dx.parse_read_pages,
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


@pytest.mark.parametrize("commands", [None, dx.ANSWERS])
@FUZZ
@given(chunks=st.lists(st.one_of(st.binary(max_size=40), mutated(VALID), st.sampled_from(VALID))))
def test_decoder_never_raises_and_consumes_everything(
    commands: frozenset[int] | None, chunks: list[bytes]
) -> None:
    decoder = dx.FrameDecoder(commands)
    for chunk in chunks:
        for event in decoder.feed(chunk):
            assert isinstance(event, dx.Frame | dx.BadFrame | dx.Garbage)
            if isinstance(event, dx.Frame):
                assert dx.parse_packet(event.raw) == event.packet
    assert decoder.pending < dx.MAX_PACKET


@FUZZ
@given(
    frames=st.lists(st.sampled_from(VALID), min_size=1, max_size=6),
    noise=st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\x01", b"")), max_size=6),
)
def test_valid_frames_survive_garbage_that_cannot_start_a_frame(
    frames: list[bytes], noise: list[bytes]
) -> None:
    stream = b"".join(n + f for n, f in zip(noise + [b""] * len(frames), frames, strict=False))
    events = dx.FrameDecoder().feed(stream)
    assert [e.raw for e in events if isinstance(e, dx.Frame)] == frames


@FUZZ
@given(
    system=st.integers(0, 2**32 - 1),
    display=st.integers(0, 2**32 - 1),
    glucose=st.integers(0, 2**16 - 1),
    trend=st.integers(0, 255),
    size=st.sampled_from(sorted(dx.EGV_LAYOUTS)),
)
def test_egv_records_round_trip(
    system: int, display: int, glucose: int, trend: int, size: int
) -> None:
    before, after = dx.EGV_LAYOUTS[size]
    record = dx.EgvRecord(system, display, glucose, trend, bytes(before), b"\x07" * after)
    assert dx.EgvRecord.parse(record.build()) == record
