"""The hub's BlueZ pairing agent: "Just Works" consent for a hub with no display or keyboard.

bluetoothd asks an *agent* (a D-Bus object implementing ``org.bluez.Agent1``) to approve each
pairing. bleak registers none. For LE Secure Connections "Just Works" pairing, BlueZ >= 5.72
asks the default agent to authorise it (``RequestAuthorization``) and fails the pairing with
``org.bluez.Error.AuthenticationFailed`` when there is no agent, whether the pairing was asked
for (``Device1.Pair``) or started by bluetoothd itself to raise a link's security. So the daemon
registers this agent on the system bus for as long as its BLE session runs
(`gatewayd.transport.ble.ble_session`) and makes it the default agent: bluetoothd asks the
default agent about pairings nobody's own agent covers, and bleak's connections have none.

Capability ``NoInputNoOutput``: it consents to Just Works (``RequestAuthorization``,
``RequestConfirmation``, ``AuthorizeService``) and refuses anything that needs a person
(``RequestPinCode``, ``RequestPasskey``: ``org.bluez.Error.Rejected``). On a hub where a person
runs a desktop agent, this one takes the default role while the daemon runs; devices that need a
passkey are paired by hand there (docs/ble.md).
"""

# No `from __future__ import annotations`: dbus-fast reads the D-Bus signatures from the
# annotations, and a postponed `-> None` would read as a signature of None.

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

import structlog
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusObjectPath, DBusStr, DBusUInt16, DBusUInt32
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method

__all__ = ["AGENT_PATH", "CAPABILITY", "HubAgent", "bluez_agent"]

AGENT_PATH: Final = "/org/gatewayd/agent"
CAPABILITY: Final = "NoInputNoOutput"
#: Seconds bluetoothd may take to answer a registration (it answers in milliseconds).
REGISTER_TIMEOUT: Final = 5.0
_REJECTED: Final = "org.bluez.Error.Rejected"
_OWNER_CHANGED: Final = (
    "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
    "member='NameOwnerChanged',arg0='org.bluez'"
)

log = structlog.get_logger().bind(component="ble_bluez_agent")


class HubAgent(ServiceInterface):
    """org.bluez.Agent1 for a headless hub (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("org.bluez.Agent1")
        #: Devices whose Just Works pairing this agent approved, in order.
        self.approved: list[str] = []

    @dbus_method()
    def Release(self) -> None:  # noqa: N802 - D-Bus member names
        log.info("bluez_agent_released")

    @dbus_method()
    def RequestAuthorization(self, device: DBusObjectPath) -> None:  # noqa: N802
        self._approve(device, "authorization")

    @dbus_method()
    def RequestConfirmation(self, device: DBusObjectPath, passkey: DBusUInt32) -> None:  # noqa: N802
        self._approve(device, "confirmation")

    @dbus_method()
    def AuthorizeService(self, device: DBusObjectPath, uuid: DBusStr) -> None:  # noqa: N802
        log.debug("bluez_agent_service_authorized", device=device, uuid=uuid)

    @dbus_method()
    def RequestPinCode(self, device: DBusObjectPath) -> DBusStr:  # noqa: N802
        raise DBusError(_REJECTED, "a headless hub cannot enter a PIN code")

    @dbus_method()
    def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:  # noqa: N802
        raise DBusError(_REJECTED, "a headless hub cannot enter a passkey")

    @dbus_method()
    def DisplayPasskey(  # noqa: N802
        self, device: DBusObjectPath, passkey: DBusUInt32, entered: DBusUInt16
    ) -> None:
        log.info("bluez_agent_passkey_not_shown", device=device)

    @dbus_method()
    def DisplayPinCode(self, device: DBusObjectPath, pincode: DBusStr) -> None:  # noqa: N802
        log.info("bluez_agent_pincode_not_shown", device=device)

    @dbus_method()
    def Cancel(self) -> None:  # noqa: N802
        log.info("bluez_agent_request_cancelled")

    def _approve(self, device: str, kind: str) -> None:
        self.approved.append(device)
        log.info("bluez_agent_just_works_approved", device=device, request=kind)


async def _call(bus: MessageBus, member: str, signature: str, body: list[object]) -> None:
    reply = await bus.call(
        Message(
            destination="org.bluez",
            path="/org/bluez",
            interface="org.bluez.AgentManager1",
            member=member,
            signature=signature,
            body=body,
        )
    )
    if reply is not None and reply.message_type == MessageType.ERROR:
        raise DBusError(reply.error_name or "org.bluez.Error.Failed", str(reply.body))


async def _register(bus: MessageBus) -> None:
    async with asyncio.timeout(REGISTER_TIMEOUT):
        await _call(bus, "RegisterAgent", "os", [AGENT_PATH, CAPABILITY])
        await _call(bus, "RequestDefaultAgent", "o", [AGENT_PATH])
    log.info("bluez_agent_registered", path=AGENT_PATH, capability=CAPABILITY)


class _Reregister:
    """bluetoothd forgets its agents when it restarts: register again when ``org.bluez`` gets a
    new owner (NameOwnerChanged)."""

    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus
        self._tasks: set[asyncio.Task[None]] = set()

    async def watch(self) -> None:
        await self._bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[_OWNER_CHANGED],
            )
        )
        self._bus.add_message_handler(self._on_message)

    def _on_message(self, message: Message) -> None:
        if message.member != "NameOwnerChanged" or message.body[:1] != ["org.bluez"]:
            return
        if message.body[2]:  # a new owner: bluetoothd (re)started
            task = asyncio.get_running_loop().create_task(self._again())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _again(self) -> None:
        try:
            await _register(self._bus)
        except (OSError, DBusError, EOFError, TimeoutError) as exc:
            log.warning("bluez_agent_unavailable", error=repr(exc))

    async def close(self) -> None:
        self._bus.remove_message_handler(self._on_message)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def bluez_agent() -> AsyncIterator[HubAgent | None]:
    """Register the hub's agent as BlueZ's default one while inside (again after a restart of
    bluetoothd); yields it, or None when BlueZ cannot be reached (logged: pairing may then fail
    on BlueZ >= 5.72)."""
    agent = HubAgent()
    bus: MessageBus | None = None
    try:
        async with asyncio.timeout(REGISTER_TIMEOUT):
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        bus.export(AGENT_PATH, agent)
        await _register(bus)
        watcher = _Reregister(bus)
        await watcher.watch()
    except (OSError, DBusError, EOFError, TimeoutError) as exc:
        log.warning("bluez_agent_unavailable", error=repr(exc))
        if bus is not None:
            bus.disconnect()
        yield None
        return
    try:
        yield agent
    finally:
        await watcher.close()
        with contextlib.suppress(OSError, DBusError, EOFError, TimeoutError):
            async with asyncio.timeout(REGISTER_TIMEOUT):
                await _call(bus, "UnregisterAgent", "o", [AGENT_PATH])
        bus.disconnect()
