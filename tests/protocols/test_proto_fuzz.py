"""Every parser of protocols/: arbitrary or mutated bytes give a value or ProtocolError, nothing
else, and whatever parses builds back to bytes that parse to the same value."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.cgms.measurement import (
    CgmMeasurement,
    StatusOctetOrder,
    StatusOctets,
    build_measurements,
    decode_records,
    parse_measurements,
)
from protocols.cgms.socp import SocpPacket
from protocols.cgms.state import (
    CgmFeature,
    CgmStatus,
    SensorStatus,
    SessionRunTime,
    SessionStartTime,
)
from protocols.errors import ProtocolError
from protocols.gatt.racp import parse_racp
from protocols.glucose.context import GlucoseContext
from protocols.glucose.feature import build_feature, parse_feature
from protocols.glucose.measurement import GlucoseMeasurement
from protocols.sfloat import SFloat, SFloatSpecial, decode_sfloat, parse_sfloat


def _measurements_sig(data: bytes) -> Any:
    return parse_measurements(data)


def _measurements_nordic(data: bytes) -> Any:
    return parse_measurements(data, StatusOctetOrder.NORDIC)


def _rebuild_measurements_sig(value: Any) -> bytes:
    return build_measurements(value)


def _rebuild_measurements_nordic(value: Any) -> bytes:
    return build_measurements(value, StatusOctetOrder.NORDIC)


def _sst(data: bytes) -> Any:
    value = SessionStartTime.parse(data)
    value.to_utc()
    return value


def _glucose(data: bytes) -> Any:
    value = GlucoseMeasurement.parse(data)
    _ = value.glucose_mgdl, value.time(UTC)
    return value


#: name → (parse, build, valid vectors to mutate)
PARSERS: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], bytes], list[str]]] = {
    "measurement_sig": (
        _measurements_sig,
        _rebuild_measurements_sig,
        [
            "06000c100600",
            "0fe3d2e405000214ff02f0e5f38e3f",
            "06000c100500 06000c100600",
            "0c036200a005f1ff5f009110",
            "0780fa001e0002",
        ],
    ),
    "measurement_nordic": (
        _measurements_nordic,
        _rebuild_measurements_nordic,
        ["0780fa001e0002", "0fe3d2e405000214ff02f0e5f38e3f"],
    ),
    "feature": (CgmFeature.parse, CgmFeature.build, ["00900159c45c", "00800059ffff"]),
    "status": (CgmStatus.parse, CgmStatus.build, ["a0050004007bd3", "a005000400"]),
    "session_start_time": (_sst, SessionStartTime.build, ["e80705020a0f002400a63a"]),
    "session_run_time": (SessionRunTime.parse, SessionRunTime.build, ["5001c632", "5001"]),
    "socp": (
        SocpPacket.parse,
        SocpPacket.build,
        ["1a5cb0", "0105cdbe", "1c1a016d60", "04700 0a00511700800000 0e3ba", "0d4600"],
    ),
    "racp": (
        parse_racp,
        lambda message: message.build(),
        [
            "0101",
            "010301a005",
            "010401a005dc05",
            "0300",
            "05002001",
            "06000106",
            "010302e80705020 71e00",
        ],
    ),
    "glucose_measurement": (
        _glucose,
        GlucoseMeasurement.build,
        [
            "030700e8070502071e0000006ab011",
            "1f0800e8070502173200" + "0f00" + "3bc0" + "21" + "2100",
        ],
    ),
    "glucose_context": (
        GlucoseContext.parse,
        GlucoseContext.build,
        ["020700 01", "ff0700 00 02 3200 02 51 0807 3c 01 04d0 41f0"],
    ),
    "glucose_feature": (parse_feature, build_feature, ["0304"]),
    "sfloat": (parse_sfloat, lambda value: value.word.to_bytes(2, "little"), ["7800", "ff07"]),
}


def check(name: str, data: bytes) -> None:
    """Parse `data`; on success, the rebuilt bytes parse to the same value."""
    parse, build, _ = PARSERS[name]
    try:
        value = parse(data)
    except ProtocolError:
        return
    rebuilt = build(value)
    assert parse(rebuilt) == value


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_valid_vectors_parse(name: str) -> None:
    parse, build, vectors = PARSERS[name]
    for vector in vectors:
        data = bytes.fromhex(vector.replace(" ", ""))
        assert build(parse(data)) == data


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=40))
def test_fuzz_arbitrary_bytes(name: str, data: bytes) -> None:
    check(name, data)


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=300, deadline=None)
@given(draw=st.data())
def test_fuzz_mutated_vectors(name: str, draw: st.DataObject) -> None:
    vectors = PARSERS[name][2]
    data = bytearray.fromhex(draw.draw(st.sampled_from(vectors)).replace(" ", ""))
    for _ in range(draw.draw(st.integers(1, 4))):
        action = draw.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        position = draw.draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] ^= 1 << draw.draw(st.integers(0, 7))
        elif action == "truncate":
            del data[position:]
        elif action == "insert":
            data.insert(position, draw.draw(st.integers(0, 255)))
        elif data:
            del data[position]
    check(name, bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_decode_records_is_total(data: bytes) -> None:
    consumed = b""
    for record, result in decode_records(data):
        consumed += record
        assert isinstance(result, CgmMeasurement | ProtocolError)
    assert consumed == data


# -- generated values round trip -----------------------------------------------------------------

SFLOATS = st.one_of(
    st.builds(SFloat, st.integers(-2045, 2045), st.integers(-8, 7)),
    st.sampled_from(list(SFloatSpecial)),
    st.integers(0, 0xFFFF).map(decode_sfloat),
)
STATUS = st.integers(0, 0xFFFFFF).map(SensorStatus)


@settings(max_examples=300, deadline=None)
@given(
    glucose=SFLOATS,
    offset=st.integers(0, 0xFFFF),
    status=STATUS,
    trend=st.none() | SFLOATS,
    quality=st.none() | SFLOATS,
    crc=st.booleans(),
    order=st.sampled_from(list(StatusOctetOrder)),
)
def test_generated_measurements_round_trip(
    glucose: Any,
    offset: int,
    status: SensorStatus,
    trend: Any,
    quality: Any,
    crc: bool,
    order: StatusOctetOrder,
) -> None:
    record = CgmMeasurement(glucose, offset, status, trend, quality, None, crc)
    data = record.build(order)
    assert data[0] == len(data)
    (back,) = parse_measurements(data, order)
    assert back.status == status
    assert (back.glucose, back.time_offset, back.trend, back.quality, back.e2e_crc) == (
        glucose,
        offset,
        trend,
        quality,
        crc,
    )
    assert back.octets == StatusOctets(sum(1 << i for i in range(3) if status >> 8 * i & 0xFF))
    assert back.build(order) == data
