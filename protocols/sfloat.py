"""IEEE 11073-20601 16-bit SFLOAT: concentration, trend, quality and alert levels of CGMS/GLS.

Layout (protocols.md §1.2): a little-endian 16-bit word; bits 15..12 = exponent E (signed 4-bit,
-8..+7), bits 11..0 = mantissa M (signed 12-bit); value = M x 10^E.
Special values are tested on the whole word BEFORE sign extension (exponent 0):

==========  ==============================  =======================
word        meaning                         `SFloatSpecial` member
==========  ==============================  =======================
0x07FF      NaN (not a number)              `NAN`
0x0800      NRes (not at this resolution)   `NRES`
0x07FE      +INFINITY                       `POSITIVE_INFINITY`
0x0802      -INFINITY                       `NEGATIVE_INFINITY`
0x0801      reserved for future use         `RESERVED`
==========  ==============================  =======================

Public API:

* `SFloat(mantissa, exponent)` — an exact finite value. It keeps its wire representation, so a
  parsed word is rebuilt bit for bit (0x100C and 0x0078 both mean 120), while `==` and `hash`
  compare the exact numeric value (`SFloat(12, 1) == SFloat(120, 0)`). `float(x)` / `x.value`
  give the nearest float; `SFloat.from_float(v)` picks the exponent that represents `v` exactly
  where possible (else rounds to the nearest representable value).
* `SFloatSpecial` — the five specials (`.word` is the wire word); never a number. A decoded
  field is typed `SFloatValue = SFloat | SFloatSpecial`, so code that wants a number has to
  handle the specials (±INFINITY on a glucose value = below/above the measurable range, §1.2).
* `decode_sfloat(word) -> SFloatValue`, `encode_sfloat(value) -> word`, and byte-level
  `parse_sfloat(data)` / `build_sfloat(value)`. `encode_sfloat` also takes a plain `float`
  (NaN and ±inf map to the matching special words).
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal
from enum import Enum
from fractions import Fraction
from typing import Final

import construct as cs

from protocols.codec import build_construct, parse_construct
from protocols.errors import ProtocolError

#: Largest mantissa magnitude of an ordinary value (0x07FD); larger ones collide with specials.
MANTISSA_MAX: Final = 2045
EXPONENT_MIN: Final = -8
EXPONENT_MAX: Final = 7


class SFloatSpecial(Enum):
    """The reserved SFLOAT words; `.value` is the 16-bit word (not a number)."""

    NAN = 0x07FF
    NRES = 0x0800
    POSITIVE_INFINITY = 0x07FE
    NEGATIVE_INFINITY = 0x0802
    RESERVED = 0x0801

    @property
    def word(self) -> int:
        """The 16-bit wire word."""
        return int(self.value)


_SPECIAL_WORDS: Final = {s.value: s for s in SFloatSpecial}
_POW10: Final[tuple[int, ...]] = tuple(10**i for i in range(9))


class SFloat:
    """An exact finite SFLOAT value M x 10^E that remembers its representation."""

    __slots__ = ("exponent", "mantissa")

    mantissa: int
    exponent: int

    def __init__(self, mantissa: int, exponent: int = 0) -> None:
        if not -2048 <= mantissa <= 2047 or not EXPONENT_MIN <= exponent <= EXPONENT_MAX:
            raise ProtocolError(f"SFLOAT out of range: {mantissa}e{exponent}")
        if exponent == 0 and (mantissa & 0xFFF) in _SPECIAL_WORDS:
            raise ProtocolError(f"SFLOAT {mantissa}e0 collides with a special value")
        object.__setattr__(self, "mantissa", mantissa)
        object.__setattr__(self, "exponent", exponent)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("SFloat is immutable")

    def __reduce__(self) -> tuple[type[SFloat], tuple[int, int]]:
        return SFloat, (self.mantissa, self.exponent)  # copy/pickle despite __setattr__

    @classmethod
    def from_float(cls, value: float, *, exact: bool = False) -> SFloat:
        """The SFLOAT for `value`, exact when its shortest decimal form fits.

        The exponent is the one of `value`'s shortest decimal representation (`repr`), raised
        only as far as the mantissa needs to fit 12 bits: 120 → 120e0, 12.34 → 1234e-2,
        120000 → 1200e2. If no exact form exists the result is the nearest representable value
        (ties: the finer exponent; 12345 → 1234e1, 2046 → 2045e0), unless `exact` is set
        (then `ProtocolError`). Out-of-range or
        non-finite values raise `ProtocolError` (encode specials with `SFloatSpecial`).
        """
        if not math.isfinite(value):
            raise ProtocolError(f"{value} is not finite: use SFloatSpecial")
        if abs(value) >= (MANTISSA_MAX + 0.5) * 10**EXPONENT_MAX:
            raise ProtocolError(f"{value!r} is beyond the SFLOAT range")
        sign, digits, exp = Decimal(repr(float(value))).normalize().as_tuple()
        if not isinstance(exp, int):  # pragma: no cover - finite values have an int exponent
            raise ProtocolError(f"cannot encode {value}")
        mantissa = int("".join(map(str, digits))) * (-1 if sign else 1)
        while exp > 0 and abs(mantissa) * 10 <= MANTISSA_MAX:  # prefer 120e0 over 12e1
            mantissa, exp = mantissa * 10, exp - 1
        if exp >= EXPONENT_MIN and abs(mantissa) <= MANTISSA_MAX and exp <= EXPONENT_MAX:
            return cls(mantissa, exp)
        if exact:
            raise ProtocolError(f"{value!r} has no exact SFLOAT representation")
        exact_value = Decimal(mantissa).scaleb(exp)
        candidates = []
        for e in range(EXPONENT_MIN, EXPONENT_MAX + 1):  # the nearest of each exponent's grid
            m = int(exact_value.scaleb(-e).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
            m = max(-MANTISSA_MAX, min(MANTISSA_MAX, m))
            candidates.append((abs(exact_value - Decimal(m).scaleb(e)), e, m))
        _, e, m = min(candidates)  # ties go to the finer exponent
        return cls(m, e) if m else cls(0, 0)

    @property
    def value(self) -> float:
        """The nearest float (correctly rounded: 1234e-2 → 12.34)."""
        if self.exponent >= 0:
            return float(self.mantissa * _POW10[self.exponent])
        return self.mantissa / _POW10[-self.exponent]

    def fraction(self) -> Fraction:
        """The exact value."""
        return Fraction(self.mantissa) * Fraction(10) ** self.exponent

    @property
    def word(self) -> int:
        """The 16-bit wire word."""
        return ((self.exponent & 0xF) << 12) | (self.mantissa & 0xFFF)

    def __float__(self) -> float:
        return self.value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SFloat):
            return NotImplemented
        return self.fraction() == other.fraction()

    def __hash__(self) -> int:
        return hash(self.fraction())

    def __repr__(self) -> str:
        return f"SFloat({self.mantissa}, {self.exponent})"

    def __str__(self) -> str:
        return format(Decimal(self.mantissa).scaleb(self.exponent), "f")


#: A decoded SFLOAT field: a number, or explicitly one of the special values.
SFloatValue = SFloat | SFloatSpecial

#: Decoded words: SFloat is immutable, so each word's object is shared (decoding is a lookup).
_DECODED: dict[int, SFloatValue] = dict(_SPECIAL_WORDS)


def decode_sfloat(word: int) -> SFloatValue:
    """The value of a 16-bit SFLOAT word (specials first, then sign extension)."""
    try:
        return _DECODED[word]
    except KeyError:
        pass
    if not 0 <= word <= 0xFFFF:
        raise ProtocolError(f"SFLOAT word out of range: {word}")
    mantissa = word & 0x0FFF
    exponent = word >> 12
    result = SFloat(
        mantissa - 0x1000 if mantissa >= 0x800 else mantissa,
        exponent - 16 if exponent >= 8 else exponent,
    )
    _DECODED[word] = result
    return result


def encode_sfloat(value: SFloatValue | float) -> int:
    """The 16-bit word of `value`; plain floats go through `SFloat.from_float`."""
    if isinstance(value, SFloat | SFloatSpecial):
        return value.word
    if math.isnan(value):
        return SFloatSpecial.NAN.word
    if math.isinf(value):
        return (
            SFloatSpecial.POSITIVE_INFINITY if value > 0 else SFloatSpecial.NEGATIVE_INFINITY
        ).word
    return SFloat.from_float(value).word


#: The wire form of an SFLOAT: one little-endian 16-bit word (`decode_sfloat` reads its fields).
SFLOAT_WORD = cs.Int16ul


def parse_sfloat(data: bytes) -> SFloatValue:
    """Decode exactly two little-endian bytes."""
    if len(data) != 2:
        raise ProtocolError("an SFLOAT is two bytes", bytes(data))
    return decode_sfloat(parse_construct(SFLOAT_WORD, data, "SFLOAT"))


def build_sfloat(value: SFloatValue | float) -> bytes:
    """The two little-endian bytes of `value`."""
    return build_construct(SFLOAT_WORD, encode_sfloat(value), "SFLOAT")
