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

from gatewayd.transport.bluez.watch import bluez_watch

__all__ = ["AGENT_PATH", "CAPABILITY", "HubAgent", "bluez_agent"]

AGENT_PATH: Final = "/org/gatewayd/agent"
CAPABILITY: Final = "NoInputNoOutput"
#: Seconds bluetoothd may take to answer a registration (it answers in milliseconds).
REGISTER_TIMEOUT: Final = 5.0
_REJECTED: Final = "org.bluez.Error.Rejected"


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


async def _register(bus: MessageBus) -> bool:
    """Register the agent and make it the default one; False (logged) when BlueZ refuses or
    is not there."""
    try:
        async with asyncio.timeout(REGISTER_TIMEOUT):
            await _call(bus, "RegisterAgent", "os", [AGENT_PATH, CAPABILITY])
            await _call(bus, "RequestDefaultAgent", "o", [AGENT_PATH])
    except (OSError, DBusError, EOFError, TimeoutError) as exc:
        log.warning("bluez_agent_unavailable", error=repr(exc))
        return False
    log.info("bluez_agent_registered", path=AGENT_PATH, capability=CAPABILITY)
    return True


@contextlib.asynccontextmanager
async def bluez_agent() -> AsyncIterator[HubAgent | None]:
    """The hub's agent, BlueZ's default one while inside: registered now if bluetoothd runs,
    and again whenever it (re)starts (`gatewayd.transport.bluez.watch`, whose watch of
    bluetoothd runs as long). Yields None when there is no system bus (logged)."""
    try:
        async with asyncio.timeout(REGISTER_TIMEOUT):
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except (OSError, EOFError, TimeoutError) as exc:
        log.warning("bluez_agent_unavailable", error=repr(exc))
        yield None
        return
    agent = HubAgent()
    tasks: set[asyncio.Task[bool]] = set()

    def register_again() -> None:
        task = asyncio.get_running_loop().create_task(_register(bus))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        bus.export(AGENT_PATH, agent)
        async with bluez_watch(bus) as watch:
            watch.on_new_owner(register_again)
            await _register(bus)
            try:
                yield agent
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await _unregister(bus)
    finally:
        bus.disconnect()


async def _unregister(bus: MessageBus) -> None:
    with contextlib.suppress(OSError, DBusError, EOFError, TimeoutError):
        async with asyncio.timeout(REGISTER_TIMEOUT):
            await _call(bus, "UnregisterAgent", "o", [AGENT_PATH])
