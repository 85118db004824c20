"""The `org.bluez` stand-in: Adapter1, AgentManager1 and the devices, on one D-Bus connection.

`FakeBluez(host)` owns the name ``org.bluez`` on the bus of ``DBUS_SYSTEM_BUS_ADDRESS`` and
answers bleak's BlueZ backend as bluetoothd would, with the project's `BumbleHost` as its radio
(see `fakebluez` for what is and is not emulated). `Faults` are the knobs for what users of
BlueZ meet; `calls` counts the D-Bus methods called (what a test asserts on).
"""

# No `from __future__ import annotations`: dbus-fast reads the D-Bus signatures from the
# annotations, and a postponed `-> None` would read as a signature of None.

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated

from bumble.device import Advertisement
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusDict, DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_method, dbus_property

from gatewayd.transport.bumble.host import BumbleHost
from gatewayd.transport.bumble.scanner import advertisement_data

from .device import BluezDevice
from .errors import DOES_NOT_EXIST, FAILED, IN_PROGRESS, bluez_error

__all__ = ["AGENT_MANAGER", "BLUEZ", "FakeBluez", "Faults"]

BLUEZ = "org.bluez"
AGENT_MANAGER = "org.bluez.AgentManager1"
#: Seconds bluetoothd waits for an agent's answer (its agent requests time out too).
AGENT_TIMEOUT = 10.0
DBusStrList = Annotated[list[str], DBusSignature("as")]


@dataclass
class Faults:
    """Fault knobs. Counters fail that many calls, then the method works again."""

    #: StartDiscovery answers ``InProgress`` (another client, or a stuck discovery).
    discovery_in_progress: int = 0
    #: Connect answers ``InProgress`` (a connection attempt left behind by a killed process).
    connect_in_progress: int = 0
    #: Connect brings the link up and down and answers ``Failed "le-connection-abort-by-local"``.
    abort_by_local: int = 0
    #: Connect is answered once the link is up but ``ServicesResolved`` never comes (ATT stalls:
    #: what real bluetoothd showed when the peer never answered the MTU exchange).
    stall_services_resolved: bool = False
    #: Every pairing fails (the device refuses the bond): ``Pair`` answers
    #: ``AuthenticationFailed``, a security upgrade ends in ``NotPermitted "Not paired"``.
    pairing_fails: bool = False
    #: Pairing needs the default agent's consent (BlueZ >= 5.72, LE Secure Connections Just
    #: Works): without an agent, or when it rejects, pairing fails as above.
    agent_required: bool = False
    #: Notifications that arrive before the CCCD write is answered are lost.
    drop_early_notifications: bool = False
    #: Seconds the CCCD write's answer takes to come back (on air: a connection interval or
    #: more; on the emulated link: nothing), the window in which notifications can be early.
    cccd_answer_delay: float = 0.0
    #: Seconds after StopDiscovery that temporary devices (not connected, not paired) are
    #: removed (bluetoothd's TemporaryTimeout is 30 s); None: kept.
    remove_after_discovery: float | None = None
    #: Seconds between a disconnection and the ``Connected=false`` signal (bluetoothd replies
    #: to Disconnect first and sends property changes from its main loop later).
    connected_signal_delay: float = 0.0

    def take(self, name: str) -> bool:
        """Whether a counted fault fires now (and count it down)."""
        left: int = getattr(self, name)
        if left <= 0:
            return False
        setattr(self, name, left - 1)
        return True

    def clear(self) -> None:
        """Every knob back to normal behaviour."""
        for f in fields(self):
            setattr(self, f.name, f.default)


class AgentManager(ServiceInterface):
    """org.bluez.AgentManager1: agents by owner; the default one answers pairing requests."""

    def __init__(self, bluez: "FakeBluez") -> None:
        super().__init__(AGENT_MANAGER)
        self._bluez = bluez
        self.agents: dict[str, tuple[str, str]] = {}  # owner -> (path, capability)
        self.default: tuple[str, str] | None = None  # (owner, path)
        self.sender = ""  # of the call being dispatched (set by FakeBluez's message handler)
        #: Set when an agent becomes the default one.
        self.has_default = asyncio.Event()

    @dbus_method()
    def RegisterAgent(self, agent: DBusObjectPath, capability: DBusStr) -> None:  # noqa: N802
        self._bluez.count("RegisterAgent")
        if self.sender in self.agents:
            raise bluez_error("org.bluez.Error.AlreadyExists", "Already Exists")
        self.agents[self.sender] = (agent, capability)

    @dbus_method()
    def UnregisterAgent(self, agent: DBusObjectPath) -> None:  # noqa: N802
        self._bluez.count("UnregisterAgent")
        if self.agents.get(self.sender, ("",))[0] != agent:
            raise bluez_error(DOES_NOT_EXIST, "No such agent")
        del self.agents[self.sender]
        if self.default == (self.sender, agent):
            self.default = None

    @dbus_method()
    def RequestDefaultAgent(self, agent: DBusObjectPath) -> None:  # noqa: N802
        self._bluez.count("RequestDefaultAgent")
        if self.agents.get(self.sender, ("",))[0] != agent:
            raise bluez_error(DOES_NOT_EXIST, "No such agent")
        self.default = (self.sender, agent)
        self.has_default.set()


