"""org.bluez.GattService1 / GattCharacteristic1 / GattDescriptor1 of one connected device.

Object paths carry the handles as bluetoothd's do (``serviceHHHH/charHHHH/descHHHH``; bleak
reads the handle back from the last four hex digits). A characteristic's path has its
declaration handle. `Value` follows every read and notification (bluetoothd updates it on both,
and bleak takes notifications from its PropertiesChanged). Reads and writes go through the
device's `att()` (security upgrade and error mapping as bluetoothd does them).
"""

# No `from __future__ import annotations`: dbus-fast reads the D-Bus signatures from the
# annotations, and a postponed `-> None` would read as a signature of None.

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES
from bumble.gatt_client import CharacteristicProxy, DescriptorProxy, ServiceProxy
from dbus_fast.annotations import (
    DBusBool,
    DBusBytes,
    DBusDict,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt16,
)
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_method, dbus_property

from .errors import IN_PROGRESS, NOT_SUPPORTED, bluez_error

__all__ = ["Characteristic", "Descriptor", "GattHost", "Service", "bumble_uuid"]

#: Seconds after an AcquireNotify reply by which dbus-fast has sent the fd (in-process: ~ms).
FD_HANDOVER = 0.5
DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusObjectPathList = Annotated[list[str], DBusSignature("ao")]
DBusFdMtu = Annotated[list[Any], DBusSignature("hq")]


class GattHost(Protocol):
    """What the GATT objects need of their device."""

    mtu: int
    drop_early_notifications: bool
    cccd_answer_delay: float

    async def att(self, what: str, operation: Callable[[], Awaitable[Any]]) -> Any:
        """Run one ATT procedure on the link (security upgrade, errors as bluetoothd's)."""

    def count(self, event: str) -> None:
        """Count an event of the stand-in (what tests assert on)."""

    def gatt_client(self) -> Any:
        """The link's Bumble GATT client."""


def bumble_uuid(uuid: Any) -> str:
    """A Bumble UUID as BlueZ writes it: lower-case, 128-bit."""
    from gatewayd.transport.bumble.scanner import uuid_from_le_bytes

    return uuid_from_le_bytes(uuid.to_bytes())


class Service(ServiceInterface):
    """org.bluez.GattService1."""

    def __init__(self, path: str, device_path: str, proxy: ServiceProxy) -> None:
        super().__init__("org.bluez.GattService1")
        self.path, self._device, self._uuid = path, device_path, bumble_uuid(proxy.uuid)

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:  # noqa: N802 - D-Bus member names
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> DBusBool:  # noqa: N802
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Device(self) -> DBusObjectPath:  # noqa: N802
        return self._device

    @dbus_property(access=PropertyAccess.READ)
    def Includes(self) -> DBusObjectPathList:  # noqa: N802
        return []


