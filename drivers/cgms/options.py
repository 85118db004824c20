"""The CGMS driver's options: the driver's keys of a ``[[devices]]`` table (see `drivers.cgms`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gatewayd.plugin import BONDS, Bond, OptionReader, read_bond
from protocols.cgms.measurement import StatusOctetOrder

__all__ = ["BONDS", "Bond", "CgmsOptions", "expected_interval", "parse_options"]

#: Minutes between records when neither the options nor the sensor say (CGMs measure every 5).
DEFAULT_INTERVAL = 5
_ADDRESS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


@dataclass(frozen=True, slots=True)
class CgmsOptions:
    """The CGMS driver's keys of a ``[[devices]]`` table."""

    address: str | None = None
    name: str | None = None
    #: Minutes between records; None: ask the sensor (SOCP), else learn it, else 5.
    interval: int | None = None
    status_octet_order: StatusOctetOrder = StatusOctetOrder.SIG
    start_session: bool = False
    scan_timeout: float = 60.0
    bond: Bond = "auto"


def parse_options(reader: OptionReader) -> CgmsOptions:
    """Read and check the CGMS driver's options."""
    d = CgmsOptions()
    address = reader.optional_string("address")
    if address is not None and not _ADDRESS.fullmatch(address):
        raise reader.error(
            "address", f"must be a Bluetooth address AA:BB:CC:DD:EE:FF, got {address!r}"
        )
    interval = (
        reader.integer("interval", 0, minimum=1, maximum=254) if reader.has("interval") else None
    )
    order = reader.choice("status_octet_order", ("sig", "nordic"), d.status_octet_order.value)
    return CgmsOptions(
        address=address.upper() if address is not None else None,
        name=reader.optional_string("name"),
        interval=interval,
        status_octet_order=StatusOctetOrder(order),
        start_session=reader.boolean("start_session", d.start_session),
        scan_timeout=reader.number(
            "scan_timeout", d.scan_timeout, minimum=0, exclusive_minimum=True
        ),
        bond=read_bond(reader, d.bond),
    )


def expected_interval(options: CgmsOptions) -> float:
    """Seconds between a connected sensor's readings (for the health check)."""
    return 60.0 * (options.interval or DEFAULT_INTERVAL)