class Adapter(ServiceInterface):
    """org.bluez.Adapter1: discovery (shared with the host's scan), devices, RemoveDevice."""

    def __init__(self, bluez: "FakeBluez", address: str) -> None:
        super().__init__("org.bluez.Adapter1")
        self._bluez, self._address = bluez, address
        self.discovering = False
        self.uuids: set[str] = set()
        self._token: object | None = None
        self._starting: asyncio.Task[None] | None = None
        self._seen: set[str] = set()  # devices reported in this discovery session

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:  # noqa: N802 - D-Bus member names
        return self._address

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:  # noqa: N802
        return "gatewayd-test"

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:  # noqa: N802
        return "gatewayd-test"

    @dbus_property(access=PropertyAccess.READ)
    def Powered(self) -> DBusBool:  # noqa: N802
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Pairable(self) -> DBusBool:  # noqa: N802
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Discovering(self) -> DBusBool:  # noqa: N802
        return self.discovering

    @dbus_property(access=PropertyAccess.READ)
    def Roles(self) -> DBusStrList:  # noqa: N802
        return ["central", "peripheral"]

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> DBusStrList:  # noqa: N802
        return []

    @dbus_method()
    def SetDiscoveryFilter(self, properties: DBusDict) -> None:  # noqa: N802
        self._bluez.count("SetDiscoveryFilter")
        uuids = properties.get("UUIDs")
        self.uuids = {u.lower() for u in uuids.value} if uuids is not None else set()

    @dbus_method()
    def GetDiscoveryFilters(self) -> DBusStrList:  # noqa: N802
        return ["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable"]

    @dbus_method()
    async def StartDiscovery(self) -> None:  # noqa: N802
        bluez = self._bluez
        bluez.count("StartDiscovery")
        if bluez.faults.take("discovery_in_progress") or self.discovering:
            raise bluez_error(IN_PROGRESS, "Operation already in progress")
        self._seen.clear()
        self.discovering = True
        self.emit_properties_changed({"Discovering": True})
        # bluetoothd answers once the controller was told to scan; devices are found after the
        # answer (clients register their callbacks on it): the radio starts after the reply.
        self._starting = asyncio.get_running_loop().create_task(self._start_scan())

    async def _start_scan(self) -> None:
        self._token = await self._bluez.host.start_scan(self._on_advertisement)

    @dbus_method()
    async def StopDiscovery(self) -> None:  # noqa: N802
        bluez = self._bluez
        bluez.count("StopDiscovery")
        if not self.discovering:
            raise bluez_error(FAILED, "No discovery started")
        await self.stop_scan()
        self.emit_properties_changed({"Discovering": False})
        delay = bluez.faults.remove_after_discovery
        if delay is not None:
            asyncio.get_running_loop().call_later(delay, bluez.remove_temporary_devices)

    async def stop_scan(self) -> None:
        """Stop the host's scan for this adapter (also when bluetoothd stops)."""
        starting, self._starting = self._starting, None
        if starting is not None:
            await starting
        token, self._token = self._token, None
        self.discovering = False
        if token is not None:
            await self._bluez.host.stop_scan(token)

    @dbus_method()
    async def RemoveDevice(self, device: DBusObjectPath) -> None:  # noqa: N802
        self._bluez.count("RemoveDevice")
        if not await self._bluez.remove_device(device):
            raise bluez_error(DOES_NOT_EXIST, "Does Not Exist")

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        bluez = self._bluez
        address = advertisement.address.to_string(with_type_qualifier=False)
        known = bluez.devices.get(address)
        adv = advertisement_data(advertisement, known.alias if known else None)
        if self.uuids and not self.uuids & {u.lower() for u in adv.service_uuids}:
            return
        fresh = address not in self._seen
        self._seen.add(address)
        if known is None:
            device = BluezDevice(bluez, advertisement.address, adv)
            bluez.devices[address] = device
            bluez.bus.export(device.path, device)
        else:
            known.advertised(adv, fresh=fresh)


