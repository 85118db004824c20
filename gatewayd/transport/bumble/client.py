"""`BumbleClient`: bleak's client contract on a Bumble host.

`BleakClient(device, backend=BumbleClient)` works unmodified: connect (LE connection, ATT MTU
exchange, full discovery of services, characteristics and descriptors into a
`BleakGATTServiceCollection`), read/write of characteristics and descriptors, write with and
without response, notifications (preferred) or indications, pairing, and `disconnected_callback`
on every disconnection after `connect()` returned, whoever caused it (services are cleared first,
as in the BlueZ backend; a `connect()` that fails raises instead).
ATT error responses raise `BleakGATTProtocolError` with the ATT code; a request cut short by a
disconnection raises `BleakError`; an unanswered request raises `TimeoutError`.

Connecting to a plain address string scans for it first, to learn whether it is public or random
(bleak's BlueZ backend scans too); a `BLEDevice` from `BumbleScanner` or ``"AA:...:FF/P"`` (public)
connects directly.

Pairing (`pair=True` or `pair()`): LE Secure Connections "just works" with bonding (the hub has no
display or keyboard, so no MITM protection, no passkey, no numeric comparison, no OOB). Keys live in
the host's in-memory key store: reconnecting to a bonded peer re-encrypts the link, but bonds are
lost when the host closes. `unpair()` forgets the keys and disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import structlog
from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bumble import att, hci
from bumble.core import BaseBumbleError
from bumble.device import Connection, Peer
from bumble.gatt_client import CharacteristicProxy

from gatewayd.transport.bumble.gatt import discover, gatt_errors
from gatewayd.transport.bumble.host import CLOSE_DISCONNECT_TIMEOUT, BumbleHost
from gatewayd.transport.bumble.registry import current_bumble_host
from gatewayd.transport.bumble.scanner import BumbleDetails

__all__ = ["BumbleClient"]

_CCCD = "00002902-0000-1000-8000-00805f9b34fb"
log = structlog.get_logger().bind(component="ble_bumble")


class BumbleClient(BaseBleakClient):
    """Bleak client backend on the Bumble host of the running loop (or a bound one)."""

    #: Set on the subclasses made by `bumble_backend(host)`; None: the loop's configured host.
    bound_host: ClassVar[BumbleHost | None] = None

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        services: set[str] | None = None,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        **kwargs: Any,  # bleak passes the other platforms' options (bluez=, winrt=): not ours
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        self._peer: hci.Address | None = None
        self._name: str | None = None
        if isinstance(address_or_ble_device, BLEDevice):
            details = address_or_ble_device.details
            self._peer = details.address if isinstance(details, BumbleDetails) else None
            self._name = address_or_ble_device.name
        elif address_or_ble_device.upper().endswith("/P"):
            self.address = address_or_ble_device[:-2]
            self._peer = hci.Address(self.address, hci.Address.PUBLIC_DEVICE_ADDRESS)
        self._requested_services = services
        self._host: BumbleHost | None = None
        self._connection: Connection | None = None
        self._ready = False  # connect() finished: a disconnection is reported from then on
        self._subscribers: dict[int, Callable[[bytes], None]] = {}

    @classmethod
    def host(cls) -> BumbleHost:
        """The host this client class uses."""
        return cls.bound_host or current_bumble_host()

    @property
    def name(self) -> str:
        """The advertised name, else the address with dashes (as bleak documents)."""
        return self._name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        """The negotiated ATT MTU (23 before the exchange)."""
        return self._connection.att_mtu if self._connection else att.ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        """Whether the LE link is up."""
        return self._connection is not None

    # -- connection ------------------------------------------------------------------------------

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Connect, exchange the MTU, (pair or re-encrypt a bonded link,) discover everything."""
        if self.is_connected:
            raise BleakError("Client is already connected")
        timeout: float = kwargs.get("timeout", self._timeout)
        host = self._host = type(self).host()
        # As in the BlueZ backend: finding the device, then connecting, each within `timeout`.
        peer = self._peer or await self._find(host, timeout)
        async with asyncio.timeout(timeout):
            with gatt_errors(self.address, "connect"):
                connection = await host.connect(peer)
            self._attach(connection)
            try:
                await self._set_up(host, connection, pair=pair)
            except BaseException:
                await self._abandon(connection)
                raise
        self._ready = True
        log.debug("bumble_connected", peer=str(peer), mtu=connection.att_mtu)

    async def _find(self, host: BumbleHost, seconds: float) -> hci.Address:
        try:
            async with asyncio.timeout(seconds):
                found = await host.find_address(self.address)
        except TimeoutError:
            raise BleakDeviceNotFoundError(
                self.address, f"Device with address {self.address} was not found."
            ) from None
        self._peer = found
        return found

    async def _set_up(self, host: BumbleHost, connection: Connection, *, pair: bool) -> None:
        with gatt_errors(self.address, "security"):
            if pair:
                await connection.pair()
            elif await self._bonded(host, connection):
                await connection.encrypt()
        try:
            with gatt_errors(self.address, "MTU exchange"):
                await Peer(connection).request_mtu(host.mtu)
        except BleakGATTProtocolError as exc:  # optional procedure: stay at 23
            log.info("bumble_mtu_exchange_refused", peer=self.address, code=int(exc.code))
        with gatt_errors(self.address, "service discovery"):
            self.services = await discover(
                connection, self._requested_services, lambda: self.mtu_size
            )

    @staticmethod
    async def _bonded(host: BumbleHost, connection: Connection) -> bool:
        keystore = host.device.keystore
        keys = await keystore.get(str(connection.peer_address)) if keystore else None
        return keys is not None and (keys.ltk is not None or keys.ltk_central is not None)

    async def _abandon(self, connection: Connection) -> None:
        if connection is not self._connection:
            return  # the link is already down
        with contextlib.suppress(TimeoutError, BaseBumbleError):
            async with asyncio.timeout(CLOSE_DISCONNECT_TIMEOUT):
                await connection.disconnect()
        self._on_disconnection(connection, hci.HCI_CONNECTION_TERMINATED_BY_LOCAL_HOST_ERROR)

    def _attach(self, connection: Connection) -> None:
        self._connection = connection

        def on_disconnection(reason: int) -> None:
            self._on_disconnection(connection, reason)

        connection.on(connection.EVENT_DISCONNECTION, on_disconnection)

    def _on_disconnection(self, connection: Connection, reason: int) -> None:
        if connection is not self._connection:
            return  # an earlier link of this client
        was_ready, self._ready = self._ready, False
        self._connection = None
        self.services = None
        self._subscribers.clear()
        log.debug("bumble_disconnected", peer=self.address, reason=reason)
        if was_ready and self._disconnected_callback is not None:
            try:
                self._disconnected_callback()
            except Exception:  # runs inside Bumble's event dispatch: never break it
                log.exception("bumble_disconnected_callback_failed", peer=self.address)

    async def disconnect(self) -> None:
        """Disconnect; the disconnected callback has run when this returns."""
        connection = self._connection
        if connection is None:
            return
        try:
            async with asyncio.timeout(CLOSE_DISCONNECT_TIMEOUT):
                await connection.disconnect()
        except (TimeoutError, BaseBumbleError) as exc:
            log.warning("bumble_disconnect_failed", peer=self.address, error=repr(exc))
        finally:
            self._on_disconnection(connection, hci.HCI_CONNECTION_TERMINATED_BY_LOCAL_HOST_ERROR)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Pair and bond ("just works", LE Secure Connections)."""
        connection = self._require()
        with gatt_errors(self.address, "pairing"):
            await connection.pair()

    async def unpair(self) -> None:
        """Forget the bond with the peer and disconnect."""
        host = self._host or type(self).host()
        keystore = host.device.keystore
        peers = {str(self._peer)} if self._peer else {self.address, f"{self.address}/P"}
        for name in peers:
            with contextlib.suppress(KeyError):
                if keystore is not None:
                    await keystore.delete(name)
        await self.disconnect()

    # -- GATT ------------------------------------------------------------------------------------

    def _require(self) -> Connection:
        if self._connection is None:
            raise BleakError("Not connected")
        return self._connection

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        """Read a characteristic value (long values are read in blobs)."""
        gatt = self._require().gatt_client
        if use_cached and (cached := gatt.cached_values.get(characteristic.handle)):
            return bytearray(cached[1])
        with gatt_errors(self.address, f"read {characteristic.uuid}"):
            return bytearray(await gatt.read_value(characteristic.handle))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        """Read a descriptor value."""
        gatt = self._require().gatt_client
        with gatt_errors(self.address, f"read descriptor {descriptor.handle}"):
            return bytearray(await gatt.read_value(descriptor.handle))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        """Write with response (a request, long values prepared) or without (a command)."""
        gatt = self._require().gatt_client
        value = bytes(data)
        if not response and len(value) > characteristic.max_write_without_response_size:
            raise BleakError(
                f"{len(value)} bytes exceed max_write_without_response_size "
                f"({characteristic.max_write_without_response_size})"
            )
        with gatt_errors(self.address, f"write {characteristic.uuid}"):
            await gatt.write_value(characteristic.handle, value, with_response=response)

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        """Write a descriptor value (always with response)."""
        gatt = self._require().gatt_client
        with gatt_errors(self.address, f"write descriptor {descriptor.handle}"):
            await gatt.write_value(descriptor.handle, bytes(data), with_response=True)

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        """Subscribe through the CCCD: notifications when offered, else indications."""
        gatt = self._require().gatt_client
        handle = characteristic.handle
        if handle in self._subscribers:
            raise BleakError(f"notifications already started on {characteristic.uuid}")
        if characteristic.get_descriptor(_CCCD) is None:
            raise BleakError(f"{characteristic.uuid} has no Client Characteristic Configuration")
        proxy: CharacteristicProxy[bytes] = characteristic.obj

        def on_value(value: bytes) -> None:
            try:
                callback(bytearray(value))
            except Exception:  # runs inside Bumble's packet dispatch: never break it
                log.exception("bumble_notify_callback_failed", characteristic=characteristic.uuid)

        try:
            with gatt_errors(self.address, f"subscribe {characteristic.uuid}"):
                await gatt.subscribe(proxy, on_value, prefer_notify=True)
        except BaseException:
            for subscribers in (gatt.notification_subscribers, gatt.indication_subscribers):
                subscribers.get(handle, set()).discard(on_value)
            raise
        self._subscribers[handle] = on_value

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        """Unsubscribe; the CCCD is cleared when no subscriber is left."""
        on_value = self._subscribers.pop(characteristic.handle, None)
        if on_value is None:
            return
        gatt = self._require().gatt_client
        with gatt_errors(self.address, f"unsubscribe {characteristic.uuid}"):
            await gatt.unsubscribe(characteristic.obj, on_value)
