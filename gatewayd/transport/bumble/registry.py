"""Which `BumbleHost` the backend classes use: one per event loop.

`await configure_bumble("usb:0")` (or a `BumbleHost`) once in the loop, then plain
`BleakScanner(backend=BumbleScanner)` and `BleakClient(dev, backend=BumbleClient)` use it;
`await release_bumble()` closes it; `bumble_session(hci)` is the pair as an async context
manager. Keyed by loop (weakly), like bleak's BlueZ manager: pytest-asyncio's function-scoped
loops each get their own host, closed in fixture teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

from bleak.exc import BleakError

from gatewayd.transport.bumble.host import BumbleHost

__all__ = ["bumble_session", "configure_bumble", "current_bumble_host", "release_bumble"]

_hosts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BumbleHost] = (
    weakref.WeakKeyDictionary()
)


async def configure_bumble(hci_transport: str | BumbleHost) -> BumbleHost:
    """Open `hci_transport` (a Bumble transport name or a host) as this event loop's radio."""
    loop = asyncio.get_running_loop()
    if loop in _hosts:
        raise BleakError(f"a Bumble host is already configured for this loop: {_hosts[loop]!r}")
    host = hci_transport if isinstance(hci_transport, BumbleHost) else BumbleHost(hci_transport)
    await host.open()
    _hosts[loop] = host
    return host


async def release_bumble() -> None:
    """Close and forget this event loop's host (a no-op when there is none)."""
    host = _hosts.pop(asyncio.get_running_loop(), None)
    if host is not None:
        await host.close()


def current_bumble_host() -> BumbleHost:
    """This event loop's host, as set by `configure_bumble` (BleakError when there is none)."""
    try:
        return _hosts[asyncio.get_running_loop()]
    except KeyError:
        raise BleakError(
            "no Bumble host for this event loop: call gatewayd.transport.bumble.registry."
            "configure_bumble(...) first (or use bumble_backend(host))"
        ) from None


@contextlib.asynccontextmanager
async def bumble_session(hci_transport: str | BumbleHost) -> AsyncIterator[BumbleHost]:
    """`configure_bumble` on entry, `release_bumble` on exit."""
    host = await configure_bumble(hci_transport)
    try:
        yield host
    finally:
        await release_bumble()
