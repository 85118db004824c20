"""Unmodified bleak code against a Bumble GATT peripheral over a virtual link (real ATT/GATT).

The peripheral below is defined here and used in two topologies: in this process (a `LocalLink`
with two virtual controllers) and in a sibling process serving the gateway's controller as HCI
over TCP (this file run as ``python test_bumble_backend.py --serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)
from bumble import att, hci
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Descriptor, Service

from gatewayd.errors import DeviceNotFound
from gatewayd.transport.ble import BleConfig, ble_session, establish, scanner_kwargs
from gatewayd.transport.bumble.backend import (
    BumbleClient,
    BumbleDetails,
    BumbleScanner,
    bumble_backend,
    bumble_session,
    configure_bumble,
)
from gatewayd.transport.bumble.link import (
    PERIPHERAL_ADDRESS,
    InProcessLink,
    in_process_link,
    serve_sibling_link,
)

pytestmark = pytest.mark.timeout(10)

NAME = "CGM-TEST"
SERVICE = "a0e1b2c3-0000-4000-8000-00000000cafe"
READ = "a0e1b2c3-0001-4000-8000-00000000cafe"
WRITE = "a0e1b2c3-0002-4000-8000-00000000cafe"
NOTIFY = "a0e1b2c3-0003-4000-8000-00000000cafe"
INDICATE = "a0e1b2c3-0004-4000-8000-00000000cafe"
REJECT = "a0e1b2c3-0005-4000-8000-00000000cafe"
WRITE_ONLY = "a0e1b2c3-0006-4000-8000-00000000cafe"
SECRET = "a0e1b2c3-0007-4000-8000-00000000cafe"
SLOW = "a0e1b2c3-0008-4000-8000-00000000cafe"  # answers a read when released
NOTE = "a0e1b2c3-00d1-4000-8000-00000000cafe"  # a writable descriptor of READ
USER_DESCRIPTION = "00002901-0000-1000-8000-00805f9b34fb"
CGM_SERVICE_16 = "0000181f-0000-1000-8000-00805f9b34fb"
UUID_32 = "12345678-0000-1000-8000-00805f9b34fb"
COMPANY = 0x0059
P = Characteristic.Properties


class Peripheral:
    """A tiny CGM-like GATT server on a Bumble device; writes of `notify:N` / `drop` drive it."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.writes: asyncio.Queue[bytes] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.read_started = asyncio.Event()
        self.release = asyncio.Event()
        self.notify: Characteristic[bytes] = Characteristic(NOTIFY, P.NOTIFY, "READABLE")
        self.indicate: Characteristic[bytes] = Characteristic(INDICATE, P.INDICATE, "READABLE")
        described = Descriptor(USER_DESCRIPTION, "READABLE", b"Glucose")
        note = Descriptor(NOTE, "READABLE,WRITEABLE", b"")
        device.add_service(
            Service(
                SERVICE,
                [
                    Characteristic(
                        READ,
                        P.READ,
                        "READABLE",
                        CharacteristicValue(read=lambda _c: b"hello", write=self._not_writable),
                        [described, note],
                    ),
                    Characteristic(
                        WRITE,
                        P.WRITE | P.WRITE_WITHOUT_RESPONSE,
                        "WRITEABLE",
                        CharacteristicValue(write=self._on_write),
                    ),
                    self.notify,
                    self.indicate,
                    Characteristic(
                        REJECT, P.READ, "READABLE", CharacteristicValue(read=self._reject)
                    ),
                    Characteristic(
                        WRITE_ONLY,
                        P.WRITE,
                        "WRITEABLE",
                        CharacteristicValue(read=self._not_readable, write=lambda _c, _v: None),
                    ),
                    Characteristic(SECRET, P.READ, "READABLE,READ_REQUIRES_ENCRYPTION", b"bonded"),
                    Characteristic(SLOW, P.READ, "READABLE", CharacteristicValue(read=self._slow)),
                ],
            )
        )

    # Bumble's GATT server does not enforce READABLE/WRITEABLE: an emulator refuses by itself.
    @staticmethod
    def _reject(_connection: Connection | None) -> bytes:
        raise att.ATT_Error(0x80)  # an application error, as CGMs use for "busy"

    @staticmethod
    def _not_readable(_connection: Connection | None) -> bytes:
        raise att.ATT_Error(att.ErrorCode.READ_NOT_PERMITTED)

    @staticmethod
    def _not_writable(_connection: Connection | None, _value: bytes) -> None:
        raise att.ATT_Error(att.ErrorCode.WRITE_NOT_PERMITTED)

    async def _slow(self, _connection: Connection | None) -> bytes:
        self.read_started.set()
        await self.release.wait()
        return b"late"

    def _on_write(self, _connection: Connection | None, value: bytes) -> None:
        self.writes.put_nowait(value)
        if value.startswith(b"notify:"):
            self._spawn(self.send_notifications(int(value[7:])))
        elif value == b"drop":
            self._spawn(self.drop())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def send_notifications(self, count: int) -> None:
        for sequence in range(count):
            await self.device.notify_subscribers(self.notify, struct.pack("<H", sequence))

    async def drop(self) -> None:
        for connection in list(self.device.connections.values()):
            await connection.disconnect()

    async def advertise(self) -> None:
        ad = AdvertisingData
        data = ad(
            [
                (ad.COMPLETE_LOCAL_NAME, NAME.encode()),
                (ad.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, b"\x1f\x18"),
                (ad.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS, b"\x78\x56\x34\x12"),
                (ad.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS, UUID(SERVICE).to_bytes()),
                (ad.SERVICE_DATA_16_BIT_UUID, b"\x1f\x18\x01\x02"),
                (ad.MANUFACTURER_SPECIFIC_DATA, struct.pack("<H", COMPANY) + b"\xca\xfe"),
                (ad.TX_POWER_LEVEL, struct.pack("<b", -8)),
            ]
        )
        # 20 ms: the shortest legal interval; the virtual link connects on the next advertisement.
        await self.device.start_advertising(
            advertising_data=bytes(data),
            auto_restart=True,
            advertising_interval_min=20,
            advertising_interval_max=20,
        )

    async def close(self) -> None:
        self.release.set()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def is_ours(device: BLEDevice, _adv: object) -> bool:
    return device.name == NAME


