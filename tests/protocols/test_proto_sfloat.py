"""protocols.sfloat: IEEE 11073 SFLOAT words, specials kept explicit, exact encoding."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import ProtocolError
from protocols.sfloat import (
    SFloat,
    SFloatSpecial,
    build_sfloat,
    decode_sfloat,
    encode_sfloat,
    parse_sfloat,
)

# protocols.md §1.2, VERIFIED table
VERIFIED = [
    (0x0078, "7800", 120.0),
    (0x100C, "0c10", 120.0),
    (0xE4D2, "d2e4", 12.34),
    (0xF002, "02f0", 0.2),
    (0xF3E5, "e5f3", 99.7),
    (0xFFF1, "f1ff", -1.5),
    (0xF7FD, "fdf7", 204.5),
]
SPECIALS = [
    (0x07FF, SFloatSpecial.NAN),
    (0x0800, SFloatSpecial.NRES),
    (0x07FE, SFloatSpecial.POSITIVE_INFINITY),
    (0x0802, SFloatSpecial.NEGATIVE_INFINITY),
    (0x0801, SFloatSpecial.RESERVED),
]


@pytest.mark.parametrize(("word", "hex_bytes", "value"), VERIFIED)
def test_verified_words_decode_and_rebuild_bit_for_bit(
    word: int, hex_bytes: str, value: float
) -> None:
    decoded = parse_sfloat(bytes.fromhex(hex_bytes))
    assert isinstance(decoded, SFloat)
    assert decoded.value == value
    assert float(decoded) == value
    assert decoded.word == word
    assert build_sfloat(decoded) == bytes.fromhex(hex_bytes)


@pytest.mark.parametrize(("word", "special"), SPECIALS)
def test_specials_are_never_numbers(word: int, special: SFloatSpecial) -> None:
    decoded = decode_sfloat(word)
    assert decoded is special
    assert not isinstance(decoded, SFloat | float | int)
    with pytest.raises(TypeError):
        float(decoded)  # type: ignore[arg-type]
    assert encode_sfloat(decoded) == word
    assert special.word == word


def test_specials_only_with_exponent_zero() -> None:
    # 0x17FF is 2047 x 10^1, not NaN: specials are whole-word values
    assert decode_sfloat(0x17FF) == SFloat(2047, 1)
    assert decode_sfloat(0x1800) == SFloat(-2048, 1)


def test_equality_is_numeric_not_representational() -> None:
    assert SFloat(12, 1) == SFloat(120, 0)
    assert hash(SFloat(12, 1)) == hash(SFloat(120, 0))
    assert SFloat(12, 1).word != SFloat(120, 0).word
    assert SFloat(1, -1) != SFloat(1, 0)
    assert SFloat(0, 3) == SFloat(0, -3)
    assert SFloat(5, 0) != 5  # no silent mixing with plain numbers


@pytest.mark.parametrize(
    ("value", "mantissa", "exponent"),
    [
        (120, 120, 0),
        (12.34, 1234, -2),
        (0.2, 2, -1),
        (-1.5, -15, -1),
        (99.7, 997, -1),
        (120000, 1200, 2),
        (0.0, 0, 0),
        (2045, 2045, 0),
        (2046, 2045, 0),  # 2046e0 would be +INF: the nearest value is 2045
        (1e-8, 1, -8),
        (20450000000.0, 2045, 7),
    ],
)
def test_from_float_picks_an_exact_exponent(value: float, mantissa: int, exponent: int) -> None:
    encoded = SFloat.from_float(value)
    assert (encoded.mantissa, encoded.exponent) == (mantissa, exponent)


def test_from_float_exact_flag_and_range() -> None:
    assert SFloat.from_float(12345).value == 12340.0  # rounded half-even to 1234e1
    with pytest.raises(ProtocolError):
        SFloat.from_float(12345, exact=True)
    with pytest.raises(ProtocolError):
        SFloat.from_float(3e10)
    with pytest.raises(ProtocolError):
        SFloat.from_float(math.inf)
    assert SFloat.from_float(1e-12) == SFloat(0)


def test_encode_plain_floats_and_non_finite() -> None:
    assert encode_sfloat(120.0) == 0x0078
    assert encode_sfloat(math.nan) == 0x07FF
    assert encode_sfloat(math.inf) == 0x07FE
    assert encode_sfloat(-math.inf) == 0x0802


def test_constructor_refuses_out_of_range_and_special_collisions() -> None:
    for mantissa, exponent in ((2048, 0), (-2049, 0), (1, 8), (1, -9), (2047, 0), (-2048, 0)):
        with pytest.raises(ProtocolError):
            SFloat(mantissa, exponent)
    with pytest.raises(AttributeError):
        SFloat(1).mantissa = 2  # type: ignore[misc]


def test_parse_needs_two_bytes() -> None:
    for data in (b"", b"\x01", b"\x01\x02\x03"):
        with pytest.raises(ProtocolError):
            parse_sfloat(data)


def test_str_and_repr() -> None:
    assert str(SFloat(1234, -2)) == "12.34"
    assert repr(SFloat(12, 1)) == "SFloat(12, 1)"


@settings(max_examples=300)
@given(st.integers(0, 0xFFFF))
def test_every_word_round_trips(word: int) -> None:
    decoded = decode_sfloat(word)
    assert encode_sfloat(decoded) == word


@settings(max_examples=300)
@given(st.integers(-2045, 2045), st.integers(-8, 7))
def test_from_float_of_a_value_is_that_value(mantissa: int, exponent: int) -> None:
    exact = SFloat(mantissa, exponent)
    assert SFloat.from_float(exact.value) == exact


@settings(max_examples=300)
@given(st.floats(min_value=-2e10, max_value=2e10, allow_nan=False))
def test_from_float_is_the_nearest_representable_value(value: float) -> None:
    encoded = SFloat.from_float(value)
    assert abs(encoded.mantissa) <= 2045
    target = Fraction(Decimal(repr(value)))
    best = min(
        abs(
            target
            - Fraction(max(-2045, min(2045, round(target / Fraction(10) ** e)))) * Fraction(10) ** e
        )
        for e in range(-8, 8)
    )
    assert abs(encoded.fraction() - target) == best
