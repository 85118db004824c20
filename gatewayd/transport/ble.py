"""The hub's BLE stack choice (`[ble]`) and what drivers hand to bleak for it.

```toml
[ble]
stack = "bluez"        # default: the system's bluetoothd over D-Bus
adapter = "hci0"       # optional, BlueZ only: which adapter (default: BlueZ's default one)

# or: Bumble's host stack in-process on a dedicated controller
[ble]
stack = "bumble"
hci = "usb:0"          # required: a Bumble HCI transport (usb:0, serial:/dev/ttyUSB0,1000000,
                       # tcp-client:127.0.0.1:9001 for an emulator, ...)
```

Drivers stay stack-agnostic: they use `gatewayd.transport.gatt.GattLink`, which is written
against bleak's public API only:

    device = await BleakScanner.find_device_by_filter(match, **scanner_kwargs(cfg))
    client = await establish(device, cfg, disconnected_callback=on_lost)

and the daemon runs them inside `async with ble_session(cfg):`, which opens (and finally closes)
the Bumble host of the loop when `stack = "bumble"`, and on BlueZ registers the hub's pairing
agent (`gatewayd.transport.bluez.agent`: bluetoothd >= 5.72 refuses Just Works pairing without
one).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from bleak import BleakClient
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError

from gatewayd.errors import DeviceError, DeviceNotFound
from gatewayd.options import OptionReader
from gatewayd.transport.ble_errors import ble_error

__all__ = [
    "BUMBLE_MISSING",
    "BleConfig",
    "ble_session",
    "bumble_installed",
    "client_kwargs",
    "establish",
    "parse_ble_config",
    "scanner_kwargs",
]

Stack = Literal["bluez", "bumble"]
STACKS: tuple[Stack, ...] = ("bluez", "bumble")
#: Bumble transport schemes that make sense for a hub's radio (see bumble.transport).
HCI_SCHEMES = frozenset(
    {
        "usb", "pyusb", "serial", "tcp-client", "tcp-server", "udp", "ws-client", "ws-server",
        "unix", "unix-client", "hci-socket", "vhci", "android-netsim", "android-emulator",
    }
)  # fmt: skip
_ADAPTER = re.compile(r"hci[0-9]{1,3}")
#: Connect + MTU + discovery, per attempt on Bumble (a real link needs ~1-3 s).
CONNECT_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class BleConfig:
    """Which BLE host stack the hub uses."""

    stack: Stack = "bluez"
    #: Bumble only: the HCI transport of the controller (`usb:0`, `tcp-client:HOST:PORT`...).
    hci: str | None = None
    #: BlueZ only: the adapter name (`hci0`); None: BlueZ's default adapter.
    adapter: str | None = None


def parse_ble_config(reader: OptionReader) -> BleConfig:
    """Read the `[ble]` table (all of it: an unknown key is an error)."""
    stack: Stack = "bumble" if reader.choice("stack", STACKS, "bluez") == "bumble" else "bluez"
    hci = reader.optional_string("hci")
    adapter = reader.optional_string("adapter")
    reader.finish()
    if stack == "bumble":
        if not bumble_installed():
            raise reader.error("stack", BUMBLE_MISSING)
        if hci is None:
            raise reader.error(
                "hci", 'is required with stack = "bumble" (e.g. "usb:0", "tcp-client:HOST:PORT")'
            )
        _check_hci(reader, hci)
        if adapter is not None:
            raise reader.error("adapter", 'is a BlueZ option; with stack = "bumble" set hci')
    else:
        if hci is not None:
            raise reader.error("hci", 'is only used with stack = "bumble"')
        if adapter is not None and not _ADAPTER.fullmatch(adapter):
            raise reader.error(
                "adapter", f'must be a BlueZ adapter name like "hci0", got {adapter!r}'
            )
    return BleConfig(stack=stack, hci=hci, adapter=adapter)


#: Why `stack = "bumble"` cannot run on this install (Bumble is an optional extra: one of its
#: pinned dependencies has no build for 32-bit ARM, and the default BlueZ path needs none of it).
BUMBLE_MISSING = (
    '"bumble" needs the optional Bumble stack, which is not installed '
    "(pip install 'gatewayd[bumble]'; not available on 32-bit ARM)"
)


def bumble_installed() -> bool:
    """Whether the optional Bumble host stack can be imported here."""
    try:
        import bumble  # noqa: F401
    except ImportError:
        return False
    return True


def _check_hci(reader: OptionReader, hci: str) -> None:
    scheme, _, spec = hci.partition(":")
    if scheme not in HCI_SCHEMES:
        raise reader.error(
            "hci", f"must be a Bumble HCI transport ({', '.join(sorted(HCI_SCHEMES))}), got {hci!r}"
        )
    if scheme in ("tcp-client", "tcp-server", "udp"):
        host, _, port = spec.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise reader.error("hci", f"must be {scheme}:HOST:PORT, got {hci!r}")


def scanner_kwargs(cfg: BleConfig) -> dict[str, Any]:
    """Keyword arguments for `BleakScanner(...)` / `BleakScanner.find_device_by_filter(...)`."""
    if cfg.stack == "bumble":
        from gatewayd.transport.bumble.scanner import BumbleScanner

        return {"backend": BumbleScanner}
    return {"bluez": {"adapter": cfg.adapter}} if cfg.adapter else {}


def client_kwargs(cfg: BleConfig) -> dict[str, Any]:
    """Keyword arguments for `BleakClient(device, ...)`."""
    if cfg.stack == "bumble":
        from gatewayd.transport.bumble.client import BumbleClient

        return {"backend": BumbleClient}
    return {"bluez": {"adapter": cfg.adapter}} if cfg.adapter else {}


@contextlib.asynccontextmanager
async def ble_session(cfg: BleConfig) -> AsyncIterator[None]:
    """Bring the configured stack up for this event loop (Bumble: open the host; BlueZ: register
    the hub's pairing agent)."""
    if cfg.stack != "bumble":
        from gatewayd.transport.bluez.agent import bluez_agent

        async with bluez_agent():
            yield
        return
    from gatewayd.transport.bumble.registry import bumble_session

    assert cfg.hci is not None  # noqa: S101 - parse_ble_config guarantees it
    async with bumble_session(cfg.hci):
        yield


async def establish(
    device: BLEDevice,
    cfg: BleConfig,
    *,
    name: str | None = None,
    disconnected_callback: Callable[[BleakClient], None] | None = None,
    pair: bool = False,
    timeout: float = CONNECT_TIMEOUT,  # noqa: ASYNC109 - per attempt, as bleak's own timeout=
    max_attempts: int = 3,
) -> BleakClient:
    """A connected `BleakClient` (services discovered), or `DeviceNotFound` / `DeviceError`
    (bleak's errors mapped by `gatewayd.transport.gatt.ble_error`).

    BlueZ: up to `max_attempts` attempts of bleak-retry-connector's `establish_connection`
    (its per-attempt timeout, backoff and BlueZ's stale-connection workarounds; `timeout` is not
    used), each with a fresh `BleakClient` (see `_establish_bluez`). Bumble: one connect (+ MTU +
    discovery) bounded by `timeout`; there is no BlueZ state to work around, and the caller (the
    supervisor) owns retries and backoff.
    """
    label = name or device.name or device.address
    try:
        if cfg.stack == "bluez":
            return await _establish_bluez(
                device,
                cfg,
                label,
                disconnected_callback=disconnected_callback,
                pair=pair,
                max_attempts=max_attempts,
            )
        client = BleakClient(
            device,
            disconnected_callback=disconnected_callback,
            timeout=timeout,
            pair=pair,
            **client_kwargs(cfg),
        )
        try:
            async with asyncio.timeout(timeout):
                await client.connect()
        except BaseException:
            await client.disconnect()
            raise
    except TimeoutError as exc:
        raise DeviceNotFound(
            f"{label}: no connection within {timeout} s", device=device.address
        ) from exc
    except BleakError as exc:
        what = f"{label}: cannot connect"
        raise ble_error(exc, what, device=device.address, phase="connect") from exc
    return client


async def _establish_bluez(
    device: BLEDevice,
    cfg: BleConfig,
    label: str,
    *,
    disconnected_callback: Callable[[BleakClient], None] | None,
    pair: bool,
    max_attempts: int,
) -> BleakClient:
    """`establish_connection` one attempt at a time, each with a fresh `BleakClient`.

    bleak-retry-connector makes one client for all its attempts. bleak's BlueZ client marks
    itself connected when bluetoothd answers Connect and unmarks itself only on the device's
    ``Connected=false`` signal; when an attempt times out waiting for ``ServicesResolved``, bleak
    stops listening before bluetoothd sends that signal (it answers Disconnect first), so every
    later attempt with the same client fails at once with "Client is already connected": all
    attempts burnt in milliseconds. A fresh client per attempt makes each one a real attempt;
    between them bleak-retry-connector has already waited for the disconnection and backed off.

    `disconnected_callback` hears only of the client returned, once returned, and once: bleak
    also calls it inside `connect()` when bluetoothd answers "le-connection-abort-by-local" (the
    link came up and went; bleak then tries again), which would end the session about to start.
    It is also called when bluetoothd goes away (`gatewayd.transport.bluez.watch`): after a
    crash bleak never learns that the link dropped.
    """
    from bleak_retry_connector import establish_connection

    from gatewayd.transport.bluez.watch import when_bluez_lost

    connected: list[BleakClient] = []
    forget: list[Callable[[], None]] = []

    def on_disconnected(client: BleakClient) -> None:
        if not connected or client is not connected[0]:
            return
        connected.clear()
        for cancel in forget:
            cancel()
        if disconnected_callback is not None:
            disconnected_callback(client)

    for attempt in range(1, max_attempts + 1):
        try:
            client = await establish_connection(
                BleakClient,
                device,
                label,
                disconnected_callback=on_disconnected,
                max_attempts=1,
                pair=pair,
                **client_kwargs(cfg),
            )
        except (BleakError, TimeoutError):
            if attempt == max_attempts:
                raise
        else:
            connected.append(client)
            forget.append(when_bluez_lost(functools.partial(on_disconnected, client)))
            return client
    raise DeviceError(f"{label}: max_attempts must be >= 1", device=device.address)