@pytest.fixture
async def link() -> AsyncIterator[InProcessLink]:
    async with in_process_link() as link:
        yield link
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in leftover if not t.done()], f"tasks leaked: {leftover}"


@pytest.fixture
async def peripheral(link: InProcessLink) -> AsyncIterator[Peripheral]:
    peripheral = Peripheral(link.peripheral)
    await peripheral.advertise()
    yield peripheral
    await peripheral.close()


@pytest.fixture
async def radio(link: InProcessLink) -> AsyncIterator[None]:
    """The link's central host as this loop's Bumble host (plain BumbleScanner/BumbleClient)."""
    async with bumble_session(link.central):
        yield


async def find() -> BLEDevice:
    device = await BleakScanner.find_device_by_filter(is_ours, timeout=5, backend=BumbleScanner)
    assert device is not None
    return device


@pytest.mark.usefixtures("peripheral", "radio")
async def test_discover_maps_the_advertisement() -> None:
    found = await BleakScanner.discover(timeout=0.2, return_adv=True, backend=BumbleScanner)
    device, adv = found[PERIPHERAL_ADDRESS]
    assert device.address == PERIPHERAL_ADDRESS
    assert isinstance(device.details, BumbleDetails)
    assert device.details.address == hci.Address(PERIPHERAL_ADDRESS)  # typed: random static
    assert not device.details.is_public
    assert adv.local_name == NAME == device.name
    assert adv.service_uuids == [CGM_SERVICE_16, UUID_32, SERVICE]
    assert adv.service_data == {CGM_SERVICE_16: b"\x01\x02"}
    assert adv.manufacturer_data == {COMPANY: b"\xca\xfe"}
    assert adv.tx_power == -8
    assert isinstance(adv.rssi, int)


@pytest.mark.usefixtures("peripheral", "radio")
async def test_find_device_by_filter_honours_the_service_filter() -> None:
    found = await BleakScanner.find_device_by_filter(
        lambda _d, _a: True, timeout=5, service_uuids=[SERVICE], backend=BumbleScanner
    )
    assert found is not None
    assert found.address == PERIPHERAL_ADDRESS
    other = "0000180d-0000-1000-8000-00805f9b34fb"  # heart rate: not advertised
    missing = await BleakScanner.find_device_by_filter(
        lambda _d, _a: True, timeout=0.2, service_uuids=[other], backend=BumbleScanner
    )
    assert missing is None


