"""org.bluez.Device1 on the project's Bumble host: one remote LE device and its link.

BlueZ behaviour copied here (src/device.c, src/gatt-client.c, src/shared/att.c):

* ``Connect`` creates the LE link (``Connected`` becomes true), re-encrypts it when the device
  is bonded, exchanges the MTU, discovers every service, characteristic and descriptor, exports
  them as GATT objects, sets ``ServicesResolved`` and only then replies.
* Any disconnection, whoever caused it, sets ``ServicesResolved`` false, removes the GATT
  objects (InterfacesRemoved) and sets ``Connected`` false; ``Disconnect`` replies once the link
  is down. ``Disconnect`` during a ``Connect`` cancels it.
* A GATT request answered with ATT 0x05/0x0F raises the link's security once (Just Works
  pairing, or encryption with a stored bond) and is resent; when that fails the method answers
  with the error bluetoothd maps the ATT code to (``NotPermitted "Not paired"``).
* ``Pair`` connects when needed and pairs; when the adapter is set to need an agent
  (`Faults.agent_required`, BlueZ >= 5.72 with LE Secure Connections) the default agent's
  ``RequestAuthorization`` must accept, else ``AuthenticationFailed``.
"""

# No `from __future__ import annotations`: dbus-fast reads the D-Bus signatures from the
# annotations, and a postponed `-> None` would read as a signature of None.

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from bleak.backends.scanner import AdvertisementData
from bumble import att, hci
from bumble.core import BaseBumbleError
from bumble.device import Connection, Peer
from dbus_fast.annotations import DBusBool, DBusInt16, DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.errors import DBusError
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_method, dbus_property
from dbus_fast.signature import Variant

from .errors import (
    ALREADY_CONNECTED,
    ALREADY_EXISTS,
    AUTHENTICATION_FAILED,
    FAILED,
    IN_PROGRESS,
    NOT_CONNECTED,
    SECURITY_CODES,
    bluez_error,
    gatt_error,
)
from .gatt import Characteristic, Descriptor, Service

if TYPE_CHECKING:
    from .standin import FakeBluez

__all__ = ["BluezDevice", "device_path"]

DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusManufacturerData = Annotated[dict[int, Variant], DBusSignature("a{qv}")]
DBusServiceData = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
#: Seconds for the link to go down on Disconnect before giving up on the controller.
DISCONNECT_TIMEOUT = 2.0


def device_path(adapter_path: str, address: str) -> str:
    """BlueZ's object path of a device: ``/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF``."""
    return f"{adapter_path}/dev_{address.upper().replace(':', '_')}"


