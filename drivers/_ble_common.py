"""BLE plumbing shared by the GATT drivers (`drivers.cgms`, `drivers.glucose`, `drivers.dexcom_g6`).

What is the same in every one of them: the scan for one device (`find_device`), our own bounded
disconnect (`disconnect`), Device Information strings (`gatt_text`), and `BleSessionBase`: the
client slot and the queue the bleak callbacks feed (`(uuid, bytes)` per value, `LOST` when the
link drops). Bonding and error mapping differ per device and stay in each driver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from gatewayd.errors import DeviceError, DeviceNotFound, LinkLost
from gatewayd.transport.ble import BleConfig, scanner_kwargs

__all__ = [
    "CLOSE_TIMEOUT",
    "LOST",
    "SECURITY_ERRORS",
    "BleSessionBase",
    "disconnect",
    "find_device",
    "gatt_text",
    "link_failure",
]

#: Seconds for our own disconnect when the session closes.
CLOSE_TIMEOUT: Final = 5.0
#: ATT errors that mean "bond first": insufficient authentication / encryption / key size.
SECURITY_ERRORS: Final = frozenset({0x05, 0x0F, 0x0C})
LOST: Final = object()  # queue item: the link dropped


def gatt_text(value: bytes | bytearray) -> str:
    """A GATT string characteristic as text (padding and line ends stripped)."""
    return bytes(value).decode("utf-8", "replace").strip("\x00 \r\n")


async def disconnect(client: BleakClient) -> None:
    """Our own disconnect, bounded by `CLOSE_TIMEOUT`; its errors do not matter any more."""
    with contextlib.suppress(BleakError, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await client.disconnect()


async def find_device(
    match: Callable[[BLEDevice, AdvertisementData], bool],
    cfg: BleConfig,
    *,
    timeout: float,  # noqa: ASYNC109 - the scan's own duration, passed to bleak
    wanted: str,
    device_id: str,
    **scan: Any,
) -> BLEDevice:
    """The first device `match` accepts within `timeout` s (`scan`: extra scanner arguments);
    `DeviceNotFound` ("<wanted> did not advertise ...") when none does.
    """
    kwargs = {**scanner_kwargs(cfg), **scan}
    device = await BleakScanner.find_device_by_filter(match, timeout=timeout, **kwargs)
    if device is None:
        raise DeviceNotFound(f"{wanted} did not advertise within {timeout:g} s", device=device_id)
    return device


def link_failure(
    client: BleakClient | None, what: str, exc: BaseException, *, device: str
) -> DeviceError:
    """What a GATT operation that failed with a bleak error or timeout `exc` means: `LinkLost`
    when the link is gone (or was never there), else `DeviceError`.
    """
    if client is None or not client.is_connected:
        return LinkLost(f"{what}: the link dropped", device=device)
    return DeviceError(f"{what}: {exc or 'no answer'}", device=device)


class BleSessionBase:
    """The connected client (None outside `async with`) and the queue of what the link sends."""

    def __init__(self) -> None:
        self._client: BleakClient | None = None
        self._queue: asyncio.Queue[object] = asyncio.Queue()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            await disconnect(client)

    def _require(self) -> BleakClient:
        if self._client is None:
            raise RuntimeError("readings() outside `async with`")
        return self._client

    def _on_disconnect(self, _client: BleakClient) -> None:
        self._queue.put_nowait(LOST)

    def _on_value(self, characteristic: BleakGATTCharacteristic, data: bytearray) -> None:
        self._queue.put_nowait((characteristic.uuid, bytes(data)))