@pytest.mark.usefixtures("radio")
async def test_connect_discovers_services_and_reads_and_writes(peripheral: Peripheral) -> None:
    async with BleakClient(await find(), backend=BumbleClient) as client:
        assert client.is_connected
        assert client.mtu_size == 517
        service = client.services.get_service(SERVICE)
        assert service is not None
        props = {c.uuid: c.properties for c in service.characteristics}
        assert props[READ] == ["read"]
        assert props[WRITE] == ["write-without-response", "write"]
        assert props[NOTIFY] == ["notify"]
        assert props[INDICATE] == ["indicate"]
        read = service.get_characteristic(READ)
        assert read is not None
        assert [d.uuid for d in read.descriptors] == [USER_DESCRIPTION, NOTE]

        assert await client.read_gatt_char(READ) == b"hello"
        description = read.get_descriptor(USER_DESCRIPTION)
        note = read.get_descriptor(NOTE)
        assert description is not None
        assert note is not None
        assert await client.read_gatt_descriptor(description.handle) == b"Glucose"
        await client.write_gatt_descriptor(note.handle, b"noted")
        assert await client.read_gatt_descriptor(note.handle) == b"noted"

        await client.write_gatt_char(WRITE, b"with", response=True)
        assert peripheral.writes.get_nowait() == b"with"  # acknowledged: already there
        await client.write_gatt_char(WRITE, b"without", response=False)
        async with asyncio.timeout(2):
            assert await peripheral.writes.get() == b"without"
        long_value = bytes(range(256)) * 2  # > MTU: a prepared (long) write
        await client.write_gatt_char(WRITE, long_value, response=True)
        assert peripheral.writes.get_nowait() == long_value
    assert not client.is_connected


@pytest.mark.usefixtures("radio")
async def test_notifications_arrive_in_order_and_stop(peripheral: Peripheral) -> None:
    count = 100
    received: list[int] = []
    all_in = asyncio.Event()

    def on_notify(_char: object, data: bytearray) -> None:
        received.append(struct.unpack("<H", data)[0])
        if len(received) == count:
            all_in.set()

    async with BleakClient(await find(), backend=BumbleClient) as client:
        await client.start_notify(NOTIFY, on_notify)
        with pytest.raises(BleakError, match="already started"):
            await client.start_notify(NOTIFY, on_notify)
        await peripheral.send_notifications(count)
        async with asyncio.timeout(5):
            await all_in.wait()
        assert received == list(range(count))

        await client.stop_notify(NOTIFY)
        notify = client.services.get_characteristic(NOTIFY)
        assert notify is not None
        cccd = notify.get_descriptor("2902")
        assert cccd is not None
        assert await client.read_gatt_descriptor(cccd.handle) == b"\x00\x00"


@pytest.mark.usefixtures("radio")
async def test_indications_are_confirmed(peripheral: Peripheral) -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()
    async with BleakClient(await find(), backend=BumbleClient) as client:
        await client.start_notify(INDICATE, lambda _c, data: received.put_nowait(bytes(data)))
        async with asyncio.timeout(2):
            for value in (b"one", b"two"):
                # returns once the client confirmed the indication
                await peripheral.device.indicate_subscribers(peripheral.indicate, value)
                assert received.get_nowait() == value


@pytest.mark.usefixtures("peripheral", "radio")
async def test_att_errors_raise_bleak_protocol_errors_with_the_code() -> None:
    async with BleakClient(await find(), backend=BumbleClient) as client:
        with pytest.raises(BleakGATTProtocolError) as app_error:
            await client.read_gatt_char(REJECT)
        assert app_error.value.code == 0x80
        with pytest.raises(BleakGATTProtocolError) as not_readable:
            await client.read_gatt_char(WRITE_ONLY)
        assert not_readable.value.code == BleakGATTProtocolErrorCode.READ_NOT_PERMITTED
        with pytest.raises(BleakGATTProtocolError) as not_writable:
            await client.write_gatt_char(READ, b"x", response=True)
        assert not_writable.value.code == BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED
        with pytest.raises(BleakGATTProtocolError) as unencrypted:
            await client.read_gatt_char(SECRET)
        assert unencrypted.value.code == BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION
        assert await client.read_gatt_char(READ) == b"hello"  # the link survived


