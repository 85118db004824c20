"""The CGMS driver passes the driver kit (gatewayd.plugin.kit) against its emulator."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

import pytest

from drivers.cgms import plugin
from drivers.cgms.emulator.kit import FAST_SETTINGS, CgmsKit, SiblingCgmsKit
from gatewayd.plugin import kit as driverkit
from gatewayd.plugin.kit import run_gateway

Check = Callable[[driverkit.DriverKit], Awaitable[None]]


@pytest.mark.timeout(40)
@pytest.mark.parametrize("check", driverkit.CHECKS, ids=driverkit.check_name)
async def test_cgms_driver_honours_the_contract_in_process(
    check: Check, on_stack: Callable[[driverkit.DriverKit], driverkit.DriverKit]
) -> None:
    await check(on_stack(CgmsKit()))


@pytest.mark.timeout(40)
@pytest.mark.parametrize("check", driverkit.BOND_CHECKS, ids=driverkit.check_name)
async def test_a_sensor_that_refuses_to_bond_is_parked(check: Check) -> None:
    await check(CgmsKit())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("check", driverkit.BOND_CHECKS, ids=driverkit.check_name)
async def test_gatewayd_simulate_refuse_bonding_parks_the_sensor(check: Check) -> None:
    await check(SiblingCgmsKit())


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "check",
    [driverkit.check_backfill_after_link_drop, driverkit.check_corrupt_packet_survived],
    ids=driverkit.check_name,
)
async def test_cgms_driver_honours_the_contract_with_the_emulator_in_its_own_process(
    check: Check,
) -> None:
    await check(SiblingCgmsKit())


@pytest.mark.timeout(60)
async def test_sibling_process_without_crc_through_a_session_restart_and_a_drop() -> None:
    settings = (*FAST_SETTINGS, "e2e_crc=false", "restart_age=30", "restart_replay=30")
    kit = SiblingCgmsKit(settings)
    async with kit.start_emulator() as target, run_gateway(plugin, target) as gw:
        await gw.wait_for(3, live=True)
        old = gw.stored[-1].session
        assert kit.process is not None
        kit.process.send_signal(signal.SIGHUP)  # a new sensor session
        await gw.wait_until(
            lambda: sum(r.session != old for r in gw.stored) >= 10, "the new session", 20
        )
        await kit.force_link_drop()
        await gw.wait_for_session(1)
        await gw.wait_for(gw.count(live=True) + 3, live=True)
    new = {r.session for r in gw.stored} - {old}
    assert len(new) == 1
    assert min(r.seq for r in gw.stored if r.session in new) == 0
    driverkit.assert_contract(kit, gw, plugin)


@pytest.mark.timeout(40)
@pytest.mark.parametrize("check", driverkit.FAULT_CHECKS, ids=driverkit.check_name)
async def test_cgms_driver_survives_the_kit_faults_in_process(check: Check) -> None:
    await check(CgmsKit())


async def test_a_kit_without_a_fault_hook_skips_that_check_naming_the_hook() -> None:
    """The sibling process takes its faults as options at start, not as runtime hooks."""
    with pytest.raises(pytest.skip.Exception, match=r"DriverKit\.damage_in_memory"):
        await driverkit.check_records_damaged_in_memory(SiblingCgmsKit())


@pytest.mark.timeout(60)
async def test_sibling_process_with_a_drop_in_its_first_report_and_disordered_records() -> None:
    kit = SiblingCgmsKit((*FAST_SETTINGS, "drop_in_report=50", "disorder=3"))
    async with kit.start_emulator() as target, run_gateway(plugin, target) as gw:
        await gw.wait_for_session(1)
        await gw.wait_for(10, live=True)
    assert gw.opened >= 2
    assert gw.stored[0].seq == 0
    driverkit.assert_contract(kit, gw, plugin)
