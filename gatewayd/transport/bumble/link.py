"""Virtual BLE radios for tests and `gatewayd simulate`: real host stacks, a simulated air.

Two Bumble virtual controllers on one `LocalLink`: the emulated peripheral's and the gateway's. The
peripheral side is a powered-on Bumble `Device`: the caller adds its GATT services, sets its
advertising data and starts advertising. The gateway side is either

- **in this process** (`in_process_link()`): a `BumbleHost` on the gateway's controller, for the
  bleak backend (`configure_bumble(link.central)` or `bumble_backend(link.central)`); or
- **a sibling process** (`serve_sibling_link()`, run by the emulator process): the gateway's
  controller served as HCI over ``tcp-server:127.0.0.1:PORT``, so a separately started gateway uses
  ``hci = "tcp-client:127.0.0.1:PORT"`` (`SiblingLink.hci`). Kill the emulator process to unplug
  the radio; start a new one to plug it back.

Example (in-process)::

    async with in_process_link() as link:
        link.peripheral.add_service(my_service)
        await link.peripheral.start_advertising(advertising_data=ad, auto_restart=True)
        scanner_cls, client_cls = bumble_backend(link.central)

`add_peripheral(link.link, ...)` puts one more peripheral in the same air (e.g. for `gatewayd
scan`). `refuse_pairing(device)` makes a peripheral refuse bonding (emulators' `refuse_bonding`).

Two fidelity fixes over Bumble's virtual controller (see `EmulatedController`): cancelling a
pending connection really cancels it, and an HCI reset drops the controller's links (a gateway
restarted against a running emulator finds the peripheral advertising again).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bumble import hci, ll
from bumble.controller import Controller
from bumble.device import Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport.common import AsyncPipeSink, Transport
from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

from gatewayd.transport.bumble.host import BumbleHost

__all__ = [
    "EmulatedController",
    "InProcessLink",
    "SiblingLink",
    "add_peripheral",
    "in_process_link",
    "refuse_pairing",
    "serve_sibling_link",
]

#: Default addresses: random static ones (two top bits set), easy to spot in logs.
PERIPHERAL_ADDRESS = "F0:F1:F2:F3:F4:F5"
CENTRAL_ADDRESS = "C0:C1:C2:C3:C4:C5"


class EmulatedController(Controller):
    """Bumble's virtual controller, with connection cancel and reset as real controllers do."""

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        """Vol 4, Part E, 7.8.13: cancel, then report the connection as failed (0x02)."""
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        failed = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # After the Command Complete this method's return value becomes (also sent "soon").
        asyncio.get_running_loop().call_soon(self.send_hci_packet, failed)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def on_hci_reset_command(
        self, command: hci.HCI_Reset_Command
    ) -> hci.HCI_StatusReturnParameters:
        """Vol 4, Part E, 7.3.2: a reset ends the links (the peers see a supervision timeout)."""
        for connection in list(self.le_connections.values()):
            connection.send_ll_control_pdu(ll.TerminateInd(hci.HCI_CONNECTION_TIMEOUT_ERROR))
        self.le_connections.clear()
        self.pending_le_connection = None
        self.le_scan_enable = False
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        self.advertising_sets.clear()
        return super().on_hci_reset_command(command)


class _Refusing(PairingDelegate):
    """Answers every pairing request with "Pairing Not Supported" (SMP 0x05)."""

    async def accept(self) -> bool:
        return False


def refuse_pairing(device: Device) -> None:
    """Make an emulated peripheral refuse every bond, as a sensor already bonded to another
    phone (or not in pairing mode) does: the central's pairing fails with SMP "Pairing Not
    Supported". Links it encrypted before keep their keys."""

    def config(_connection: object) -> PairingConfig:
        return PairingConfig(sc=True, mitm=False, bonding=True, delegate=_Refusing())

    device.pairing_config_factory = config