@pytest.mark.usefixtures("radio")
async def test_peripheral_disconnect_calls_back_and_reconnect_works(peripheral: Peripheral) -> None:
    lost = asyncio.Event()
    calls: list[BleakClient] = []

    def on_disconnect(client: BleakClient) -> None:
        calls.append(client)
        lost.set()

    client = BleakClient(await find(), on_disconnect, backend=BumbleClient)
    await client.connect()
    await peripheral.drop()
    async with asyncio.timeout(2):
        await lost.wait()
    assert calls == [client]
    assert not client.is_connected
    with pytest.raises(BleakError, match="Service Discovery"):
        _ = client.services  # cleared, as in the BlueZ backend
    with pytest.raises(BleakError):
        await client.read_gatt_char(READ)

    await client.connect()  # the peripheral advertises again (auto_restart)
    assert await client.read_gatt_char(READ) == b"hello"
    lost.clear()
    await client.disconnect()
    assert lost.is_set()  # every disconnection is reported, ours too
    assert len(calls) == 2


@pytest.mark.usefixtures("radio")
async def test_a_read_cut_by_a_disconnection_raises_bleak_error(peripheral: Peripheral) -> None:
    async with BleakClient(await find(), backend=BumbleClient) as client:
        read = asyncio.create_task(client.read_gatt_char(SLOW))
        async with asyncio.timeout(2):
            await peripheral.read_started.wait()
        await peripheral.drop()
        with pytest.raises(BleakError, match="disconnected"):
            await read
        assert not client.is_connected


@pytest.mark.usefixtures("peripheral", "radio")
async def test_connect_by_address_string_and_unknown_address() -> None:
    async with BleakClient(PERIPHERAL_ADDRESS, backend=BumbleClient) as client:
        assert await client.read_gatt_char(READ) == b"hello"
    with pytest.raises(BleakDeviceNotFoundError):
        await BleakClient("11:22:33:44:55:66", timeout=0.3, backend=BumbleClient).connect()


@pytest.mark.usefixtures("radio")
async def test_connect_timeout_then_the_device_comes_back(link: InProcessLink) -> None:
    peripheral = Peripheral(link.peripheral)  # not advertising yet
    device = BLEDevice(PERIPHERAL_ADDRESS, NAME, BumbleDetails(hci.Address(PERIPHERAL_ADDRESS)))
    with pytest.raises(TimeoutError):
        await BleakClient(device, timeout=0.2, backend=BumbleClient).connect()
    await peripheral.advertise()
    async with BleakClient(device, timeout=2, backend=BumbleClient) as client:
        assert await client.read_gatt_char(READ) == b"hello"
    await peripheral.close()


@pytest.mark.usefixtures("radio")
async def test_establish_maps_failures_to_gatewayd_errors(link: InProcessLink) -> None:
    device = BLEDevice(PERIPHERAL_ADDRESS, NAME, BumbleDetails(hci.Address(PERIPHERAL_ADDRESS)))
    cfg = BleConfig(stack="bumble", hci="tcp-client:127.0.0.1:1")  # the loop's host is used
    with pytest.raises(DeviceNotFound) as not_found:  # nobody advertises
        await establish(device, cfg, timeout=0.2)
    assert not_found.value.device == PERIPHERAL_ADDRESS
    assert not_found.value.retryable
    peripheral = Peripheral(link.peripheral)
    await peripheral.advertise()
    client = await establish(device, cfg, timeout=2)
    assert await client.read_gatt_char(READ) == b"hello"
    await client.disconnect()
    await peripheral.close()


@pytest.mark.usefixtures("peripheral", "radio")
async def test_concurrent_scanners_share_the_radio() -> None:
    first: asyncio.Queue[str] = asyncio.Queue()
    second: asyncio.Queue[str] = asyncio.Queue()
    async with BleakScanner(lambda d, _a: first.put_nowait(d.address), backend=BumbleScanner):
        async with BleakScanner(lambda d, _a: second.put_nowait(d.address), backend=BumbleScanner):
            async with asyncio.timeout(2):
                assert await second.get() == PERIPHERAL_ADDRESS
        while not first.empty():
            first.get_nowait()
        async with asyncio.timeout(2):  # still scanning for the first one
            assert await first.get() == PERIPHERAL_ADDRESS


