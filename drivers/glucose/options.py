"""The glucose meter driver's options (`[[devices]]` keys) and the meter's time zone.

Meters keep a local wall clock without a zone (the Glucose Measurement base time is a bare
Date Time), so every reading's time is read in the zone named by `tz`; by default the hub's own
local zone (the `TZ` environment variable, else ``/etc/localtime``), with its daylight saving
rules, resolved when a session opens.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gatewayd.plugin import Bond, OptionReader, read_bond

#: The `tz` value meaning "the hub's local zone" (the default).
LOCAL = "local"
_ADDRESS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_OFFSET = re.compile(r"([+-])([01][0-9]|2[0-3]):?([0-5][0-9])")


@dataclass(frozen=True, slots=True)
class GlucoseOptions:
    """The glucose driver's keys of a ``[[devices]]`` table (see the package docstring)."""

    address: str | None = None
    name: str | None = None
    scan_timeout: float = 600.0
    bond: Bond = "auto"
    tz: str = LOCAL
    linger: float = 10.0

    def zone(self) -> tzinfo:
        """The zone the meter's clock runs in (`tz`), resolved now."""
        return zone(self.tz)


def parse_options(reader: OptionReader) -> GlucoseOptions:
    """Read and check the glucose driver's options."""
    d = GlucoseOptions()
    address = reader.optional_string("address")
    if address is not None and not _ADDRESS.fullmatch(address):
        raise reader.error(
            "address", f"must be a Bluetooth address AA:BB:CC:DD:EE:FF, got {address!r}"
        )
    tz = reader.string("tz", d.tz)
    try:
        zone(tz)
    except ValueError as exc:
        raise reader.error("tz", str(exc)) from None
    return GlucoseOptions(
        address=address.upper() if address is not None else None,
        name=reader.optional_string("name"),
        scan_timeout=reader.number(
            "scan_timeout", d.scan_timeout, minimum=0, exclusive_minimum=True
        ),
        bond=read_bond(reader, d.bond),
        tz=tz,
        linger=reader.number("linger", d.linger, minimum=0),
    )


def zone(name: str) -> tzinfo:
    """`local` (the hub's zone), an IANA zone name (`Europe/Berlin`, `UTC`) or a fixed offset
    (`+01:00`); ValueError for anything else."""
    if name == LOCAL:
        return hub_zone()
    if match := _OFFSET.fullmatch(name):
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f'must be "local", an IANA time zone (e.g. "Europe/Berlin") or an offset like '
            f'"+01:00", got {name!r}'
        ) from None


def hub_zone() -> tzinfo:
    """The hub's local zone: `TZ` when it names a zone, else ``/etc/localtime``, else the
    current UTC offset of the process (no daylight saving rules), else UTC."""
    configured = os.environ.get("TZ", "").removeprefix(":")
    if configured:
        try:
            return ZoneInfo(configured)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError):
        pass
    return datetime.now(UTC).astimezone().tzinfo or UTC
