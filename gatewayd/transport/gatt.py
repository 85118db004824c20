"""`GattLink`: one connected BLE device for a driver, with bounded GATT operations and one policy.

Every BLE driver (built-in or third-party) talks to its device through a `GattLink`; none touches
bleak's exceptions, timeouts or pairing itself. A link

* finds the device (`BleakScanner.find_device_by_filter` on the hub's `[ble]` stack) and connects
  (`gatewayd.transport.ble.establish`: BlueZ with its retry workarounds, or the hub's Bumble host);
* runs every GATT operation — `read`, `write`, `subscribe` (bleak's `start_notify`), `pair`,
  `close` — bounded by a timeout (`timeout`, `pair_timeout`, `CLOSE_TIMEOUT`);
* applies the **bond policy** `bond` (`Bond`, read from a driver's options by `read_bond`):

  ========  ==================================================================================
  auto      bond when the device answers an operation with an ATT security error (0x05
            insufficient authentication, 0x0F insufficient encryption, 0x0C insufficient
            encryption key size), then run that operation once more
  always    bond right after connecting, before the first GATT operation
  never     never ask for a bond: a device that insists is `DeviceRefused` (parked) with a
            reason that says so
  ========  ==================================================================================

  A bond the device refuses, or one that fails, is `DeviceRefused` too: a person has to act
  (remove the hub from the device's paired devices, put the device in pairing mode) before the
  gateway is restarted; retrying in a loop would only annoy the device;
* queues what the device sends: `subscribe(uuid)` feeds ``(uuid, bytes)`` items, and a
  disconnection feeds `LOST`; `receive(timeout)` is the bounded waiter on that queue;
* turns every bleak error into the daemon's error tree with ONE function, `ble_error` (below).

Usage (a driver's session)::

    link = GattLink(ctx.device_id, bond=options.bond, noun="sensor", log=ctx.log)
    await link.connect(ctx.ble or BleConfig(), matches, wanted="a CGMS sensor",
                       scan_timeout=options.scan_timeout)
    try:
        serial = gatt_text(await link.read(SERIAL_NUMBER))
        await link.subscribe(MEASUREMENT)
        while (item := await link.receive(timeout=30.0)) is not None:
            uuid, data = item                    # LinkLost when the device drops the link
            ...
    finally:
        await link.close()

`gatewayd.transport.collector.CollectorLoop` runs a sans-I/O collector on a link.

Every bleak (and BlueZ D-Bus) error is mapped by `gatewayd.transport.ble_errors.ble_error`
(its table is there); its names are re-exported here.

Bonding on the two stacks (docs/ble.md, "Bonding on BlueZ and on Bumble"): on Bumble the hub
itself pairs ("just works", LE Secure Connections) exactly as `bond` says. On BlueZ,
bluetoothd answers an ATT security error by pairing on its own and resending the request, so
the driver never sees 0x05 / 0x0F / 0x0C: with "auto" the hub has nothing to do, "always"
also asks bluetoothd to pair right after connecting, and a bond that bluetoothd could not make
reaches the link as ``NotPermitted "Not paired"`` or an ``Authentication*`` error, which is
`DeviceRefused`. "never" cannot stop bluetoothd from
pairing by itself; the link never asks for a bond (no ``Pair`` call) and, when bluetoothd's own
attempt fails, parks the device with the "requires a bond and bond = never" reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

import structlog
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import (
    BleakError,
)

from gatewayd.errors import DeviceError, DeviceNotFound, LinkLost
from gatewayd.options import OptionReader
from gatewayd.transport.ble import BleConfig, establish, scanner_kwargs
from gatewayd.transport.ble_errors import (
    BONDS,
    SECURITY_ERRORS,
    Bond,
    Phase,
    ble_error,
    bond_never,
    security_code,
)

__all__ = [
    "BONDS",
    "CLOSE_TIMEOUT",
    "LOST",
    "PAIRING_TIMEOUT",
    "RESPONSE_TIMEOUT",
    "SECURITY_ERRORS",
    "Bond",
    "GattLink",
    "Notification",
    "Phase",
    "ble_error",
    "gatt_text",
    "read_bond",
    "security_code",
]

#: Seconds one GATT operation may take by default (a real link answers in tens of ms).
RESPONSE_TIMEOUT: Final = 10.0
#: Seconds a bonding may take by default (the device may show a prompt to confirm).
PAIRING_TIMEOUT: Final = 30.0
#: Seconds our own disconnect may take when the link closes; its errors no longer matter.
CLOSE_TIMEOUT: Final = 5.0

#: One value the device sent: (characteristic UUID as subscribed, the bytes).
Notification = tuple[str, bytes]


class _Lost:
    """The queue item that says the link dropped."""

    def __repr__(self) -> str:
        return "LOST"


LOST: Final = _Lost()


def read_bond(reader: OptionReader, default: Bond = "auto", key: str = "bond") -> Bond:
    """The `bond` option of a BLE driver's ``[[devices]]`` table (see the module docstring).

    Accepts "auto", "always", "never", and the booleans older configs use: ``true`` is "auto"
    (bond when the device asks), ``false`` is "never".
    """
    raw = reader.raw(key, default)
    if raw is True:
        return "auto"
    if raw is False:
        return "never"
    for bond in BONDS:
        if raw == bond:
            return bond
    raise reader.error(key, f"must be one of auto, always, never (or true / false), got {raw!r}")


def gatt_text(value: bytes | bytearray) -> str:
    """A GATT string characteristic as text (padding and line ends stripped)."""
    return bytes(value).decode("utf-8", "replace").strip("\x00 \r\n")


class GattLink:
    """One connection to one BLE device (see the module docstring); not reusable."""

    def __init__(
        self,
        device_id: str,
        *,
        bond: Bond = "auto",
        noun: str = "device",
        log: structlog.typing.FilteringBoundLogger | None = None,
        timeout: float = RESPONSE_TIMEOUT,
        pair_timeout: float = PAIRING_TIMEOUT,
    ) -> None:
        """`device_id` names the device in errors; `timeout` bounds each GATT operation and
        `pair_timeout` a bonding (seconds)."""
        self.device_id = device_id
        self.bond: Bond = bond
        self.noun = noun
        self.timeout = timeout
        self.pair_timeout = pair_timeout
        self.log = log or structlog.get_logger().bind(device=device_id)
        #: The device found by `connect()` (None before).
        self.device: BLEDevice | None = None
        self._client: BleakClient | None = None
        self._queue: asyncio.Queue[Notification | _Lost] = asyncio.Queue()
        self._lost = False
        self._paired = False

    # -- connection ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The device's Bluetooth address ("" before `connect()`)."""
        return self.device.address if self.device is not None else ""

    @property
    def client(self) -> BleakClient:
        """The connected bleak client (RuntimeError outside a connection)."""
        if self._client is None:
            raise RuntimeError("the GATT link is not connected")
        return self._client

    @property
    def is_connected(self) -> bool:
        """Whether the link is up."""
        return self._client is not None and self._client.is_connected and not self._lost

    @property
    def paired(self) -> bool:
        """Whether this link bonded (or was told the device is bonded)."""
        return self._paired

    async def find(
        self,
        cfg: BleConfig,
        match: Callable[[BLEDevice, AdvertisementData], bool],
        *,
        wanted: str,
        scan_timeout: float,
        **scan: Any,
    ) -> BLEDevice:
        """The first device `match` accepts within `scan_timeout` s (`scan`: more scanner
        arguments, e.g. ``service_uuids``); `DeviceNotFound` ("<wanted> did not advertise")."""
        kwargs = {**scanner_kwargs(cfg), **scan}
        try:
            found = await BleakScanner.find_device_by_filter(match, timeout=scan_timeout, **kwargs)
        except BleakError as exc:
            raise ble_error(exc, "scanning", device=self.device_id, phase="connect") from exc
        if found is None:
            raise DeviceNotFound(
                f"{wanted} did not advertise within {scan_timeout:g} s", device=self.device_id
            )
        return found

    async def connect(
        self,
        cfg: BleConfig,
        match: Callable[[BLEDevice, AdvertisementData], bool],
        *,
        wanted: str,
        scan_timeout: float,
        name: str | None = None,
        **scan: Any,
    ) -> None:
        """Find the device (`find`) and connect; bond at once with ``bond = "always"``.

        `name` labels the device in bleak-retry-connector's logs (default: its advertised
        name). Raises `DeviceNotFound`, `LinkLost` / `DeviceError` (retried) or
        `DeviceRefused`; the link is closed again when connecting fails after the connection.
        """
        device = await self.find(cfg, match, wanted=wanted, scan_timeout=scan_timeout, **scan)
        await self.attach(device, cfg, name=name)

    async def attach(self, device: BLEDevice, cfg: BleConfig, *, name: str | None = None) -> None:
        """Connect to `device` (found by the caller); as `connect()` without the scan."""
        if self._client is not None:
            raise RuntimeError("a GattLink connects once")
        self.device = device
        self._client = await establish(
            device, cfg, name=name or device.name, disconnected_callback=self._on_disconnect
        )
        if self.bond == "always":
            try:
                await self.pair('bond = "always"')
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        """Disconnect (bounded by `CLOSE_TIMEOUT`; errors no longer matter). Idempotent."""
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(BleakError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await client.disconnect()

    async def __aenter__(self) -> GattLink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _on_disconnect(self, _client: BleakClient) -> None:
        self._queue.put_nowait(LOST)

    # -- GATT ------------------------------------------------------------------------------------

    def has_service(self, uuid: str) -> bool:
        """Whether the connected device has this service."""
        return self.client.services.get_service(uuid) is not None

    def has_characteristic(self, uuid: str) -> bool:
        """Whether the connected device has this characteristic."""
        return self.client.services.get_characteristic(uuid) is not None

    async def read(self, uuid: str, *, what: str | None = None) -> bytes:
        """Read a characteristic's value."""
        value = await self._run(what or f"read {uuid}", lambda c: c.read_gatt_char(uuid))
        return bytes(value)

    async def write(
        self, uuid: str, data: bytes, *, response: bool = True, what: str | None = None
    ) -> None:
        """Write a characteristic's value (with response: a write request; else a command)."""
        await self._run(
            what or f"write {uuid}", lambda c: c.write_gatt_char(uuid, data, response=response)
        )

    async def subscribe(self, uuid: str, *, what: str | None = None) -> None:
        """Enable notifications (or indications) of `uuid`; each value is queued as
        ``(uuid, bytes)`` for `receive()`."""

        def on_value(_characteristic: object, data: bytearray) -> None:
            self._queue.put_nowait((uuid, bytes(data)))

        await self._run(what or f"subscribe {uuid}", lambda c: c.start_notify(uuid, on_value))

    async def pair(self, reason: str, *, during: str | None = None) -> None:
        """Bond with the device now (no-op once bonded); `reason` (and the operation it
        interrupted, `during`) are logged.

        `DeviceRefused` when the device refuses or ``bond = "never"``; `LinkLost` when the link
        drops or the bonding takes longer than `pair_timeout`.
        """
        if self._paired:
            return
        if self.bond == "never":
            raise bond_never("bonding", reason, device=self.device_id, noun=self.noun)
        client = self.client
        self.log.info("ble_bonding", reason=reason, during=during, ble_address=self.address)
        try:
            async with asyncio.timeout(self.pair_timeout):
                await client.pair()
        except TimeoutError as exc:
            raise LinkLost(
                f"bonding: no answer from the {self.noun} within {self.pair_timeout:g} s",
                device=self.device_id,
            ) from exc
        except (BleakError, NotImplementedError) as exc:
            raise self._error(exc, during or reason, phase="pair") from exc
        self._paired = True
        self.log.info("ble_bonded", ble_address=self.address)

    async def receive(self, timeout: float | None) -> Notification | None:  # noqa: ASYNC109
        """The next queued value; None after `timeout` s of silence (None: wait for ever).

        `LinkLost` once the device dropped the link (and on every call after that).
        """
        if self._lost:
            raise self._dropped()
        try:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if isinstance(item, _Lost):
            self._lost = True
            raise self._dropped()
        return item

    def _dropped(self) -> LinkLost:
        return LinkLost(f"the {self.noun} dropped the link", device=self.device_id)

    async def _run(self, what: str, operation: Callable[[BleakClient], Awaitable[Any]]) -> Any:
        """`operation` bounded by `timeout`, bonding and running it once more when the device
        asks for a bond and the policy allows it; bleak errors mapped by `ble_error`."""
        retried = False
        while True:
            client = self.client if not self._lost else None
            if client is None:
                raise LinkLost(f"{what}: the {self.noun} dropped the link", device=self.device_id)
            try:
                async with asyncio.timeout(self.timeout):
                    return await operation(client)
            except TimeoutError as exc:
                raise LinkLost(
                    f"{what}: no answer from the {self.noun} within {self.timeout:g} s",
                    device=self.device_id,
                ) from exc
            except BleakError as exc:
                code = security_code(exc)
                if code is None or retried or self._paired or self.bond == "never":
                    raise self._error(exc, what) from exc
                await self.pair(f"ATT 0x{code:02x}", during=what)
                retried = True

    def _error(self, exc: BaseException, what: str, *, phase: Phase = "gatt") -> DeviceError:
        client = self._client
        return ble_error(
            exc,
            what,
            device=self.device_id,
            bond=self.bond,
            phase=phase,
            connected=client is not None and client.is_connected,
            noun=self.noun,
        )
