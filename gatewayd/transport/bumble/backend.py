"""A bleak backend on Bumble's host stack: the one import drivers and tests need.

Two ways to pick the Bumble host (see `gatewayd.transport.bumble.host`):

    # per event loop (what the daemon does, through gatewayd.transport.ble):
    async with bumble_session("usb:0"):
        device = await BleakScanner.find_device_by_filter(match, backend=BumbleScanner)
        async with BleakClient(device, backend=BumbleClient) as client:
            ...

    # bound to one host (several radios in one loop):
    scanner_cls, client_cls = bumble_backend(host)
    BleakClient(device, backend=client_cls)
"""

from __future__ import annotations

from gatewayd.transport.bumble.client import BumbleClient
from gatewayd.transport.bumble.host import BumbleHost
from gatewayd.transport.bumble.registry import (
    bumble_session,
    configure_bumble,
    current_bumble_host,
    release_bumble,
)
from gatewayd.transport.bumble.scanner import BumbleDetails, BumbleScanner, advertisement_data

__all__ = [
    "BumbleClient",
    "BumbleDetails",
    "BumbleHost",
    "BumbleScanner",
    "advertisement_data",
    "bumble_backend",
    "bumble_session",
    "configure_bumble",
    "current_bumble_host",
    "release_bumble",
]


def bumble_backend(host: BumbleHost) -> tuple[type[BumbleScanner], type[BumbleClient]]:
    """Scanner and client backend classes bound to `host` instead of the loop's host."""

    class BoundBumbleScanner(BumbleScanner):
        bound_host = host

    class BoundBumbleClient(BumbleClient):
        bound_host = host

    return BoundBumbleScanner, BoundBumbleClient
