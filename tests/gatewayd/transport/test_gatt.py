"""`gatewayd.transport.gatt`: the one bleak-error mapping, and `GattLink` on a real Bumble link.

The mapping tests build bleak's own exception objects (as bleak's BlueZ and Bumble backends
raise them); the link tests run unmodified bleak over the project's Bumble backend against a
small GATT peripheral on a virtual link, with characteristics that stall, refuse or want a bond.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bleak.backends.device import BLEDevice
from bleak.exc import (
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)
from bleak_retry_connector import BleakNotFoundError
from bumble import att
from bumble.core import AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Descriptor, Service
from bumble.pairing import PairingConfig, PairingDelegate

from gatewayd.errors import AttError, DeviceError, DeviceNotFound, DeviceRefused, LinkLost
from gatewayd.options import OptionReader
from gatewayd.transport.ble import BleConfig
from gatewayd.transport.bumble.backend import bumble_session
from gatewayd.transport.bumble.link import InProcessLink, in_process_link, refuse_pairing
from gatewayd.transport.collector import CollectorLoop
from gatewayd.transport.gatt import Bond, GattLink, ble_error, read_bond, security_code
from protocols.gatt.session import Request, RequestKind

pytestmark = pytest.mark.timeout(15)

# -- the mapping ---------------------------------------------------------------------------------

Code = BleakGATTProtocolErrorCode


def dbus(name: str, *body: str) -> BleakDBusError:
    return BleakDBusError(name, list(body))


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError(), LinkLost),
        (BleakDeviceNotFoundError("AA:BB:CC:DD:EE:FF"), DeviceNotFound),
        (BleakNotFoundError("gone"), DeviceNotFound),
        (BleakGATTProtocolError(Code.INSUFFICIENT_AUTHENTICATION), DeviceRefused),
        (BleakGATTProtocolError(Code.INSUFFICIENT_ENCRYPTION), DeviceRefused),
        (BleakGATTProtocolError(Code.INSUFFICIENT_ENCRYPTION_KEY_SIZE), DeviceRefused),
        (BleakGATTProtocolError(Code.CCCD_IMPROPERLY_CONFIGURED), AttError),
        (BleakGATTProtocolError(0x80), AttError),
        (dbus("org.bluez.Error.NotPermitted", "Not paired"), DeviceRefused),
        (dbus("org.bluez.Error.AuthenticationFailed"), DeviceRefused),
        (dbus("org.bluez.Error.AuthenticationRejected"), DeviceRefused),
        (dbus("org.bluez.Error.AuthenticationCanceled"), DeviceRefused),
        (dbus("org.bluez.Error.NotPermitted", "Read not permitted"), AttError),
        (dbus("org.bluez.Error.InProgress", "In Progress"), LinkLost),
        (dbus("org.bluez.Error.Failed", "le-connection-abort-by-local"), LinkLost),
        (dbus("org.bluez.Error.NotConnected", "Not Connected"), LinkLost),
        (dbus("org.freedesktop.DBus.Error.UnknownObject", "no such object"), LinkLost),
        (dbus("org.bluez.Error.NotSupported", "Operation is not supported"), DeviceError),
        (BleakError("something odd"), DeviceError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, type) else repr(v)[:60],
)
def test_every_bleak_error_becomes_a_gateway_error(exc: BaseException, kind: type) -> None:
    error = ble_error(exc, "read serial", device="cgm-1", noun="sensor")
    assert type(error) is kind
    assert error.device == "cgm-1"
    assert str(error).startswith("read serial: ")
    assert error.retryable is (kind is not DeviceRefused)


def test_the_att_code_is_kept_and_named() -> None:
    error = ble_error(BleakGATTProtocolError(0xFD), "subscribe", noun="sensor")
    assert isinstance(error, AttError)
    assert error.code == 0xFD
    assert "ATT 0xfd (cccd improperly configured)" in str(error)
    gatt = ble_error(dbus("org.bluez.Error.NotPermitted", "Write not permitted"), "write")
    assert isinstance(gatt, AttError)
    assert gatt.code == 0x03


def test_a_device_that_wants_a_bond_says_what_to_do_for_each_policy() -> None:
    insists = BleakGATTProtocolError(Code.INSUFFICIENT_ENCRYPTION)
    never = ble_error(insists, "read", bond="never", noun="meter")
    assert 'requires bonding (ATT 0x0f insufficient encryption) and bond = "never"' in str(never)
    assert 'set bond = "auto"' in str(never)
    stale = ble_error(insists, "read", bond="auto", noun="meter")
    assert "although the hub bonded" in str(stale)
    assert "remove the hub from the meter's paired devices" in str(stale)
    # BlueZ: bluetoothd bonded by itself and failed
    not_paired = dbus("org.bluez.Error.NotPermitted", "Not paired")
    assert "bonding refused by the sensor (NotPermitted: Not paired)" in str(
        ble_error(not_paired, "read", noun="sensor")
    )
    assert 'bond = "never"' in str(ble_error(not_paired, "read", bond="never", noun="sensor"))


@pytest.mark.parametrize(
    ("connected", "kind"), [(True, DeviceRefused), (False, LinkLost)], ids=["up", "dropped"]
)
def test_a_failed_pairing_is_a_refused_bond_unless_the_link_dropped(
    connected: bool, kind: type
) -> None:
    exc = BleakError("pairing with F0:F1:F2:F3:F4:F5 failed: PAIRING_NOT_SUPPORTED")
    error = ble_error(exc, "bonding", phase="pair", connected=connected, noun="sensor")
    assert type(error) is kind
    if kind is DeviceRefused:
        assert "put the sensor in pairing mode" in str(error)


def test_a_gateway_error_passes_through_and_dropped_links_are_link_lost() -> None:
    refused = DeviceRefused("no")
    assert ble_error(refused, "x") is refused
    assert isinstance(ble_error(BleakError("Not connected"), "x", connected=False), LinkLost)
    failed = ble_error(BleakError("no route"), "connect", phase="connect", connected=False)
    assert type(failed) is DeviceError


def test_the_public_surface() -> None:
    from gatewayd.transport import collector, gatt

    assert set(gatt.__all__) == {
        "BONDS", "CLOSE_TIMEOUT", "LOST", "PAIRING_TIMEOUT", "RESPONSE_TIMEOUT",
        "SECURITY_ERRORS", "Bond", "GattLink", "Notification", "Phase", "ble_error",
        "gatt_text", "read_bond", "security_code",
    }  # fmt: skip
    assert set(collector.__all__) == {"Collector", "CollectorLoop"}
    for name in ("read", "write", "subscribe", "pair", "receive", "connect", "close"):
        assert callable(getattr(GattLink, name))


def test_security_codes() -> None:
    assert security_code(BleakGATTProtocolError(0x05)) == 0x05
    assert security_code(BleakGATTProtocolError(0x02)) is None
    assert security_code(dbus("org.bluez.Error.NotPermitted", "Not paired")) is None


@pytest.mark.parametrize(
    ("raw", "bond"),
    [("auto", "auto"), ("always", "always"), ("never", "never"), (True, "auto"), (False, "never")],
)
def test_read_bond_takes_the_policy_and_the_old_booleans(raw: object, bond: Bond) -> None:
    reader = OptionReader({"bond": raw}, "f.toml", "devices[0]")
    assert read_bond(reader) == bond
    assert read_bond(OptionReader({}, "f.toml", "devices[0]"), "never") == "never"


def test_read_bond_names_the_key() -> None:
    with pytest.raises(Exception, match=r"devices\[0\]\.bond: must be one of auto, always, never"):
        read_bond(OptionReader({"bond": "sometimes"}, "f.toml", "devices[0]"))


# -- GattLink on a virtual link -----------------------------------------------------------------

NAME = "GATT-LINK-TEST"
SERVICE = "b0e1b2c3-0000-4000-8000-00000000cafe"
PLAIN = "b0e1b2c3-0001-4000-8000-00000000cafe"  # read: b"plain"; write: accepted
STALL = "b0e1b2c3-0002-4000-8000-00000000cafe"  # read / write never answered
SECRET = "b0e1b2c3-0003-4000-8000-00000000cafe"  # read needs an encrypted link
NOTIFY = "b0e1b2c3-0004-4000-8000-00000000cafe"  # notify, ordinary CCCD
NOTIFY_STALL = "b0e1b2c3-0005-4000-8000-00000000cafe"  # CCCD write never answered
NOTIFY_REFUSED = "b0e1b2c3-0006-4000-8000-00000000cafe"  # CCCD write: ATT 0x80
NOTIFY_SECURE = "b0e1b2c3-0007-4000-8000-00000000cafe"  # CCCD write needs encryption
REFUSED = "b0e1b2c3-0008-4000-8000-00000000cafe"  # read / write: ATT 0x80
CONTROL = "b0e1b2c3-0009-4000-8000-00000000cafe"  # write b"ask": indicates b"answer"; else mute
CCCD = "00002902-0000-1000-8000-00805f9b34fb"
BUMBLE = BleConfig(stack="bumble", hci="tcp-client:127.0.0.1:1")  # the loop's host is used
P = Characteristic.Properties


class Stalling(PairingDelegate):
    """A device that never answers a pairing request."""

    async def accept(self) -> bool:
        await asyncio.Event().wait()
        return False  # pragma: no cover - never reached


class Peripheral:
    """A GATT server whose characteristics misbehave on purpose (see the UUIDs above)."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.release = asyncio.Event()
        self.notify: Characteristic[bytes] = Characteristic(NOTIFY, P.NOTIFY, "READABLE", b"")
        self.control: Characteristic[bytes] = Characteristic(
            CONTROL, P.WRITE | P.INDICATE, "WRITEABLE", CharacteristicValue(write=self._control)
        )
        self.tasks: set[asyncio.Task[None]] = set()

        def cccd(write: Any, permissions: str = "READABLE,WRITEABLE") -> Descriptor:
            return Descriptor(CCCD, permissions, CharacteristicValue(read=self._zero, write=write))

        device.add_service(
            Service(
                SERVICE,
                [
                    Characteristic(
                        PLAIN,
                        P.READ | P.WRITE,
                        "READABLE,WRITEABLE",
                        CharacteristicValue(read=lambda _c: b"plain", write=lambda _c, _v: None),
                    ),
                    Characteristic(
                        STALL,
                        P.READ | P.WRITE,
                        "READABLE,WRITEABLE",
                        CharacteristicValue(read=self._stall_read, write=self._stall_write),
                    ),
                    Characteristic(SECRET, P.READ, "READABLE,READ_REQUIRES_ENCRYPTION", b"bonded"),
                    self.notify,
                    Characteristic(
                        NOTIFY_STALL, P.NOTIFY, "READABLE", b"", [cccd(self._stall_write)]
                    ),
                    Characteristic(NOTIFY_REFUSED, P.NOTIFY, "READABLE", b"", [cccd(self._refuse)]),
                    Characteristic(
                        NOTIFY_SECURE,
                        P.NOTIFY,
                        "READABLE",
                        b"",
                        [cccd(lambda _c, _v: None, "READABLE,WRITEABLE,WRITE_REQUIRES_ENCRYPTION")],
                    ),
                    Characteristic(
                        REFUSED,
                        P.READ | P.WRITE,
                        "READABLE,WRITEABLE",
                        CharacteristicValue(read=self._refuse_read, write=self._refuse),
                    ),
                    self.control,
                ],
            )
        )

    @staticmethod
    def _zero(_connection: Connection | None) -> bytes:
        return b"\x00\x00"

    @staticmethod
    def _refuse(_connection: Connection | None, _value: bytes) -> None:
        raise att.ATT_Error(0x80)

    @staticmethod
    def _refuse_read(_connection: Connection | None) -> bytes:
        raise att.ATT_Error(0x80)

    def _control(self, _connection: Connection | None, value: bytes) -> None:
        if value == b"ask":
            task = asyncio.get_running_loop().create_task(
                self.device.indicate_subscribers(self.control, b"answer")
            )
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _stall_read(self, _connection: Connection | None) -> bytes:
        await self.release.wait()
        return b"late"

    async def _stall_write(self, _connection: Connection | None, _value: bytes) -> None:
        await self.release.wait()

    def stall_pairing(self) -> None:
        def config(_connection: object) -> PairingConfig:
            return PairingConfig(sc=True, mitm=False, bonding=True, delegate=Stalling())

        self.device.pairing_config_factory = config

    async def advertise(self) -> None:
        ad = AdvertisingData
        data = ad([(ad.COMPLETE_LOCAL_NAME, NAME.encode())])
        await self.device.start_advertising(
            advertising_data=bytes(data),
            auto_restart=True,
            advertising_interval_min=20,
            advertising_interval_max=20,
        )


