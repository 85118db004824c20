"""The hub on BlueZ (`[ble] stack = "bluez"`, the default) as users of BlueZ meet it.

bleak's BlueZ backend, bleak-retry-connector and `gatewayd.transport.ble.establish` run
unmodified against the `org.bluez` stand-in (tests/support/fakebluez), whose fault knobs stand
for what bluetoothd does in the field. Each test shows the daemon's behaviour through the
supervisor's device statuses (attempts, backoff, parking) and the D-Bus calls the stand-in saw,
never through timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bleak_retry_connector
import pytest
from bleak import BleakClient, BleakScanner
from bumble.device import Device
from bumble.gatt import Service

from drivers.cgms.emulator.kit import FAST, CgmsKit
from drivers.dexcom_g6.kit import G6Kit
from gatewayd.device_status import LinkState
from gatewayd.plugin import kit as driverkit
from gatewayd.plugin.kit import KitGateway, assert_contract, run_gateway
from gatewayd.transport.ble import establish
from gatewayd.transport.bumble.link import PERIPHERAL_ADDRESS
from protocols.cgms.uuids import CGM_MEASUREMENT

from fakebluez import BLUEZ, BluezKit, Faults

pytestmark = [pytest.mark.usefixtures("system_bus"), pytest.mark.timeout(60)]

#: Seconds per bleak-retry-connector attempt in the tests that time out (20 s in production).
ATTEMPT_TIMEOUT = 0.5
DRIVERS = Path(__file__).parents[3] / "drivers"
#: A service a firmware update adds (a made-up 128-bit UUID).
NEW_SERVICE = "3f1c0000-9d5c-4d8e-8a51-5d5b5f0e0001"


def cgms(faults: Faults | None = None, *, bonding: bool = False, agent: bool = True,
         **options: Any) -> BluezKit:  # fmt: skip
    """The CGMS driver and emulator with the hub on BlueZ (the sensor bonds: `bonding`)."""
    config = dataclasses.replace(FAST, bonding=bonding)
    return BluezKit(CgmsKit(config, options=options), faults, agent=agent)


@contextlib.asynccontextmanager
async def gateway(kit: BluezKit) -> AsyncIterator[KitGateway]:
    """The kit's emulator and the daemon's supervisor on it."""
    async with kit.start_emulator() as target, run_gateway(kit.make_plugin(), target) as gw:
        yield gw


def count(gw: KitGateway, state: LinkState) -> int:
    """How many times the device was reported in `state`."""
    return sum(s.state is state for s in gw.statuses)


def parked_reason(gw: KitGateway) -> str:
    """The reason the device was parked with (it must say what a person has to fix)."""
    parked = [s for s in gw.statuses if s.state is LinkState.PARKED]
    assert len(parked) == 1, f"not parked: {[(s.state, s.reason) for s in gw.statuses]}"
    return parked[0].reason or ""


def backoffs(gw: KitGateway) -> list[str]:
    """The reasons of the BACKOFF statuses, in order (each one waited `retry_in_s` > 0)."""
    assert all(s.retry_in_s for s in gw.statuses if s.state is LinkState.BACKOFF)
    return [s.reason or "" for s in gw.statuses if s.state is LinkState.BACKOFF]


async def test_discovery_in_progress_backs_off_then_connects() -> None:
    kit = cgms(Faults(discovery_in_progress=2))
    async with gateway(kit) as gw:
        await gw.wait_for(3, live=True)
    reasons = backoffs(gw)
    assert len(reasons) == 2
    assert all("InProgress" in r for r in reasons)
    assert kit.standin().calls["StartDiscovery"] == 3  # one scan per attempt, no tight loop
    assert_contract(kit, gw, kit.make_plugin())


async def test_connect_in_progress_is_retried_within_one_establish() -> None:
    kit = cgms(Faults(connect_in_progress=2))
    async with gateway(kit) as gw:
        await gw.wait_for(3, live=True)
    assert kit.standin().calls["Connect"] == 3
    assert backoffs(gw) == []  # establish's own attempts absorbed it: one supervisor attempt
    assert count(gw, LinkState.CONNECTING) == 1


async def test_le_connection_abort_by_local_is_retried_by_bleak() -> None:
    kit = cgms(Faults(abort_by_local=2))
    async with gateway(kit) as gw:
        await gw.wait_for(3, live=True)
    assert kit.standin().calls["Connect"] == 3
    assert gw.opened == 1
    assert backoffs(gw) == []


@pytest.mark.slow
async def test_a_stalled_service_resolution_costs_real_attempts_not_a_retry_storm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # bluetoothd answers Connect, ServicesResolved never comes, and it signals Connected=false
    # only after answering Disconnect: with one client for all attempts, attempts 2 and 3 fail at
    # once with "Client is already connected" (one Connect in all).
    monkeypatch.setattr(bleak_retry_connector, "BLEAK_TIMEOUT", ATTEMPT_TIMEOUT)
    faults = Faults(stall_services_resolved=True, connected_signal_delay=0.05)
    kit = cgms(faults)
    async with gateway(kit) as gw:
        await gw.wait_until(lambda: count(gw, LinkState.BACKOFF) >= 2, "two backoffs", 30)
        connects = kit.standin().calls["Connect"]
        faults.clear()
        await gw.wait_for(3, live=True)
    assert connects == 6  # 2 supervisor attempts x 3 establish attempts, each a real Connect
    reasons = backoffs(gw)
    assert len(reasons) == 2
    assert all("already connected" not in r for r in reasons)
    assert all("TimeoutError" in r for r in reasons)


async def test_bonding_sensor_is_bonded_by_bluetoothd_itself_whatever_bond_says() -> None:
    # bluetoothd raises security on ATT 0x0F and resends: the driver never sees the error, so
    # bond = "never" cannot stop the bond on BlueZ (docs/ble.md).
    kit = cgms(bonding=True, bond="never")
    async with gateway(kit) as gw:
        await gw.wait_for(3, live=True)
        device = kit.standin().device(PERIPHERAL_ADDRESS)
        assert device is not None
        assert device.paired
    assert kit.standin().calls["Pair"] == 0
    assert backoffs(gw) == []


async def test_not_paired_with_bond_never_parks_the_device() -> None:
    kit = cgms(Faults(pairing_fails=True), bonding=True, bond="never")
    async with gateway(kit) as gw:
        await gw.wait_until(
            lambda: count(gw, LinkState.PARKED) == 1 or count(gw, LinkState.BACKOFF) >= 2,
            "parked (or a second attempt)",
            20,
        )
    assert "bond" in parked_reason(gw)


async def test_a_refused_bond_parks_the_device_instead_of_a_reconnect_loop() -> None:
    kit = cgms(Faults(pairing_fails=True), bonding=True)
    async with gateway(kit) as gw:
        await gw.wait_until(
            lambda: count(gw, LinkState.PARKED) == 1 or count(gw, LinkState.BACKOFF) >= 2,
            "parked (or a second attempt)",
            20,
        )
    assert "pair" in parked_reason(gw).lower() or "bond" in parked_reason(gw)
    assert count(gw, LinkState.BACKOFF) == 0


async def test_the_hubs_agent_approves_just_works_where_bluez_needs_an_agent() -> None:
    kit = cgms(Faults(agent_required=True), bonding=True)
    async with gateway(kit) as gw:
        await gw.wait_for(3, live=True)
    standin = kit.standin()
    assert standin.calls["RegisterAgent"] == standin.calls["RequestDefaultAgent"] == 1
    assert standin.calls["Agent1.RequestAuthorization"] == 1
    assert backoffs(gw) == []


async def test_g6_pairs_through_device1_pair_with_the_hubs_agent() -> None:
    # The transmitter asks for a bond; the driver calls pair(): bleak's Device1.Pair, which
    # BlueZ >= 5.72 lets through only with the default agent's consent.
    kit = BluezKit(G6Kit(), Faults(agent_required=True))
    await driverkit.check_readings_arrive(kit)
    calls = kit.standin().calls
    assert calls["Pair"] >= 1
    assert calls["Agent1.RequestAuthorization"] == calls["Pair"]


async def test_without_an_agent_a_failed_pairing_parks_the_device() -> None:
    kit = cgms(Faults(agent_required=True), bonding=True, agent=False)
    async with gateway(kit) as gw:
        await gw.wait_until(
            lambda: count(gw, LinkState.PARKED) == 1 or count(gw, LinkState.BACKOFF) >= 2,
            "parked (or a second attempt)",
            20,
        )
    assert kit.standin().calls["RegisterAgent"] == 0
    assert "pair" in parked_reason(gw).lower() or "bond" in parked_reason(gw)


async def test_a_device_removed_when_scanning_stopped_backs_off_and_comes_back() -> None:
    faults = Faults(remove_after_discovery=0.0)
    kit = cgms(faults)
    async with gateway(kit) as gw:
        await gw.wait_until(lambda: count(gw, LinkState.BACKOFF) >= 1, "a backoff", 30)
        faults.clear()
        await gw.wait_for(3, live=True)
    reasons = backoffs(gw)
    assert kit.standin().calls["device-expired"] >= 1
    assert "not found" in reasons[0]


async def test_bluetoothd_restarting_ends_the_session_and_the_daemon_reconnects() -> None:
    kit = cgms()
    async with gateway(kit) as gw:
        await gw.wait_for(3, live=True)
        first = kit.standin()
        second = await kit.restart_bluez()
        await gw.wait_for_session(1)
        await gw.wait_for(gw.count(live=True) + 3, live=True)
        await second.agents.has_default.wait()  # the hub's agent registered again
    assert first.calls["Connect"] == second.calls["Connect"] == 1
    assert second.calls["RegisterAgent"] == 1
    assert len(backoffs(gw)) == 1
    assert_contract(kit, gw, kit.make_plugin())


async def test_bluetoothd_crashing_ends_the_session_and_the_daemon_reconnects() -> None:
    kit = cgms()
    async with gateway(kit) as gw:
        await gw.wait_for(3, live=True)
        await kit.restart_bluez(crash=True)  # no signal: bleak's client says "connected"
        await gw.wait_for_session(1)
        await gw.wait_for(gw.count(live=True) + 3, live=True)
    assert len(backoffs(gw)) == 1
    assert_contract(kit, gw, kit.make_plugin())


async def test_notifications_lost_before_the_cccd_write_completes_are_backfilled() -> None:
    kit = cgms(Faults(drop_early_notifications=True, cccd_answer_delay=0.3))
    async with gateway(kit) as gw:
        await gw.wait_for(5, live=True)
    assert kit.standin().calls["notification-lost"] >= 1
    assert_contract(kit, gw, kit.make_plugin())


def insert_service_first(device: Device, service: Service) -> None:
    """A firmware update of the peripheral: `service` first, every other handle moves up."""
    server = device.gatt_server
    services = [a for a in server.attributes if isinstance(a, Service)]
    server.attributes.clear()
    server.attributes_by_handle.clear()
    for each in (service, *services):
        server.add_service(each)


async def test_services_that_change_between_connections_are_rediscovered() -> None:
    kit = cgms()
    async with gateway(kit) as gw:
        await gw.wait_for(3, live=True)
        device = kit.standin().device(PERIPHERAL_ADDRESS)
        assert device is not None
        before = device.gatt_paths
        await kit.force_link_drop()
        peripheral = kit.kit.emulator().device
        insert_service_first(peripheral, Service(NEW_SERVICE, []))
        await gw.wait_for_session(1)
        await gw.wait_for(gw.count(live=True) + 3, live=True)
        after = device.gatt_paths
    assert set(after) != set(before)
    assert len(after) == len(before) + 1
    assert backoffs(gw) == ["the sensor dropped the link"]
    assert_contract(kit, gw, kit.make_plugin())


@contextlib.asynccontextmanager
async def connected(kit: BluezKit) -> AsyncIterator[BleakClient]:
    """A client of the kit's emulator through `establish` on BlueZ (no driver)."""
    async with kit.start_emulator() as target, target.radio():
        device = await BleakScanner.find_device_by_address(PERIPHERAL_ADDRESS, timeout=5)
        assert device is not None
        client = await establish(device, BLUEZ)
        try:
            yield client
        finally:
            await client.disconnect()


