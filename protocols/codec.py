"""The construct boundary: the one place where construct's errors become `ProtocolError`.

Every codec of `protocols/` parses and builds its construct `Struct`s through these functions
(DESIGN.md §2; STYLE.md habit 2: third-party exceptions never cross a layer boundary unwrapped):

* `parse_construct(con, data, what)` — `con.parse(data)`; any construct, `struct`, or adapter
  error becomes `ProtocolError(f"{what}: ...", data)`.
* `build_construct(con, value, what)` — `con.build(value)`; a value that does not fit the
  format becomes `ProtocolError(f"{what}: cannot build: ...")`.
* `compile_parser(con)` / `parse_compiled(parser, stream, what)` — the hot-path variant for a
  layout parsed thousands of times (CGM measurement records): `con.compile()` once, then the
  compiled parse function on a shared stream and root context, without `parse_stream`'s
  per-call setup (bench/cgms_decode.py measures the difference).
* `enum_or_int(enum, value)` — the member of an `IntEnum` for a decoded value, or the bare int
  for a reserved one (devices send reserved codes; they are kept, never rejected).
"""

from __future__ import annotations

import io
import struct
from enum import IntEnum
from typing import Any, TypeVar, cast

import construct as cs

from protocols.errors import ProtocolError

__all__ = [
    "build_construct",
    "compile_parser",
    "enum_or_int",
    "parse_compiled",
    "parse_construct",
]

_E = TypeVar("_E", bound=IntEnum)


def enum_or_int(enum: type[_E], value: int) -> _E | int:
    """The member of `enum` for `value`, or the bare int for a reserved value."""
    try:
        return enum(value)
    except ValueError:
        return value


#: Errors a construct parser may raise on bad input besides ConstructError (compiled parsers
#: unpack short reads with `struct`; adapters may raise ValueError).
_PARSE_ERRORS = (cs.ConstructError, struct.error, ValueError, TypeError, KeyError, IndexError)


def parse_construct(con: cs.Construct[Any, Any], data: bytes, what: str) -> Any:
    """`con.parse(data)`; `ProtocolError` on any failure (callers check lengths themselves)."""
    try:
        return con.parse(data)
    except ProtocolError:
        raise
    except _PARSE_ERRORS as exc:
        raise ProtocolError(f"{what}: {exc}", bytes(data)) from exc


def build_construct(con: cs.Construct[Any, Any], value: Any, what: str) -> bytes:
    """`con.build(value)`; `ProtocolError` when the value does not fit the format."""
    try:
        return con.build(value)
    except ProtocolError:
        raise
    except _PARSE_ERRORS as exc:
        raise ProtocolError(f"{what}: cannot build: {exc}") from exc


#: The root context `Construct.parse_stream` would build per call; compiled parsers only read
#: it (they make their own child context), so one is shared by every parse.
_CONTEXT: Any = cs.Container(_parsing=True, _building=False, _sizing=False)
_CONTEXT["_params"] = _CONTEXT


def compile_parser(con: cs.Construct[Any, Any]) -> cs.Compiled:
    """`con` compiled (construct's code generator); parse with `parse_compiled`."""
    # compile() returns a `Compiled` (whose `parsefunc` is public); the stubs say Construct
    return cast(cs.Compiled, con.compile())


def parse_compiled(parser: cs.Compiled, stream: io.BytesIO, what: str) -> Any:
    """`parser` on `stream` at its position (= `parse_stream()` minus its per-call setup).

    `ProtocolError` on any failure, as `parse_construct`.
    """
    try:
        return parser.parsefunc(stream, _CONTEXT)
    except _PARSE_ERRORS as exc:
        raise ProtocolError(f"{what}: {exc}") from exc