class BluezDevice(ServiceInterface):
    """org.bluez.Device1 (see the module docstring)."""

    def __init__(self, bluez: "FakeBluez", address: hci.Address, adv: AdvertisementData) -> None:
        super().__init__("org.bluez.Device1")
        self._bluez = bluez
        self.address = address
        self.text = address.to_string(with_type_qualifier=False)
        self.path = device_path(bluez.adapter_path, self.text)
        self._adv = adv
        self._rssi = adv.rssi
        self._paired = self._trusted = False
        self._connected = self._resolved = False
        self.connection: Connection | None = None
        self.mtu = att.ATT_DEFAULT_MTU
        self._connecting: asyncio.Task[None] | None = None
        self._objects: list[tuple[str, ServiceInterface]] = []
        self._secured: set[int] = set()  # connection handles whose security was raised once

    # -- properties ------------------------------------------------------------------------------

    @property
    def drop_early_notifications(self) -> bool:
        """A notification before the CCCD write's answer is lost (fault knob)."""
        return self._bluez.faults.drop_early_notifications

    @property
    def cccd_answer_delay(self) -> float:
        """Seconds the CCCD write's answer takes (fault knob)."""
        return self._bluez.faults.cccd_answer_delay

    def count(self, event: str) -> None:
        """Count an event of this device (see `FakeBluez.calls`)."""
        self._bluez.count(event)

    @property
    def alias(self) -> str:
        return self._adv.local_name or self.text.replace(":", "-")

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:  # noqa: N802 - D-Bus member names
        return self.text

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> DBusStr:  # noqa: N802
        return "public" if self.address.is_public else "random"

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:  # noqa: N802
        return self.alias

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:  # noqa: N802
        return self.alias

    @dbus_property(access=PropertyAccess.READ)
    def Adapter(self) -> DBusObjectPath:  # noqa: N802
        return self._bluez.adapter_path

    @dbus_property(access=PropertyAccess.READ)
    def Paired(self) -> DBusBool:  # noqa: N802
        return self._paired

    @dbus_property(access=PropertyAccess.READ)
    def Bonded(self) -> DBusBool:  # noqa: N802
        return self._paired

    @dbus_property()
    def Trusted(self) -> DBusBool:  # noqa: N802
        return self._trusted

    @Trusted.setter
    def Trusted(self, value: DBusBool) -> None:  # noqa: N802
        self._trusted = value

    @dbus_property(access=PropertyAccess.READ)
    def Blocked(self) -> DBusBool:  # noqa: N802
        return False

    @dbus_property(access=PropertyAccess.READ)
    def LegacyPairing(self) -> DBusBool:  # noqa: N802
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Connected(self) -> DBusBool:  # noqa: N802
        return self._connected

    @dbus_property(access=PropertyAccess.READ)
    def ServicesResolved(self) -> DBusBool:  # noqa: N802
        return self._resolved

    @dbus_property(access=PropertyAccess.READ)
    def RSSI(self) -> DBusInt16:  # noqa: N802
        return self._rssi

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> DBusStrList:  # noqa: N802
        return list(self._adv.service_uuids)

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(self) -> DBusManufacturerData:  # noqa: N802
        return {k: Variant("ay", v) for k, v in self._adv.manufacturer_data.items()}

    @dbus_property(access=PropertyAccess.READ)
    def ServiceData(self) -> DBusServiceData:  # noqa: N802
        return {k: Variant("ay", v) for k, v in self._adv.service_data.items()}

    def advertised(self, adv: AdvertisementData, *, fresh: bool) -> None:
        """A new advertisement: changed properties are signalled (all of them when `fresh`,
        the first of a discovery session, as bluetoothd reports RSSI again then)."""
        old, self._adv, self._rssi = self._adv, adv, adv.rssi
        changed: dict[str, Any] = {}
        if fresh or old.rssi != adv.rssi:
            changed["RSSI"] = adv.rssi
        if fresh or old.local_name != adv.local_name:
            changed["Name"] = changed["Alias"] = self.alias
        if fresh or old.service_uuids != adv.service_uuids:
            changed["UUIDs"] = list(adv.service_uuids)
        if fresh or old.manufacturer_data != adv.manufacturer_data:
            changed["ManufacturerData"] = self.ManufacturerData
        if fresh or old.service_data != adv.service_data:
            changed["ServiceData"] = self.ServiceData
        if changed:
            self.emit_properties_changed(changed)

    @property
    def gatt_paths(self) -> list[str]:
        """The object paths of the GATT objects exported for the current link."""
        return [path for path, _ in self._objects]

    async def wait_released(self, path: str) -> None:
        """Wait until the client closed the acquired notification socket of `path`."""
        chars = [i for p, i in self._objects if p == path and isinstance(i, Characteristic)]
        if not chars:
            raise KeyError(path)
        await chars[0].released.wait()

    @property
    def paired(self) -> bool:
        """Whether the device is paired (and bonded)."""
        return self._paired

    @property
    def removable(self) -> bool:
        """A temporary device: neither connected, connecting nor paired."""
        return not (self._paired or self._connected or self._connecting)

    # -- connection ------------------------------------------------------------------------------

    @dbus_method()
    async def Connect(self) -> None:  # noqa: N802
        faults = self._bluez.faults
        self._bluez.count("Connect")
        if faults.take("connect_in_progress"):
            raise bluez_error(IN_PROGRESS, "In Progress")
        if self._connecting is not None:
            raise bluez_error(IN_PROGRESS, "In Progress")
        if self.connection is not None:
            raise bluez_error(ALREADY_CONNECTED, "Already Connected")
        await self._connect()

    async def _connect(self) -> None:
        task = asyncio.get_running_loop().create_task(self._link_up())
        self._connecting = task
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # a Disconnect cancelled the attempt
                raise bluez_error(FAILED, "Software caused connection abort") from None
            raise
        finally:
            self._connecting = None

    async def _link_up(self) -> None:
        faults = self._bluez.faults
        try:
            connection = await self._bluez.host.connect(self.address)
        except BaseBumbleError as exc:
            raise bluez_error(FAILED, f"Connection failed: {exc}") from exc
        self._attach(connection)
        if faults.take("abort_by_local"):
            # bluetoothd saw the link come up and go at once: Connected true then false, then
            # the error (bleak waits for Connected=false before it tries again).
            await self._drop(connection)
            raise bluez_error(FAILED, "le-connection-abort-by-local")
        try:
            if await self._bonded(connection):
                await connection.encrypt()
            await Peer(connection).request_mtu(self._bluez.host.mtu)
            self.mtu = connection.att_mtu
            if faults.stall_services_resolved:
                return  # the reply comes, ServicesResolved never does (ATT stalled)
            await self._resolve(connection)
        except (att.ATT_Error, BaseBumbleError) as exc:
            await self._drop(connection)
            raise bluez_error(FAILED, f"Connection failed: {exc}") from exc

    def _attach(self, connection: Connection) -> None:
        self.connection = connection

        def on_disconnection(_reason: int) -> None:
            self._link_down(connection)

        connection.on(connection.EVENT_DISCONNECTION, on_disconnection)
        self._connected = True
        self.emit_properties_changed({"Connected": True})

    async def _resolve(self, connection: Connection) -> None:
        gatt = connection.gatt_client
        exported: list[tuple[str, ServiceInterface]] = []
        for service in await gatt.discover_services():
            service_path = f"{self.path}/service{service.handle:04x}"
            exported.append((service_path, Service(service_path, self.path, service)))
            for char in await gatt.discover_characteristics((), service):
                char_path = f"{service_path}/char{char.handle - 1:04x}"
                exported.append((char_path, Characteristic(char_path, service_path, char, self)))
                for desc in await gatt.discover_descriptors(char):
                    desc_path = f"{char_path}/desc{desc.handle:04x}"
                    exported.append((desc_path, Descriptor(desc_path, char_path, desc, self)))
                char.descriptors_discovered = True
        if connection is not self.connection:
            return  # the link went down during discovery
        bus = self._bluez.bus
        for path, interface in exported:
            bus.export(path, interface)
        self._objects = exported
        self._resolved = True
        self.emit_properties_changed({"ServicesResolved": True})

    def _link_down(self, connection: Connection) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        self._secured.discard(connection.handle)
        if self._resolved:
            self._resolved = False
            self.emit_properties_changed({"ServicesResolved": False})
        objects, self._objects = self._objects, []
        for path, interface in reversed(objects):
            if isinstance(interface, Characteristic):
                interface.close()
            with contextlib.suppress(Exception):  # the bus may be gone (bluetoothd stopping)
                self._bluez.bus.unexport(path, interface)
        self._connected = False
        self._bluez.later(lambda: self.emit_properties_changed({"Connected": False}))

    async def _drop(self, connection: Connection) -> None:
        with contextlib.suppress(TimeoutError, BaseBumbleError):
            async with asyncio.timeout(DISCONNECT_TIMEOUT):
                await connection.disconnect()
        self._link_down(connection)

    @dbus_method()
    async def Disconnect(self) -> None:  # noqa: N802
        self._bluez.count("Disconnect")
        if (connecting := self._connecting) is not None:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, DBusError):
                await connecting
        connection = self.connection
        if connection is None:
            raise bluez_error(NOT_CONNECTED, "Not Connected")
        await self._drop(connection)

    async def disconnect_quietly(self) -> None:
        """Drop the link, if any (bluetoothd stopping)."""
        if self._connecting is not None:
            self._connecting.cancel()
        if self.connection is not None:
            await self._drop(self.connection)

    # -- pairing and security --------------------------------------------------------------------

    @dbus_method()
    async def Pair(self) -> None:  # noqa: N802
        self._bluez.count("Pair")
        if self._paired:
            raise bluez_error(ALREADY_EXISTS, "Already Exists")
        if self.connection is None:
            await self._connect()
        connection = self._link()
        if not await self._pair(connection):
            raise bluez_error(AUTHENTICATION_FAILED, "Authentication Failed")

    @dbus_method()
    def CancelPairing(self) -> None:  # noqa: N802
        self._bluez.count("CancelPairing")

    async def _bonded(self, connection: Connection) -> bool:
        keystore = self._bluez.host.device.keystore
        keys = await keystore.get(str(connection.peer_address)) if keystore else None
        return keys is not None and (keys.ltk is not None or keys.ltk_central is not None)

    async def _pair(self, connection: Connection) -> bool:
        """Just Works pairing with bonding; False when it fails (as bluetoothd reports it)."""
        faults = self._bluez.faults
        if faults.pairing_fails:
            return False
        if faults.agent_required and not await self._bluez.agent_authorizes(self.path):
            return False
        try:
            await connection.pair()
        except (BaseBumbleError, asyncio.CancelledError):
            if connection is not self.connection:
                raise bluez_error(NOT_CONNECTED, "Not Connected") from None
            return False
        self._paired = True
        self.emit_properties_changed({"Paired": True, "Bonded": True})
        return True

    async def _secure(self, connection: Connection) -> bool:
        """Raise security once (shared/att.c change_security): encrypt with a bond, else pair."""
        self._secured.add(connection.handle)
        if connection.is_encrypted:
            return False  # a higher level needs MITM protection: a headless hub has none
        if await self._bonded(connection):
            try:
                await connection.encrypt()
            except BaseBumbleError:
                return False
            return True
        return await self._pair(connection)

    # -- GATT ------------------------------------------------------------------------------------

    def _link(self) -> Connection:
        if self.connection is None:
            raise bluez_error(NOT_CONNECTED, "Not connected")
        return self.connection

    def gatt_client(self) -> Any:
        """The Bumble GATT client of the link."""
        return self._link().gatt_client

    async def att(self, what: str, operation: Callable[[], Awaitable[Any]]) -> Any:
        """One ATT procedure: on 0x05/0x0F security is raised once and the request resent."""
        connection = self._link()
        try:
            try:
                return await operation()
            except att.ATT_Error as exc:
                code = exc.error_code
                if code not in SECURITY_CODES or connection.handle in self._secured:
                    raise gatt_error(code) from exc
                if not await self._secure(connection):
                    raise gatt_error(code) from exc
            try:
                return await operation()
            except att.ATT_Error as exc:
                raise gatt_error(exc.error_code) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise bluez_error(FAILED, f"{what}: Not connected") from None  # link lost
        except BaseBumbleError as exc:
            raise bluez_error(FAILED, f"{what}: {exc}") from exc