async def test_mtu_size_reads_23_on_bluez_while_writes_use_the_real_mtu() -> None:
    # The decision (docs/ble.md): drivers never read mtu_size; on BlueZ it is 23 unless
    # acquired, whatever was negotiated. What a write may carry comes from the MTU property.
    async with connected(cgms()) as client:
        with pytest.warns(UserWarning, match="mtu"):
            assert client.mtu_size == 23
        char = next(c for s in client.services for c in s.characteristics)
        assert char.max_write_without_response_size == 517 - 3


def test_no_driver_reads_mtu_size() -> None:
    readers = [p for p in DRIVERS.rglob("*.py") if "mtu_size" in p.read_text(encoding="utf-8")]
    assert readers == []


async def test_acquire_notify_delivers_through_the_socket_and_ends_when_it_closes() -> None:
    kit = cgms()
    got: asyncio.Queue[bytes] = asyncio.Queue()
    async with connected(kit) as client:
        await client.start_notify(
            CGM_MEASUREMENT,
            lambda _c, data: got.put_nowait(bytes(data)),
            bluez={"use_start_notify": False},
        )
        assert kit.standin().calls["AcquireNotify"] == 1
        assert len(await got.get()) >= 6
        await client.stop_notify(CGM_MEASUREMENT)
        char = client.services.get_characteristic(CGM_MEASUREMENT)
        assert char is not None
        path = char.obj[0]
        device = kit.standin().device(PERIPHERAL_ADDRESS)
        assert device is not None
        await device.wait_released(path)
