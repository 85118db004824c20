"""A Bumble host stack on one controller: the "radio" the Bumble bleak backend talks through.

A `BumbleHost` owns a Bumble `Device` in the central role on one HCI controller: a transport named
by a Bumble string (``usb:0`` for a dedicated USB dongle, ``tcp-client:127.0.0.1:9001`` for a
controller served by an emulator process, ``serial:/dev/ttyUSB0,1000000``...) or a virtual
controller in this process (`BumbleHost.on_controller`, see `gatewayd.transport.bumble.link`).

How the backend classes find their host (both are supported):

- **per-event-loop registry** (what drivers use, see `gatewayd.transport.bumble.registry`):
  `await configure_bumble("usb:0")` (or a `BumbleHost`) once in the loop, then plain
  `BleakScanner(backend=BumbleScanner)` and `BleakClient(dev, backend=BumbleClient)` use it;
  `await release_bumble()` closes it. `bumble_session(hci)` is the pair as a context manager.
- **explicit binding**: `bumble_backend(host)` returns a (scanner, client) pair of subclasses bound
  to one host, for a test that drives two radios in one loop.

Bumble objects belong to the loop they were created in, as bleak's BlueZ manager does: a host is
opened, used and closed in one loop (pytest-asyncio's function loops close it in teardown).

The host serialises connection attempts (a controller initiates one LE connection at a time),
shares one scan among concurrent scanners, disconnects links nobody is waiting for (a connection
completing after its `connect` was cancelled), and re-opens its transport on next use after the
transport dropped (a USB dongle unplugged, the emulator process killed): Bumble then reports every
connection as disconnected, so each client's disconnected callback fires.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from bleak.exc import BleakBluetoothNotAvailableError, BleakBluetoothNotAvailableReason, BleakError
from bumble import hci
from bumble.core import BaseBumbleError, PhysicalTransport
from bumble.device import Advertisement, Connection, Device
from bumble.host import Host
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

from gatewayd.cancellation import cancelling

if TYPE_CHECKING:
    from bumble.controller import Controller

__all__ = ["BumbleHost"]

#: ATT MTU we ask for: the largest a characteristic value can use (512 bytes + 5 of header).
DEFAULT_MTU = 517
#: Resetting and configuring a controller takes milliseconds; a silent one must not hang start-up.
POWER_ON_TIMEOUT = 10.0
#: A polite disconnect on close; past this the link is dropped with the transport anyway.
CLOSE_DISCONNECT_TIMEOUT = 2.0

ScanListener = Callable[[Advertisement], None]

log = structlog.get_logger().bind(component="ble_bumble")


def _just_works(_connection: Connection) -> PairingConfig:
    """LE Secure Connections, bonding, no MITM: the hub has no display and no keyboard."""
    delegate = PairingDelegate(io_capability=PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT)
    return PairingConfig(sc=True, mitm=False, bonding=True, delegate=delegate)


class BumbleHost:
    """A Bumble host stack on one HCI controller, opened lazily and re-opened after a loss."""

    def __init__(
        self,
        hci_transport: str,
        *,
        name: str = "gatewayd",
        address: str | None = None,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        self.hci = hci_transport
        self.name = name
        self.mtu = mtu
        self._address = address
        self._controller: Controller | None = None
        self._device: Device | None = None
        self._transport: Transport | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open_lock = asyncio.Lock()
        self._scan_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self._scan_listeners: dict[object, tuple[ScanListener, bool]] = {}
        self._scan_active: bool | None = None  # the running scan's mode; None: not scanning
        self._claimed: hci.Address | None = None  # the peer a `connect` is waiting for
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def on_controller(
        cls,
        controller: Controller,
        *,
        name: str = "gatewayd",
        address: str | None = None,
        mtu: int = DEFAULT_MTU,
    ) -> BumbleHost:
        """A host on a virtual controller of this process (no HCI transport in between)."""
        host = cls(f"controller:{controller.name}", name=name, address=address, mtu=mtu)
        host._controller = controller
        return host

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._device else "idle"
        return f"<BumbleHost {self.hci} {state}>"

    @property
    def is_open(self) -> bool:
        """Whether the stack is up (it comes up again on next use after a transport loss)."""
        return self._device is not None

    @property
    def device(self) -> Device:
        """The Bumble `Device` (raises when the host is not open)."""
        if self._device is None:
            raise BleakError(f"Bumble host {self.hci} is not open")
        return self._device

    async def open(self) -> Device:
        """Open the transport and power the controller on (a no-op when already open)."""
        if self._closed:
            raise BleakError(f"Bumble host {self.hci} was closed")
        async with self._open_lock:
            if self._device is not None:
                return self._device
            loop = asyncio.get_running_loop()
            if self._loop is not None and self._loop is not loop:
                raise BleakError(f"Bumble host {self.hci} belongs to another event loop")
            self._loop = loop
            host, transport = await self._open_host()
            device = Device(name=self.name, address=self._device_address(), host=host)
            device.pairing_config_factory = _just_works
            device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
            device.on(Device.EVENT_CONNECTION, self._on_connection)
            try:
                async with asyncio.timeout(POWER_ON_TIMEOUT):
                    await device.power_on()
            except (TimeoutError, BaseBumbleError, OSError) as exc:
                if transport is not None:
                    await transport.close()
                raise self._unavailable(f"controller did not power on: {exc!r}") from exc
            if transport is not None:
                transport.source.terminated.add_done_callback(self._on_transport_lost)
            self._device, self._transport = device, transport
            log.info("bumble_host_open", hci=self.hci, address=str(device.random_address))
            return device

    async def close(self) -> None:
        """Disconnect every link, power off and close the transport; the host is then unusable."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._shutdown()

    async def __aenter__(self) -> BumbleHost:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _open_host(self) -> tuple[Host, Transport | None]:
        if self._controller is not None:
            controller = self._controller
            return Host(controller, AsyncPipeSink(controller)), None
        try:
            transport = await open_transport(self.hci)
        except (OSError, BaseBumbleError, ValueError) as exc:
            raise self._unavailable(f"cannot open HCI transport: {exc!r}") from exc
        return Host(transport.source, transport.sink), transport

    def _device_address(self) -> hci.Address | None:
        # Default: Bumble makes up a random static address at power-on.
        return hci.Address(self._address) if self._address else None

    def _unavailable(self, reason: str) -> BleakBluetoothNotAvailableError:
        return BleakBluetoothNotAvailableError(
            f"Bumble host {self.hci}: {reason}", BleakBluetoothNotAvailableReason.NO_BLUETOOTH
        )

    async def _shutdown(self) -> None:
        device, transport = self._device, self._transport
        self._device = self._transport = None
        self._scan_listeners.clear()
        self._scan_active = None
        if device is None:
            return
        for connection in list(device.connections.values()):
            with contextlib.suppress(TimeoutError, BaseBumbleError):
                async with asyncio.timeout(CLOSE_DISCONNECT_TIMEOUT):
                    await connection.disconnect()
        with contextlib.suppress(TimeoutError, BaseBumbleError):
            async with asyncio.timeout(CLOSE_DISCONNECT_TIMEOUT):
                # power_off flushes the host: any link left is reported as disconnected.
                await device.power_off()
        device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        device.remove_listener(Device.EVENT_CONNECTION, self._on_connection)
        if transport is not None:
            await transport.close()
        log.info("bumble_host_closed", hci=self.hci)

    def _on_transport_lost(self, _terminated: asyncio.Future[None]) -> None:
        if self._transport is None:
            return  # our own close
        # Bumble's host has already flushed: every connection reported a disconnection.
        log.warning("bumble_transport_lost", hci=self.hci)
        self._device = self._transport = None
        self._scan_listeners.clear()
        self._scan_active = None

    # -- scanning, shared by every scanner of this host ------------------------------------------

    async def start_scan(self, listener: ScanListener, *, active: bool = True) -> object:
        """Deliver every advertisement to `listener` until `stop_scan(token)`; returns the token."""
        async with self._scan_lock:
            device = await self.open()
            token = object()
            self._scan_listeners[token] = (listener, active)
            try:
                await self._apply_scan_mode(device)
            except BaseException:
                self._scan_listeners.pop(token, None)
                raise
            return token

    async def stop_scan(self, token: object) -> None:
        """Remove a listener; the controller stops scanning with the last one."""
        async with self._scan_lock:
            if self._scan_listeners.pop(token, None) is None or self._device is None:
                return
            await self._apply_scan_mode(self._device)

    async def _apply_scan_mode(self, device: Device) -> None:
        wanted = (
            any(active for _, active in self._scan_listeners.values())
            if self._scan_listeners
            else None
        )
        if wanted == self._scan_active:
            return
        try:
            if self._scan_active is not None:
                await device.stop_scanning()
                self._scan_active = None
            if wanted is not None:
                # Duplicates are wanted: bleak reports every advertisement (RSSI, data changes).
                await device.start_scanning(active=wanted, filter_duplicates=False)
                self._scan_active = wanted
        except BaseBumbleError as exc:
            raise BleakError(f"Bumble host {self.hci}: scanning failed: {exc}") from exc

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        for listener, _active in list(self._scan_listeners.values()):
            try:
                listener(advertisement)
            except Exception:  # a broken listener must not break Bumble's packet pump
                log.exception("bumble_scan_listener_failed", hci=self.hci)

    async def find_address(self, address: str) -> hci.Address:
        """The typed address (public or random) of the advertiser `AA:BB:...` (bound by caller)."""
        wanted = address.upper()
        found: asyncio.Future[hci.Address] = asyncio.get_running_loop().create_future()

        def listener(advertisement: Advertisement) -> None:
            seen = advertisement.address
            if seen.to_string(with_type_qualifier=False) == wanted and not found.done():
                found.set_result(seen)

        token = await self.start_scan(listener)
        try:
            return await found
        finally:
            await self.stop_scan(token)

    # -- connections -----------------------------------------------------------------------------

    async def connect(self, address: hci.Address) -> Connection:
        """Create an LE connection to `address` (one attempt at a time; cancel to give up)."""
        async with self._connect_lock:
            device = await self.open()
            self._claimed = address
            try:
                return await device.connect(address, PhysicalTransport.LE, timeout=None)
            except asyncio.CancelledError:
                self._claimed = None  # from now on a completing link is nobody's
                if cancelling():  # else: Bumble flushed (link lost)
                    await self._cancel_connect(device)
                raise
            finally:
                self._claimed = None

    async def _cancel_connect(self, device: Device) -> None:
        # The controller answers with a failed connection-complete event (no one waits for it);
        # if the link completed anyway, `_on_connection` drops it as unclaimed.
        with contextlib.suppress(TimeoutError, BaseBumbleError):
            async with asyncio.timeout(1.0):
                await device.send_sync_command(hci.HCI_LE_Create_Connection_Cancel_Command())

    def _on_connection(self, connection: Connection) -> None:
        unclaimed = connection.role == hci.Role.CENTRAL and connection.peer_address != self._claimed
        if connection.transport != PhysicalTransport.LE or not unclaimed:
            return
        log.info("bumble_unclaimed_link_dropped", peer=str(connection.peer_address))
        task = asyncio.get_running_loop().create_task(self._drop(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drop(self, connection: Connection) -> None:
        with contextlib.suppress(TimeoutError, BaseBumbleError):
            async with asyncio.timeout(CLOSE_DISCONNECT_TIMEOUT):
                await connection.disconnect()