def _peripheral(controller: Controller, name: str, address: str) -> Device:
    host = Host(controller, AsyncPipeSink(controller))
    return Device(name=name, address=hci.Address(address), host=host)


async def add_peripheral(link: LocalLink, *, name: str, address: str) -> Device:
    """One more powered-on peripheral `Device` on `link` (`InProcessLink.link`,
    `SiblingLink.link`): several emulated devices in the air of one gateway."""
    controller = EmulatedController(name, link=link, public_address=None)
    device = _peripheral(controller, name, address)
    await device.power_on()
    return device


async def _stop_peripheral(device: Device) -> None:
    with contextlib.suppress(Exception):  # best effort: the link is going away with it
        async with asyncio.timeout(1.0):
            await device.stop_advertising()
            await device.power_off()


@dataclass
class InProcessLink:
    """Both radios in this process."""

    link: LocalLink
    peripheral: Device
    central: BumbleHost
    peripheral_controller: EmulatedController
    central_controller: EmulatedController


@contextlib.asynccontextmanager
async def in_process_link(
    *,
    peripheral_name: str = "peripheral",
    peripheral_address: str = PERIPHERAL_ADDRESS,
    central_address: str = CENTRAL_ADDRESS,
) -> AsyncIterator[InProcessLink]:
    """A link with a powered-on peripheral `Device` and an open central `BumbleHost`."""
    link = LocalLink()  # type: ignore[no-untyped-call]  # Bumble leaves __init__ unannotated
    peripheral_controller = EmulatedController("peripheral", link=link, public_address=None)
    central_controller = EmulatedController("central", link=link, public_address=None)
    peripheral = _peripheral(peripheral_controller, peripheral_name, peripheral_address)
    central = BumbleHost.on_controller(central_controller, address=central_address)
    try:
        await peripheral.power_on()
        await central.open()
        yield InProcessLink(link, peripheral, central, peripheral_controller, central_controller)
    finally:
        await central.close()
        await _stop_peripheral(peripheral)


@dataclass
class SiblingLink:
    """The peripheral in this (emulator) process; the gateway's controller served over TCP."""

    link: LocalLink
    peripheral: Device
    port: int
    hci: str  # what the gateway opens: tcp-client:HOST:PORT
    transport: Transport


@contextlib.asynccontextmanager
async def serve_sibling_link(
    *,
    bind: str = "127.0.0.1",
    port: int = 0,
    peripheral_name: str = "peripheral",
    peripheral_address: str = PERIPHERAL_ADDRESS,
) -> AsyncIterator[SiblingLink]:
    """Serve the gateway's controller as HCI on `bind:port` (0: a free port, see `.port`)."""
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without
    # it every ATT round trip waits ~40 ms for Nagle and delayed ACKs (measured: 44 ms vs 0.3).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
    except OSError:
        sock.close()
        raise
    bound_port: int = sock.getsockname()[1]
    transport = await open_tcp_server_transport_with_socket(sock)
    link = LocalLink()  # type: ignore[no-untyped-call]  # Bumble leaves __init__ unannotated
    peripheral_controller = EmulatedController("peripheral", link=link)
    EmulatedController("gateway", host_source=transport.source, host_sink=transport.sink, link=link)
    peripheral = _peripheral(peripheral_controller, peripheral_name, peripheral_address)
    try:
        await peripheral.power_on()
        yield SiblingLink(
            link, peripheral, bound_port, f"tcp-client:{bind}:{bound_port}", transport
        )
    finally:
        await _stop_peripheral(peripheral)
        await _close_tcp_server(transport)


async def _close_tcp_server(transport: Transport) -> None:
    # Bumble's TCP server transport closes neither its listening socket nor the accepted
    # connection on close(); both are reached through attributes its classes define.
    server: asyncio.Server | None = getattr(transport, "server", None)
    client: asyncio.BaseTransport | None = getattr(transport.sink, "transport", None)
    await transport.close()
    if client is not None:
        client.close()
    if server is not None:
        server.close()
        await server.wait_closed()