@pytest.mark.usefixtures("peripheral")
async def test_a_link_nobody_waits_for_is_dropped(link: InProcessLink) -> None:
    # e.g. a connection completing after its connect() timed out
    dropped = asyncio.Event()
    connection = await link.central.device.connect(hci.Address(PERIPHERAL_ADDRESS))
    connection.on(connection.EVENT_DISCONNECTION, lambda _reason: dropped.set())
    async with asyncio.timeout(2):
        await dropped.wait()


async def test_an_unreachable_hci_transport_is_reported_as_no_bluetooth() -> None:
    with pytest.raises(BleakBluetoothNotAvailableError, match="cannot open HCI transport"):
        await configure_bumble("tcp-client:127.0.0.1:1")  # port 1: nothing listens


@pytest.mark.usefixtures("radio")
async def test_pairing_bonds_and_reencrypts_on_reconnect(peripheral: Peripheral) -> None:
    device = await find()
    async with BleakClient(device, pair=True, backend=BumbleClient) as client:
        assert await client.read_gatt_char(SECRET) == b"bonded"
        (link,) = peripheral.device.connections.values()
        assert link.is_encrypted
    async with BleakClient(device, backend=BumbleClient) as client:  # no pair: the bond is used
        assert await client.read_gatt_char(SECRET) == b"bonded"
        await client.unpair()
        assert not client.is_connected
    async with BleakClient(device, backend=BumbleClient) as client:
        with pytest.raises(BleakGATTProtocolError):
            await client.read_gatt_char(SECRET)


@pytest.mark.usefixtures("peripheral")
async def test_bound_backend_needs_no_loop_host(link: InProcessLink) -> None:
    with pytest.raises(BleakError, match="no Bumble host"):
        await BleakScanner.find_device_by_filter(is_ours, timeout=1, backend=BumbleScanner)
    scanner_cls, client_cls = bumble_backend(link.central)
    device = await BleakScanner.find_device_by_filter(is_ours, timeout=5, backend=scanner_cls)
    assert device is not None
    async with BleakClient(device, services=[SERVICE], backend=client_cls) as client:
        assert [s.uuid for s in client.services] == [SERVICE]  # only the ones asked for
        assert await client.read_gatt_char(READ) == b"hello"


# -- the peripheral in a sibling process -----------------------------------------------------------


@contextlib.asynccontextmanager
async def sibling_emulator() -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """This file run as an emulator process; yields it and the HCI transport for the gateway."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        stdout=asyncio.subprocess.PIPE,
        # tracing every allocation makes the emulator's start-up take ~10 s instead of ~0.3 s
        env={k: v for k, v in os.environ.items() if k != "PYTHONTRACEMALLOC"},
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(10):
            while not (line := (await process.stdout.readline()).decode()).startswith("HCI "):
                assert line, "the emulator exited before serving"
        yield process, line.split()[1]
    finally:
        if process.returncode is None:
            process.terminate()  # the emulator shuts down cleanly on SIGTERM
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_sibling_process_peripheral_over_hci_tcp() -> None:
    async with sibling_emulator() as (process, hci_transport):
        cfg = BleConfig(stack="bumble", hci=hci_transport)
        async with ble_session(cfg):
            device = await BleakScanner.find_device_by_filter(
                is_ours, timeout=5, **scanner_kwargs(cfg)
            )
            assert device is not None
            lost = asyncio.Event()
            client = await establish(device, cfg, disconnected_callback=lambda _c: lost.set())
            received: list[bytes] = []
            ten = asyncio.Event()

            def on_notify(_char: object, data: bytearray) -> None:
                received.append(bytes(data))
                if len(received) == 10:
                    ten.set()

            assert await client.read_gatt_char(READ) == b"hello"
            await client.start_notify(NOTIFY, on_notify)
            await client.write_gatt_char(WRITE, b"notify:10", response=True)
            async with asyncio.timeout(5):
                await ten.wait()
            assert received == [struct.pack("<H", n) for n in range(10)]

            process.kill()  # the radio is unplugged
            async with asyncio.timeout(5):
                await lost.wait()
            assert not client.is_connected
            await process.wait()
            with pytest.raises(BleakBluetoothNotAvailableError):  # re-opened on use: no server
                await BleakScanner.discover(timeout=0.1, **scanner_kwargs(cfg))


async def _serve() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve_sibling_link() as sibling:
        peripheral = Peripheral(sibling.peripheral)
        await peripheral.advertise()
        print("HCI", sibling.hci, flush=True)
        await stop.wait()
        await peripheral.close()


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    asyncio.run(_serve())