class Characteristic(ServiceInterface):
    """org.bluez.GattCharacteristic1: ReadValue, WriteValue, Start/StopNotify, AcquireNotify."""

    def __init__(
        self, path: str, service_path: str, proxy: CharacteristicProxy[bytes], host: GattHost
    ) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.path, self._service, self._proxy, self._host = path, service_path, proxy, host
        self._uuid = bumble_uuid(proxy.uuid)
        self._flags = [n for bit, n in CHARACTERISTIC_PROPERTIES.items() if proxy.properties & bit]
        self._value = b""
        self._notifying = self._acquired = False
        self._subscribing = False
        self._socket: socket.socket | None = None
        #: Set when the client closed an acquired notification socket (bluetoothd unsubscribes).
        self.released = asyncio.Event()

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:  # noqa: N802
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> DBusObjectPath:  # noqa: N802
        return self._service

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> DBusBytes:  # noqa: N802
        return self._value

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> DBusStrList:  # noqa: N802
        return list(self._flags)

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> DBusBool:  # noqa: N802
        return self._notifying

    @dbus_property(access=PropertyAccess.READ)
    def NotifyAcquired(self) -> DBusBool:  # noqa: N802
        return self._acquired

    @dbus_property(access=PropertyAccess.READ)
    def WriteAcquired(self) -> DBusBool:  # noqa: N802
        return False

    @dbus_property(access=PropertyAccess.READ)
    def MTU(self) -> DBusUInt16:  # noqa: N802
        return self._host.mtu

    def _set_value(self, value: bytes) -> None:
        self._value = bytes(value)
        self.emit_properties_changed({"Value": self._value})

    @dbus_method()
    async def ReadValue(self, options: DBusDict) -> DBusBytes:  # noqa: N802
        gatt = self._host.gatt_client()
        value: bytes = await self._host.att(
            f"read {self._uuid}", lambda: gatt.read_value(self._proxy.handle)
        )
        self._set_value(value)
        return value

    @dbus_method()
    async def WriteValue(self, value: DBusBytes, options: DBusDict) -> None:  # noqa: N802
        kind = options.get("type")
        response = (kind.value if kind is not None else "request") != "command"
        gatt = self._host.gatt_client()
        await self._host.att(
            f"write {self._uuid}",
            lambda: gatt.write_value(self._proxy.handle, bytes(value), with_response=response),
        )

    def _on_value(self, value: bytes) -> None:
        if self._subscribing and self._host.drop_early_notifications:
            self._host.count("notification-lost")
            return  # arrived before the CCCD write was answered: lost
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.send(bytes(value))
            return
        self._set_value(bytes(value))

    async def _subscribe(self) -> None:
        if not {"notify", "indicate"} & set(self._flags):
            raise bluez_error(NOT_SUPPORTED, "Operation is not supported")
        if self._subscribing:
            raise bluez_error(IN_PROGRESS, "In Progress")
        gatt = self._host.gatt_client()
        self._subscribing = True
        try:
            await self._host.att(
                f"subscribe {self._uuid}",
                lambda: gatt.subscribe(self._proxy, self._on_value, prefer_notify=True),
            )
            if self._host.cccd_answer_delay:
                await asyncio.sleep(self._host.cccd_answer_delay)  # the answer still on air
        finally:
            self._subscribing = False

    @dbus_method()
    async def StartNotify(self) -> None:  # noqa: N802
        self._host.count("StartNotify")
        if self._notifying:
            return
        await self._subscribe()
        self._notifying = True
        self.emit_properties_changed({"Notifying": True})

    @dbus_method()
    async def StopNotify(self) -> None:  # noqa: N802
        if not self._notifying:
            return
        self._notifying = False
        self.emit_properties_changed({"Notifying": False})
        gatt = self._host.gatt_client()
        await self._host.att(
            f"unsubscribe {self._uuid}", lambda: gatt.unsubscribe(self._proxy, self._on_value)
        )

    @dbus_method()
    async def AcquireNotify(self, options: DBusDict) -> DBusFdMtu:  # noqa: N802
        self._host.count("AcquireNotify")
        if self._acquired or self._notifying:
            raise bluez_error(IN_PROGRESS, "In Progress")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self._socket = ours
        try:
            await self._subscribe()
        except BaseException:
            self._release_socket()
            theirs.close()
            raise
        self._acquired = True
        self.emit_properties_changed({"NotifyAcquired": True})
        # bluetoothd ends the subscription when the client closes its end.
        loop = asyncio.get_running_loop()
        loop.add_reader(ours.fileno(), self._on_socket_event)
        # dbus-fast sends (a copy of) the fd with the reply after this method returned; the
        # stand-in's own copy must close then, or the client's close would never show.
        loop.call_later(FD_HANDOVER, theirs.close)
        return [theirs.fileno(), self._host.mtu]

    def _on_socket_event(self) -> None:
        sock = self._socket
        if sock is None:
            return
        try:
            if sock.recv(1) != b"":
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._release_socket()
        self._acquired = False
        self.released.set()
        self.emit_properties_changed({"NotifyAcquired": False})
        gatt = self._host.gatt_client()
        gatt.notification_subscribers.get(self._proxy.handle, set()).discard(self._on_value)
        gatt.indication_subscribers.get(self._proxy.handle, set()).discard(self._on_value)

    def _release_socket(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def close(self) -> None:
        """The link is gone: an acquired notification socket closes."""
        self._release_socket()


class Descriptor(ServiceInterface):
    """org.bluez.GattDescriptor1: ReadValue, WriteValue."""

    def __init__(
        self, path: str, characteristic_path: str, proxy: DescriptorProxy, host: GattHost
    ) -> None:
        super().__init__("org.bluez.GattDescriptor1")
        self.path, self._characteristic, self._proxy, self._host = (
            path, characteristic_path, proxy, host,
        )  # fmt: skip
        self._uuid = bumble_uuid(proxy.type)
        self._value = b""

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:  # noqa: N802
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Characteristic(self) -> DBusObjectPath:  # noqa: N802
        return self._characteristic

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> DBusBytes:  # noqa: N802
        return self._value

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> DBusStrList:  # noqa: N802
        return ["read", "write"]

    @dbus_method()
    async def ReadValue(self, options: DBusDict) -> DBusBytes:  # noqa: N802
        gatt = self._host.gatt_client()
        value: bytes = await self._host.att(
            f"read descriptor {self._uuid}", lambda: gatt.read_value(self._proxy.handle)
        )
        self._value = bytes(value)
        self.emit_properties_changed({"Value": self._value})
        return value

    @dbus_method()
    async def WriteValue(self, value: DBusBytes, options: DBusDict) -> None:  # noqa: N802
        gatt = self._host.gatt_client()
        await self._host.att(
            f"write descriptor {self._uuid}",
            lambda: gatt.write_value(self._proxy.handle, bytes(value), with_response=True),
        )
