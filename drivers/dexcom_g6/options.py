"""The Dexcom G5/G6 driver's options: the keys of its ``[[devices]]`` table.

See the package docstring (`drivers.dexcom_g6`) for what each one means to a user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gatewayd.plugin import Bond, OptionReader, read_bond
from protocols.dexcom_g6.auth import normalize_transmitter_id

#: A G5/G6 wakes up, measures and advertises every 5 minutes (protocols.md §2.7).
WAKE_INTERVAL_S: Final = 300.0
_ADDRESS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


@dataclass(frozen=True, slots=True)
class G6Options:
    """The dexcom_g6 keys of a ``[[devices]]`` table (see the package docstring)."""

    transmitter_id: str
    alternate: bool = False
    #: The bond policy (`gatewayd.transport.gatt`); `true` reads as "auto", `false` as "never".
    bond: Bond = "auto"
    g6_glucose: bool = False
    #: One wake-up interval plus a margin: a scan that sees nothing has missed a wake-up.
    scan_timeout: float = WAKE_INTERVAL_S + 30.0
    #: Seconds of the transmitter's memory fetched when nothing of it is stored yet.
    history: float = 86_400.0
    address: str | None = None


def parse_options(reader: OptionReader) -> G6Options:
    """Read and check the driver's options (`ConfigError` naming the key on a bad value)."""
    d = G6Options(transmitter_id="000000")
    raw = reader.string("transmitter_id")
    try:
        transmitter_id = normalize_transmitter_id(raw)
    except ValueError:
        raise reader.error(
            "transmitter_id",
            "must be the 6 letters or digits printed on the transmitter (e.g. 8G1234), "
            f"got {raw!r}",
        ) from None
    address = reader.optional_string("address")
    if address is not None and not _ADDRESS.fullmatch(address):
        raise reader.error(
            "address", f"must be a Bluetooth address AA:BB:CC:DD:EE:FF, got {address!r}"
        )
    return G6Options(
        transmitter_id=transmitter_id,
        alternate=reader.boolean("alternate", d.alternate),
        bond=read_bond(reader, d.bond),
        g6_glucose=reader.boolean("g6_glucose", d.g6_glucose),
        scan_timeout=reader.number(
            "scan_timeout", d.scan_timeout, minimum=0, exclusive_minimum=True
        ),
        history=reader.number("history", d.history, minimum=0),
        address=address.upper() if address is not None else None,
    )


def expected_interval(_options: G6Options) -> float:
    """Seconds between readings of a connected transmitter (for the health check)."""
    return WAKE_INTERVAL_S