class FakeBluez:
    """bluetoothd's D-Bus face on a `BumbleHost` (see the module docstring)."""

    def __init__(
        self, host: BumbleHost, faults: Faults | None = None, *, adapter: str = "hci0"
    ) -> None:
        self.host = host
        self.faults = faults or Faults()
        self.adapter_path = f"/org/bluez/{adapter}"
        self.devices: dict[str, BluezDevice] = {}
        self.calls: Counter[str] = Counter()
        self._bus: MessageBus | None = None
        self._agents = AgentManager(self)
        self._adapter: Adapter | None = None

    @property
    def bus(self) -> MessageBus:
        """The stand-in's bus connection (it owns ``org.bluez``)."""
        if self._bus is None:
            raise RuntimeError("the org.bluez stand-in is not running")
        return self._bus

    @property
    def agents(self) -> AgentManager:
        """The registered agents and the default one."""
        return self._agents

    def count(self, method: str) -> None:
        """Count a D-Bus method call."""
        self.calls[method] += 1

    async def start(self) -> None:
        """Connect to the system bus, export the adapter and own ``org.bluez``."""
        bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
        self._bus = bus
        bus.add_message_handler(self._note_sender)
        device = await self.host.open()
        self._adapter = Adapter(self, str(device.random_address).split("/")[0])
        bus.export("/org/bluez", self._agents)
        bus.export(self.adapter_path, self._adapter)
        await bus.request_name(BLUEZ)

    async def stop(self, *, crash: bool = False) -> None:
        """bluetoothd exits: cleanly (links dropped and objects removed, with their signals) or
        by a crash (its bus connection goes first: no signal at all; the links drop)."""
        bus, adapter = self._bus, self._adapter
        if bus is None:
            return
        if crash:
            self._bus = None
            bus.disconnect()
        if adapter is not None:
            await adapter.stop_scan()
        for device in list(self.devices.values()):
            await device.disconnect_quietly()
            if not crash:
                bus.unexport(device.path, device)
        if adapter is not None and not crash:
            bus.unexport(self.adapter_path, adapter)
        self.devices.clear()
        self._bus = None
        bus.disconnect()
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()

    async def __aenter__(self) -> "FakeBluez":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _note_sender(self, message: Message) -> None:
        if message.interface == AGENT_MANAGER and message.message_type == MessageType.METHOD_CALL:
            self._agents.sender = message.sender or ""

    def later(self, emit: Callable[[], None]) -> None:
        """Send a property change after the reply being prepared (see `Faults`)."""
        delay = self.faults.connected_signal_delay
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._emit_if_running, emit)
        else:
            emit()

    def _emit_if_running(self, emit: Callable[[], None]) -> None:
        if self._bus is not None:
            emit()

    async def agent_authorizes(self, device_path: str) -> bool:
        """Ask the default agent to authorise a Just Works pairing (False: none, or refused)."""
        default = self._agents.default
        if default is None:
            return False
        owner, path = default
        self.count("Agent1.RequestAuthorization")
        request = Message(
            destination=owner,
            path=path,
            interface="org.bluez.Agent1",
            member="RequestAuthorization",
            signature="o",
            body=[device_path],
        )
        try:
            async with asyncio.timeout(AGENT_TIMEOUT):
                reply = await self.bus.call(request)
        except TimeoutError:
            return False
        return reply is not None and reply.message_type == MessageType.METHOD_RETURN

    async def remove_device(self, path: str) -> bool:
        """Disconnect and forget a device (its bond too); False if there is none."""
        for address, device in list(self.devices.items()):
            if device.path == path:
                await device.disconnect_quietly()
                keystore = self.host.device.keystore
                if keystore is not None:
                    with contextlib.suppress(KeyError):
                        await keystore.delete(str(device.address))
                del self.devices[address]
                self.bus.unexport(path, device)
                return True
        return False

    def remove_temporary_devices(self) -> None:
        """bluetoothd's temporary-device expiry: forget what is neither connected nor paired."""
        if self._bus is None or (self._adapter is not None and self._adapter.discovering):
            return
        for address, device in list(self.devices.items()):
            if device.removable:
                del self.devices[address]
                self.bus.unexport(device.path, device)
                self.count("device-expired")

    def device(self, address: str) -> BluezDevice | None:
        """The device object of `address`, once seen."""
        return self.devices.get(address.upper())
