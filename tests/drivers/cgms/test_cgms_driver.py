"""The CGMS driver, unmodified bleak code, against its emulator over Bumble (in this process).

Each test runs the real Supervisor + Store with the driver loaded as the daemon loads it
(`gatewayd.plugin.kit.run_gateway`) and the emulated sensor on a virtual link: real
ATT/GATT, real notifications and indications, real pairing. The sensor makes a record every
0.1 s (one a minute, replayed at 600x), so waits are short and driven by stored readings.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from drivers.cgms import plugin
from drivers.cgms.convert import session_key
from drivers.cgms.emulator import CgmsPeripheral, SensorConfig
from drivers.cgms.emulator.kit import FAST, CgmsKit
from gatewayd.device_status import LinkState
from gatewayd.driver import DAMAGED_RETRIES
from gatewayd.plugin.kit import KitGateway, assert_contract, run_gateway
from protocols.cgms.measurement import StatusOctetOrder
from protocols.cgms.state import SensorStatus

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def running(
    config: SensorConfig = FAST,
    options: Mapping[str, Any] | None = None,
    *,
    store: Path | None = None,
) -> AsyncIterator[tuple[KitGateway, CgmsPeripheral, CgmsKit]]:
    kit = CgmsKit(config, options=options)
    async with kit.start_emulator() as target, run_gateway(plugin, target, store_path=store) as gw:
        yield gw, kit.emulator(), kit


def complete(kit: CgmsKit, gw: KitGateway) -> None:
    """Everything the sensor held between the first and last stored reading is stored once."""
    assert_contract(kit, gw, plugin)


async def test_live_readings_carry_value_trend_quality_status_and_ids() -> None:
    flags = SensorStatus.CALIBRATION_RECOMMENDED
    async with running(replace(FAST, annunciation=flags)) as (gw, emulator, kit):
        await gw.wait_for(3, live=True)
        sensor = emulator.sensor
        live = [r for r in gw.stored if not r.backfilled]
        for reading in live:
            record = sensor.record(reading.seq)
            assert reading.serial == "CGMSEMU0001"
            assert reading.session == session_key(sensor.start)
            assert reading.time == sensor.start + timedelta(minutes=reading.seq)
            assert reading.glucose_mgdl == record.glucose_mgdl
            assert reading.trend_mgdl_min == pytest.approx(float(record.trend))  # type: ignore[arg-type]
            assert reading.quality_pct == pytest.approx(float(record.quality))  # type: ignore[arg-type]
            assert "calibration_recommended" in reading.status
            assert reading.direction.value != "NONE"
    # first contact: the whole memory came first, oldest first, then live records
    assert gw.stored[0].seq == 0
    assert gw.stored[0].backfilled
    complete(kit, gw)


@pytest.mark.parametrize(
    ("e2e_crc", "pack", "trend"),
    [(True, 4, True), (False, 1, True), (False, 16, False), (True, 30, False)],
    ids=["crc-pack4", "nocrc-pack1", "nocrc-pack16-notrend", "crc-pack30-notrend"],
)
async def test_link_drops_at_random_points_lose_nothing_and_repeat_nothing(
    e2e_crc: bool, pack: int, trend: bool
) -> None:
    """Drops in the middle of the first backfill, of later ones and of live streaming."""
    rng = random.Random(f"{e2e_crc}{pack}")
    config = replace(FAST, age=1800.0, e2e_crc=e2e_crc, pack=pack, trend=trend, quality=trend)
    async with running(config) as (gw, emulator, kit):
        for drop in range(6):
            opened = gw.opened
            # the first drop lands in the first backfill (or soon after), later ones in the
            # backfill of what piled up while the sensor was away, or in live streaming
            emulator.drop_after(rng.randint(1, 200 if drop == 0 else 12))
            await gw.wait_for_session(opened)
            if rng.random() < 0.6:
                await emulator.drop_link(away=rng.uniform(0.2, 0.8))
                await gw.wait_for_session(opened + 1)
        await gw.wait_for(gw.count(live=True) + 5, live=True)
    complete(kit, gw)
    assert gw.opened >= 7
    assert gw.stored[0].seq == 0
    assert [r.trend_mgdl_min is None for r in gw.stored] == [not trend] * len(gw.stored)


async def test_a_damaged_record_in_a_backfill_is_dropped_counted_and_fetched_again() -> None:
    async with running() as (gw, emulator, kit):
        emulator.corrupt_next(3)  # the first notifications: the first backfill
        await gw.wait_for(5, live=True)
    assert gw.device.dropped == {"crc_mismatch": 3}
    assert gw.opened == 1  # one connection: the report was asked for again
    complete(kit, gw)


@pytest.mark.parametrize("e2e_crc", [True, False], ids=["crc", "nocrc"])
async def test_a_live_record_damaged_in_memory_is_fetched_twice_then_passed_over(
    e2e_crc: bool,
) -> None:
    async with running(replace(FAST, e2e_crc=e2e_crc, pack=1)) as (gw, emulator, kit):
        await gw.wait_for(3, live=True)
        newest = emulator.sensor.newest()
        assert newest is not None
        (damaged,) = emulator.sensor.damage(newest + 2)  # a record still to come
        await gw.wait_until(lambda: gw.device.findings.unreadable == 1, "passed over", 10)
        await gw.wait_for(gw.count(live=True) + 3, live=True)
    assert damaged not in {r.seq for r in gw.stored}
    assert sum(gw.device.dropped.values()) >= 1 + DAMAGED_RETRIES  # live, then 2 renewed reads
    assert gw.opened == 1
    complete(kit, gw)


async def test_a_record_in_flight_before_each_report_loses_nothing_near_damaged_ones() -> None:
    """Every report begins with the newest record (a live notification in flight when the
    sensor read the request), and the oldest record and one in the middle stay damaged: the
    damaged ones keep their places, are passed over after their retries, nothing else is
    lost."""
    kit = CgmsKit(FAST)
    async with kit.start_emulator() as target:
        emulator = kit.emulator()
        damaged = set(emulator.sensor.damage("start", "middle"))
        emulator.in_flight_next(10)
        async with run_gateway(plugin, target) as gw:
            findings = gw.device.findings
            await gw.wait_until(lambda: findings.unreadable >= 2, "passed over", 20)
            await gw.wait_for(gw.count(live=True) + 3, live=True)
    assert findings.unreadable == 2
    assert not damaged & {r.seq for r in gw.stored}
    assert gw.stored[0].seq == 1  # the oldest intact record: nothing before it was skipped
    complete(kit, gw)


async def test_a_damaged_live_record_without_crc_breaks_framing_and_the_gap_is_backfilled() -> None:
    async with running(replace(FAST, e2e_crc=False, pack=1)) as (gw, emulator, kit):
        await gw.wait_for(3, live=True)
        emulator.corrupt_next()
        await gw.wait_until(lambda: bool(gw.device.dropped), "a dropped packet", 10)
        await gw.wait_for(gw.count(live=True) + 3, live=True)
    assert gw.device.dropped == {"malformed": 1}
    assert gw.opened == 1
    complete(kit, gw)


async def test_a_gap_is_backfilled_when_the_sensor_refuses_range_requests() -> None:
    async with running(replace(FAST, ranges=False)) as (gw, emulator, kit):
        await gw.wait_for(3, live=True)
        emulator.corrupt_next()  # a live record lost: the gap triggers a RACP range request
        await gw.wait_until(lambda: bool(gw.device.dropped), "a dropped packet", 10)
        await gw.wait_for(gw.count(live=True) + 3, live=True)
    complete(kit, gw)
    assert any(r.backfilled for r in gw.stored[-10:])


async def test_a_new_sensor_session_gives_new_ids_and_is_backfilled_from_its_start() -> None:
    async with running() as (gw, emulator, kit):
        await gw.wait_for(3, live=True)
        old = session_key(emulator.sensor.start)
        emulator.restart_session(age=20.0, replay=20.0)
        new = session_key(emulator.sensor.start)
        assert new != old
        await gw.wait_until(
            lambda: sum(r.session == new for r in gw.stored) >= 15, "the new session", 15
        )
        assert gw.opened == 1  # detected on the same link
    sessions = [r.session for r in gw.stored]
    assert sessions == sorted(sessions, key=[old, new].index), "old session first, then the new"
    assert min(r.seq for r in gw.stored if r.session == new) == 0
    ids = {r.id for r in gw.stored}
    assert len(ids) == len(gw.stored)
    complete(kit, gw)


async def test_a_stopped_session_is_started_when_asked_and_read_from_its_start() -> None:
    config = replace(FAST, stopped=True, restart_age=10.0, restart_replay=10.0)
    async with running(config, {"start_session": True}) as (gw, emulator, kit):
        await gw.wait_for(5, live=True)
        started = session_key(emulator.sensor.start)
    assert not emulator.sensor.stopped
    assert {r.session for r in gw.stored if not r.backfilled} == {started}
    assert min(r.seq for r in gw.stored if r.session == started) == 0
    complete(kit, gw)


async def test_a_stopped_session_is_read_and_flagged_when_not_started() -> None:
    async with running(replace(FAST, stopped=True, age=30.0, replay=0.0)) as (gw, emulator, kit):
        await gw.wait_for(31)
        assert emulator.sensor.stopped
    assert [r.seq for r in gw.stored] == list(range(31))
    complete(kit, gw)


async def test_a_sensor_that_demands_bonding_is_bonded_automatically() -> None:
    async with running(replace(FAST, bonding=True)) as (gw, emulator, kit):
        await gw.wait_for(3, live=True)
        (link,) = emulator.device.connections.values()
        assert link.is_encrypted
        await emulator.drop_link()  # the next connection re-encrypts with the bond
        await gw.wait_for_session(1)
        await gw.wait_for(gw.count(live=True) + 3, live=True)
    complete(kit, gw)


async def test_bond_always_pairs_on_connect() -> None:
    async with running(replace(FAST, bonding=True), {"bond": "always"}) as (gw, emulator, _kit):
        await gw.wait_for(3, live=True)
        (link,) = emulator.device.connections.values()
        assert link.is_encrypted


async def test_bond_never_parks_a_sensor_that_demands_bonding() -> None:
    async with running(replace(FAST, bonding=True), {"bond": "never"}) as (gw, _emulator, _kit):
        await gw.wait_until(
            lambda: gw.device.status is not None and gw.device.status.state == LinkState.PARKED,
            "the device parked",
            10,
        )
        assert gw.device.status is not None
        assert "bond" in (gw.device.status.reason or "")
    assert gw.stored == []


@pytest.mark.parametrize(
    ("driver_order", "names"),
    [("nordic", {"device_battery_low"}), ("sig", {"result_above_patient_high"})],
)
async def test_the_status_octet_order_quirk(driver_order: str, names: set[str]) -> None:
    # The sensor sends only its Warning octet... read by Nordic's mapping: which names it means
    # depends on the order the driver is told (protocols.md §1.3, vector V6).
    config = replace(
        FAST, annunciation=SensorStatus.DEVICE_BATTERY_LOW, order=StatusOctetOrder.NORDIC
    )
    options = {"status_octet_order": driver_order}
    async with running(config, options) as (gw, _emulator, _kit):
        await gw.wait_for(3, live=True)
    flags = {name for r in gw.stored for name in r.status if "device_range" not in name}
    assert flags == names


@pytest.mark.parametrize("by", ["address", "name"])
async def test_the_sensor_is_found_by_address_or_name(by: str) -> None:
    options = {"address": "f0:f1:f2:f3:f4:f5"} if by == "address" else {"name": "CGMS Emu"}
    async with running(FAST, options) as (gw, _emulator, _kit):
        await gw.wait_for(3, live=True)


async def test_a_sensor_that_does_not_advertise_is_retried_with_backoff() -> None:
    options = {"name": "SmartGuide", "scan_timeout": 0.1}
    async with running(FAST, options) as (gw, _emulator, _kit):
        await gw.wait_until(
            lambda: gw.device.status is not None and gw.device.status.state == LinkState.BACKOFF,
            "a backoff",
            10,
        )
        assert "did not advertise" in (gw.device.status.reason or "")  # type: ignore[union-attr]
    assert gw.opened == 0


async def test_thousands_of_stored_records_are_backfilled_and_the_memory_limit_holds() -> None:
    config = replace(FAST, age=6000.0, replay=1000.0, capacity=4000, pack=30)
    async with running(config) as (gw, _emulator, kit):
        await gw.wait_for(3, live=True)
    backfilled = [r for r in gw.stored if r.backfilled]
    assert len(backfilled) >= 4000
    # the oldest the memory still holds when the report begins: 1001, or a little later when a
    # slow setup lets the sensor (10 records/s) make some meanwhile
    assert 5000 - 3999 <= backfilled[0].seq <= 5000 - 3999 + 50
    complete(kit, gw)


async def test_a_restarted_gateway_resumes_after_the_newest_stored_reading(tmp_path: Path) -> None:
    kit = CgmsKit(FAST)
    store = tmp_path / "gatewayd.db"
    async with kit.start_emulator() as target:
        async with run_gateway(plugin, target, store_path=store) as first:
            await first.wait_for(5, live=True)
        emulator = kit.emulator()
        await emulator.wait_idle()
        async with run_gateway(plugin, target, store_path=store) as second:
            await second.wait_for(5, live=True)
        await emulator.wait_idle()
    assert second.stored[0].seq == first.stored[-1].seq + 1  # nothing twice, nothing skipped
    assert {r.session for r in second.stored} == {first.stored[0].session}
    first.stored += second.stored  # the two runs together: one complete story
    complete(kit, first)
