"""The Dexcom receiver driver's keys of a ``[[devices]]`` table (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from gatewayd.plugin import OptionReader


@dataclass(frozen=True, slots=True)
class ReceiverOptions:
    """Where the receiver is, how often it is read, how far back a first contact reaches."""

    #: The serial device (e.g. /dev/serial/by-id/usb-Dexcom...); None: find it by USB VID:PID.
    path: str | None = None
    poll_interval: float = 60.0
    backfill_hours: float = 24.0
    #: Seconds one request may take (write and answer) before it is sent again.
    timeout: float = 2.0


def parse_options(reader: OptionReader) -> ReceiverOptions:
    """Read and check the driver's options."""
    d = ReceiverOptions()
    return ReceiverOptions(
        path=reader.optional_string("path"),
        poll_interval=reader.number(
            "poll_interval", d.poll_interval, minimum=0, exclusive_minimum=True
        ),
        backfill_hours=reader.number("backfill_hours", d.backfill_hours, minimum=0),
        timeout=reader.number("timeout", d.timeout, minimum=0, maximum=60, exclusive_minimum=True),
    )