def is_ours(device: BLEDevice, _adv: object) -> bool:
    return device.name == NAME


@pytest.fixture
async def radio() -> AsyncIterator[tuple[InProcessLink, Peripheral]]:
    async with in_process_link() as link, bumble_session(link.central):
        peripheral = Peripheral(link.peripheral)
        await peripheral.advertise()
        try:
            yield link, peripheral
        finally:
            peripheral.release.set()
            await asyncio.gather(*peripheral.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def connected(bond: Bond = "auto", *, timeout: float = 0.5) -> AsyncIterator[GattLink]:
    async with GattLink("dev", bond=bond, noun="sensor", timeout=timeout, pair_timeout=0.5) as link:
        await link.connect(BUMBLE, is_ours, wanted=NAME, scan_timeout=5)
        yield link


async def test_reads_writes_and_notifications_flow(radio: tuple[InProcessLink, Peripheral]) -> None:
    _link, peripheral = radio
    async with connected() as link:
        assert await link.read(PLAIN) == b"plain"
        await link.write(PLAIN, b"x")
        await link.subscribe(NOTIFY)
        await peripheral.device.notify_subscribers(peripheral.notify, b"\x01\x02")
        assert await link.receive(timeout=5) == (NOTIFY, b"\x01\x02")
        assert await link.receive(timeout=0.05) is None  # silence


@pytest.mark.parametrize("operation", ["read", "write", "subscribe"])
async def test_an_operation_without_answer_is_link_lost(
    radio: tuple[InProcessLink, Peripheral], operation: str
) -> None:
    async with connected(timeout=0.3) as link:
        run = {
            "read": lambda: link.read(STALL),
            "write": lambda: link.write(STALL, b"x"),
            "subscribe": lambda: link.subscribe(NOTIFY_STALL),
        }[operation]
        with pytest.raises(LinkLost, match=r"no answer from the sensor within 0\.3 s"):
            await run()


async def test_a_pairing_without_answer_is_link_lost(
    radio: tuple[InProcessLink, Peripheral],
) -> None:
    radio[1].stall_pairing()
    async with connected() as link:
        with pytest.raises(LinkLost, match=r"bonding: no answer from the sensor within 0\.5 s"):
            await link.read(SECRET)


async def test_an_att_error_from_start_notify_is_mapped(
    radio: tuple[InProcessLink, Peripheral],
) -> None:
    async with connected() as link:
        with pytest.raises(AttError) as refused:
            await link.subscribe(NOTIFY_REFUSED)
    assert refused.value.code == 0x80
    assert "ATT 0x80 (application error)" in str(refused.value)


@pytest.mark.parametrize("uuid", [SECRET, NOTIFY_SECURE], ids=["read", "subscribe"])
async def test_auto_bonds_when_the_device_asks_and_runs_the_operation_again(
    radio: tuple[InProcessLink, Peripheral], uuid: str
) -> None:
    async with connected("auto") as link:
        if uuid == SECRET:
            assert await link.read(SECRET) == b"bonded"
        else:
            await link.subscribe(uuid)
        assert link.paired
        (connection,) = radio[1].device.connections.values()
        assert connection.is_encrypted


async def test_always_bonds_on_connect(radio: tuple[InProcessLink, Peripheral]) -> None:
    async with connected("always") as link:
        assert link.paired
        (connection,) = radio[1].device.connections.values()
        assert connection.is_encrypted
        assert await link.read(SECRET) == b"bonded"


@pytest.mark.parametrize("uuid", [SECRET, NOTIFY_SECURE], ids=["read", "subscribe"])
async def test_never_refuses_a_device_that_requires_a_bond(
    radio: tuple[InProcessLink, Peripheral], uuid: str
) -> None:
    async with connected("never") as link:
        run = link.read if uuid == SECRET else link.subscribe
        with pytest.raises(DeviceRefused, match=r'requires bonding .* and bond = "never"'):
            await run(uuid)
        assert not link.paired
        (connection,) = radio[1].device.connections.values()
        assert not connection.is_encrypted


async def test_a_refused_bond_is_device_refused_with_what_to_do(
    radio: tuple[InProcessLink, Peripheral],
) -> None:
    refuse_pairing(radio[1].device)
    async with connected("auto") as link:
        with pytest.raises(DeviceRefused, match="bonding refused by the sensor") as refused:
            await link.read(SECRET)
    assert "put the sensor in pairing mode" in str(refused.value)


async def test_a_refused_bond_on_connect_closes_the_link(
    radio: tuple[InProcessLink, Peripheral],
) -> None:
    link, peripheral = radio
    refuse_pairing(peripheral.device)
    gatt = GattLink("dev", bond="always", noun="sensor")
    with pytest.raises(DeviceRefused, match="bonding refused"):
        await gatt.connect(BUMBLE, is_ours, wanted=NAME, scan_timeout=5)
    assert not link.central.device.connections


async def test_a_dropped_link_is_link_lost_on_the_queue_and_for_every_operation(
    radio: tuple[InProcessLink, Peripheral],
) -> None:
    _link, peripheral = radio
    async with connected() as link:
        for connection in list(peripheral.device.connections.values()):
            await connection.disconnect()
        with pytest.raises(LinkLost, match="the sensor dropped the link"):
            await link.receive(timeout=5)
        with pytest.raises(LinkLost, match="the sensor dropped the link"):
            await link.receive(timeout=5)  # and again: the marker is not consumed for good
        with pytest.raises(LinkLost):
            await link.read(PLAIN)
        assert not link.is_connected


async def test_a_device_that_does_not_advertise_is_not_found(
    radio: tuple[InProcessLink, Peripheral],
) -> None:
    gatt = GattLink("dev")
    with pytest.raises(DeviceNotFound, match=r"nobody did not advertise within 0\.1 s"):
        await gatt.connect(BUMBLE, lambda _d, _a: False, wanted="nobody", scan_timeout=0.1)


# -- CollectorLoop on a virtual link ------------------------------------------------------------


class Script:
    """A sans-I/O collector that hands out a fixed list of requests and records what it got."""

    def __init__(self, *requests: Request) -> None:
        self.requests = list(requests)
        self.awaiting: Request | None = None
        self.timeouts: list[str] = []

    def next_request(self) -> Request | None:
        if self.awaiting is not None or not self.requests:
            return None
        request = self.requests.pop(0)
        self.awaiting = request if request.awaits_response else None
        return request

    def receive(self, uuid: str, data: bytes) -> list[str]:
        self.awaiting = None
        return [f"{uuid[9:13]}={data.decode()}"]

    def timeout(self) -> list[str]:
        request, self.awaiting = self.awaiting, None
        if request is None:
            return []
        self.timeouts.append(request.label)
        return [f"timeout {request.label}"]


def read(uuid: str, label: str) -> Request:
    return Request(RequestKind.READ, uuid, label=label)


def write(uuid: str, data: bytes, label: str, *, answer: bool = True) -> Request:
    return Request(RequestKind.WRITE, uuid, data, awaits_response=answer, label=label)


async def test_the_loop_reads_writes_and_feeds_indications_then_ends_on_idle_silence(
    radio: tuple[InProcessLink, Peripheral],
) -> None:
    script = Script(read(PLAIN, "plain"), write(CONTROL, b"ask", "ask"))
    async with connected() as link:
        await link.subscribe(CONTROL)
        loop = CollectorLoop(link, script, script.receive, idle_timeout=0.05)
        steps = [events async for events in loop.steps()]
    assert steps == [["0001=plain"], [], ["0009=answer"]]
    assert loop.awaiting is None


async def test_a_missing_answer_becomes_the_collectors_timeout(
    radio: tuple[InProcessLink, Peripheral],
) -> None:
    script = Script(write(CONTROL, b"mute", "mute"))
    async with connected() as link:
        await link.subscribe(CONTROL)
        loop = CollectorLoop(link, script, script.receive, response_timeout=0.1)
        assert await loop.perform_next() == []
        assert loop.awaiting is not None
        assert await loop.wait() == ["timeout mute"]
        assert await loop.perform_next() is None  # nothing left to do
    assert script.timeouts == ["mute"]


async def test_a_refused_request_is_skipped_or_raised_as_the_driver_says(
    radio: tuple[InProcessLink, Peripheral],
) -> None:
    script = Script(read(REFUSED, "optional"), write(REFUSED, b"x", "required"))
    async with connected() as link:
        loop = CollectorLoop(
            link, script, script.receive, skip_refused=lambda r: r.kind is RequestKind.READ
        )
        assert await loop.perform_next() == ["timeout optional"]  # skipped, as if unanswered
        with pytest.raises(AttError, match="required: the sensor answered ATT 0x80"):
            await loop.perform_next()


async def test_hooks_run_around_each_request_and_a_drop_is_link_lost(
    radio: tuple[InProcessLink, Peripheral],
) -> None:
    _link, peripheral = radio
    script = Script(write(PLAIN, b"x", "first", answer=False))
    seen: list[str] = []

    async def before(request: Request) -> None:
        seen.append(f"before {request.label}")

    async def after(request: Request) -> None:
        seen.append(f"after {request.label}")
        for connection in list(peripheral.device.connections.values()):
            await connection.disconnect()

    async with connected() as link:
        loop = CollectorLoop(link, script, script.receive, before=before, after=after)
        with pytest.raises(LinkLost, match="the sensor dropped the link"):
            async for _events in loop.steps():
                pass
    assert seen == ["before first", "after first"]
