"""The CGMS emulator as any collector meets it: plain bleak calls over a virtual link (Bumble).

Control point answers (RACP / SOCP response codes, ATT errors 0x80 / 0x81 / 0xFD / 0xFE),
packing, bonding and advertising, checked with the `protocols` codecs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakGATTProtocolError

from drivers.cgms.emulator import CgmsPeripheral, SensorConfig, emulated_cgms
from gatewayd.transport.bumble.backend import bumble_backend
from protocols.cgms.measurement import parse_measurements
from protocols.cgms.socp import SocpOpCode, SocpPacket, SocpResponseCode, SocpResult
from protocols.cgms.state import CgmStatus
from protocols.cgms.uuids import (
    CGM_FEATURE,
    CGM_MEASUREMENT,
    CGM_SPECIFIC_OPS_CONTROL_POINT,
    CGM_STATUS,
    CGMS_SERVICE,
)
from protocols.gatt.racp import (
    RECORD_ACCESS_CONTROL_POINT,
    RacpNumberOfRecords,
    RacpOperator,
    RacpResponse,
    RacpResponseCode,
    abort,
    parse_racp,
    report_number_of_records,
    report_records,
)

pytestmark = pytest.mark.timeout(10)

CONFIG = SensorConfig(interval=1, age=60.0, pack=4)


@dataclass
class Collector:
    """A bare collector: a connected client and what arrived on each characteristic."""

    client: BleakClient
    emulator: CgmsPeripheral
    values: dict[str, asyncio.Queue[bytes]] = field(default_factory=dict)

    async def subscribe(self, *uuids: str) -> None:
        for uuid in uuids:
            queue = self.values[uuid] = asyncio.Queue()
            await self.client.start_notify(uuid, lambda _c, d, q=queue: q.put_nowait(bytes(d)))

    async def next(self, uuid: str) -> bytes:
        async with asyncio.timeout(3):
            return await self.values[uuid].get()

    async def racp(self, data: bytes) -> object:
        await self.client.write_gatt_char(RECORD_ACCESS_CONTROL_POINT, data, response=True)
        return parse_racp(await self.next(RECORD_ACCESS_CONTROL_POINT))

    async def socp(self, packet: SocpPacket) -> SocpPacket:
        data = packet.build()
        await self.client.write_gatt_char(CGM_SPECIFIC_OPS_CONTROL_POINT, data, response=True)
        return SocpPacket.parse(await self.next(CGM_SPECIFIC_OPS_CONTROL_POINT))

    def offsets(self) -> list[int]:
        """Offsets of every record notified so far."""
        queue, found = self.values[CGM_MEASUREMENT], []
        while not queue.empty():
            found += [r.time_offset for r in parse_measurements(queue.get_nowait())]
        return found


@contextlib.asynccontextmanager
async def collector(
    config: SensorConfig = CONFIG, *, pair: bool = False
) -> AsyncIterator[Collector]:
    async with emulated_cgms(config) as (link, emulator):
        scanner, client_class = bumble_backend(link.central)
        device = await BleakScanner.find_device_by_filter(
            lambda _d, adv: CGMS_SERVICE in adv.service_uuids, timeout=5, backend=scanner
        )
        assert device is not None
        assert device.name == "CGMS Emulator"
        async with BleakClient(device, pair=pair, backend=client_class) as client:
            yield Collector(client, emulator)


async def test_a_control_point_write_needs_indications_enabled() -> None:
    async with collector() as c:
        for uuid in (RECORD_ACCESS_CONTROL_POINT, CGM_SPECIFIC_OPS_CONTROL_POINT):
            with pytest.raises(BleakGATTProtocolError) as error:
                await c.client.write_gatt_char(uuid, bytes((1, 1)), response=True)
            assert error.value.code == 0xFD


async def test_racp_reports_what_was_asked() -> None:
    async with collector() as c:
        await c.subscribe(CGM_MEASUREMENT, RECORD_ACCESS_CONTROL_POINT)
        c.emulator.sensor.stop()  # a memory that stays put: offsets 0..60
        assert await c.racp(report_number_of_records().build()) == RacpNumberOfRecords(61)
        success = RacpResponse(1, RacpResponseCode.SUCCESS)
        assert await c.racp(report_records(RacpOperator.GREATER_THAN_OR_EQUAL, 55).build()) == (
            success
        )
        assert c.offsets() == [55, 56, 57, 58, 59, 60]
        assert await c.racp(report_records(RacpOperator.WITHIN_RANGE, 3, 5).build()) == success
        assert await c.racp(report_records(RacpOperator.LESS_THAN_OR_EQUAL, 1).build()) == success
        assert await c.racp(report_records(RacpOperator.FIRST_RECORD).build()) == success
        assert await c.racp(report_records(RacpOperator.LAST_RECORD).build()) == success
        assert c.offsets() == [3, 4, 5, 0, 1, 0, 60]
        none = report_records(RacpOperator.GREATER_THAN_OR_EQUAL, 61).build()
        assert await c.racp(none) == RacpResponse(1, RacpResponseCode.NO_RECORDS_FOUND)


async def test_a_record_in_flight_comes_before_the_report() -> None:
    async with collector() as c:
        await c.subscribe(CGM_MEASUREMENT, RECORD_ACCESS_CONTROL_POINT)
        c.emulator.sensor.stop()
        c.emulator.in_flight_next(1)
        success = RacpResponse(1, RacpResponseCode.SUCCESS)
        assert await c.racp(report_records(RacpOperator.WITHIN_RANGE, 3, 5).build()) == success
        assert await c.racp(report_records(RacpOperator.WITHIN_RANGE, 3, 5).build()) == success
        assert c.offsets() == [60, 3, 4, 5, 3, 4, 5]  # the newest first, once


@pytest.mark.parametrize(
    ("request_hex", "code"),
    [
        ("0107", RacpResponseCode.INVALID_OPERATOR),
        ("010301", RacpResponseCode.INVALID_OPERAND),
        ("010302" + "e9070101000000", RacpResponseCode.OPERAND_NOT_SUPPORTED),  # a Date Time
        ("0201", RacpResponseCode.OP_CODE_NOT_SUPPORTED),  # no deleting a CGM's memory
        ("0901", RacpResponseCode.OP_CODE_NOT_SUPPORTED),
    ],
)
async def test_racp_refusals_carry_the_response_code(
    request_hex: str, code: RacpResponseCode
) -> None:
    async with collector() as c:
        await c.subscribe(RECORD_ACCESS_CONTROL_POINT)
        request = bytes.fromhex(request_hex)
        assert await c.racp(request) == RacpResponse(request[0], code)


async def test_a_sensor_without_ranges_says_operator_not_supported() -> None:
    async with collector(replace(CONFIG, ranges=False)) as c:
        await c.subscribe(RECORD_ACCESS_CONTROL_POINT)
        request = report_records(RacpOperator.WITHIN_RANGE, 1, 2).build()
        assert await c.racp(request) == RacpResponse(1, RacpResponseCode.OPERATOR_NOT_SUPPORTED)


async def test_one_report_at_a_time_and_abort_stops_it() -> None:
    config = replace(CONFIG, age=5000.0, pack=1)
    async with collector(config) as c:
        await c.subscribe(CGM_MEASUREMENT, RECORD_ACCESS_CONTROL_POINT)
        everything = report_records().build()
        await c.client.write_gatt_char(RECORD_ACCESS_CONTROL_POINT, everything, response=True)
        await c.next(CGM_MEASUREMENT)  # the report runs
        with pytest.raises(BleakGATTProtocolError) as busy:
            await c.client.write_gatt_char(RECORD_ACCESS_CONTROL_POINT, everything, response=True)
        assert busy.value.code == 0xFE
        assert await c.racp(abort().build()) == RacpResponse(3, RacpResponseCode.SUCCESS)
        assert len(c.offsets()) < 5000


@pytest.mark.parametrize("pack", [1, 3, 64])
async def test_records_are_packed_within_the_mtu(pack: int) -> None:
    async with collector(replace(CONFIG, pack=pack, age=200.0)) as c:
        await c.subscribe(CGM_MEASUREMENT, RECORD_ACCESS_CONTROL_POINT)
        c.emulator.sensor.stop()
        await c.racp(report_records().build())
        sizes = []
        while not c.values[CGM_MEASUREMENT].empty():
            data = c.values[CGM_MEASUREMENT].get_nowait()
            assert len(data) <= c.client.mtu_size - 3
            sizes.append(len(parse_measurements(data)))
        assert sum(sizes) == 201
        size = len(c.emulator.sensor.record(0).build())  # 12 bytes: trend, quality, CRC
        assert max(sizes) == min(pack, (c.client.mtu_size - 3) // size)


async def test_socp_answers_and_checks_the_e2e_crc() -> None:
    async with collector() as c:
        await c.subscribe(CGM_SPECIFIC_OPS_CONTROL_POINT)
        get = SocpPacket(SocpOpCode.GET_COMMUNICATION_INTERVAL, e2e_crc=True)
        answer = await c.socp(get)
        assert answer == SocpPacket(SocpOpCode.COMMUNICATION_INTERVAL_RESPONSE, 1, e2e_crc=True)
        stop = await c.socp(SocpPacket(SocpOpCode.STOP_SESSION, e2e_crc=True))
        assert stop.operand == SocpResult(SocpOpCode.STOP_SESSION, SocpResponseCode.SUCCESS)
        status = CgmStatus.parse(await c.client.read_gatt_char(CGM_STATUS))
        assert status.status & 1  # session stopped
        alert = await c.socp(SocpPacket(SocpOpCode.RESET_DEVICE_SPECIFIC_ALERT, e2e_crc=True))
        assert alert.operand == SocpResult(
            SocpOpCode.RESET_DEVICE_SPECIFIC_ALERT, SocpResponseCode.OP_CODE_NOT_SUPPORTED
        )
        for data, code in ((get.build()[:-2], 0x80), (get.build()[:-1] + b"\x00", 0x81)):
            with pytest.raises(BleakGATTProtocolError) as error:
                await c.client.write_gatt_char(CGM_SPECIFIC_OPS_CONTROL_POINT, data, response=True)
            assert error.value.code == code


async def test_a_bonding_sensor_refuses_until_paired() -> None:
    async with collector(replace(CONFIG, bonding=True)) as c:
        with pytest.raises(BleakGATTProtocolError) as error:
            await c.client.read_gatt_char(CGM_FEATURE)
        assert error.value.code == 0x0F  # insufficient encryption
        await c.client.pair()
        assert len(await c.client.read_gatt_char(CGM_FEATURE)) == 6
