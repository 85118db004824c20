"""The opt-in fault checks (`FAULT_CHECKS`): faults that independent devices show, each driven
through a fault hook of the kit; a hook the kit does not implement skips its check.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from gatewayd.plugin.kit.checks import (
    _expect,
    _more_readings,
    _warm_gateway,
    assert_contract,
)
from gatewayd.plugin.kit.gateway import KitGateway, run_gateway
from gatewayd.plugin.kit.kit import (
    CLOCK_TOLERANCE,
    IN_FLIGHT_REPORTS,
    LARGE_BACKFILL,
    DriverKit,
    FaultUnsupportedError,
)

# -- fault checks (opt-in through the fault hooks) -------------------------------------------------


async def _hook(kit: DriverKit, hook: str, *args: Any) -> Any:
    """Call a fault hook; skip the check when the kit does not support it."""
    try:
        return await getattr(kit, hook)(*args)
    except FaultUnsupportedError as exc:
        _skip(kit, exc)


def _skip(kit: DriverKit, exc: FaultUnsupportedError) -> NoReturn:
    import pytest  # only checks that skip need it

    pytest.skip(f"{type(kit).__name__} does not support this fault: DriverKit.{exc.hook}")


async def _drop_and_resume(kit: DriverKit, gateway: KitGateway) -> None:
    """Force a link drop, wait for the reconnect and `readings_after` new readings."""
    opened = gateway.opened
    await kit.force_link_drop()
    await gateway.wait_for_session(opened, kit.timeout)
    await _more_readings(kit, gateway)


async def check_records_damaged_in_memory(kit: DriverKit) -> None:
    """Records that stay damaged in memory are passed over and counted; all others arrive."""
    await _check_damaged(kit, ("start", "middle", "end"))


async def check_record_in_flight_before_reports(kit: DriverKit) -> None:
    """Each report begins with the newest record, a live one the device had queued when it
    read the request, and records stay damaged at the start and in the middle of the memory:
    the damaged ones are passed over, every other record arrives, once, in order."""
    await _check_damaged(kit, ("start", "middle"), in_flight=IN_FLIGHT_REPORTS)


async def _check_damaged(kit: DriverKit, where: tuple[str, ...], *, in_flight: int = 0) -> None:
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        if in_flight:
            await _hook(kit, "records_in_flight", in_flight)
        damaged = set(await _hook(kit, "damage_in_memory", where))
        async with run_gateway(plugin, target, device_id=kit.device_id) as gateway:
            findings = gateway.device.findings
            await gateway.wait_until(
                lambda: findings.unreadable >= len(damaged), "the damaged records", kit.timeout
            )
            await _more_readings(kit, gateway)
        assert_contract(kit, gateway, plugin)
        stored = set(gateway.keys())
        _expect(not damaged & stored, f"damaged records stored: {sorted(damaged & stored)}")
        _expect(
            findings.unreadable == len(damaged),
            f"{findings.unreadable} records unreadable, {len(damaged)} damaged",
        )


async def _check_device_clock(kit: DriverKit, fault: str) -> None:
    """The device's calendar is `fault`, then right, then `fault` again (a link drop at each
    jump): times stay true, nothing is re-dated or stored twice, the offset is reported."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        offset = await _hook(kit, "set_device_clock", fault)
        async with _warm_gateway(kit, plugin, target) as gateway:
            await _hook(kit, "set_device_clock", "right")
            await _drop_and_resume(kit, gateway)
            await _hook(kit, "set_device_clock", fault)
            await _drop_and_resume(kit, gateway)
        assert_contract(kit, gateway, plugin)
        try:
            truth = [(r, kit.true_time(r)) for r in gateway.stored]
        except FaultUnsupportedError as exc:
            _skip(kit, exc)
        worst = max(abs(r.time - t) for r, t in truth)
        _expect(worst <= CLOCK_TOLERANCE, f"a reading {worst} away from the device's truth")
        twice = [t for t, n in Counter(t for _, t in truth).items() if n > 1]
        _expect(not twice, f"{len(twice)} true records stored twice, first {twice[:3]}")
        measured = gateway.device.findings.clock_offset_s
        if kit.reports_clock_offset:
            _expect(
                measured is not None and abs(measured - offset) <= 2 * CLOCK_TOLERANCE.seconds,
                f"clock offset {measured} s reported, the device's is {offset:.0f} s",
            )


async def check_device_clock_ahead_1h(kit: DriverKit) -> None:
    """The device's calendar runs one hour ahead."""
    await _check_device_clock(kit, "ahead_1h")


async def check_device_clock_behind_7_months(kit: DriverKit) -> None:
    """The device's calendar is seven months behind."""
    await _check_device_clock(kit, "behind_7_months")


async def check_device_clock_at_epoch(kit: DriverKit) -> None:
    """The device's calendar was reset to its epoch."""
    await _check_device_clock(kit, "epoch")


async def check_memory_reset(kit: DriverKit) -> None:
    """The memory is erased and sequence numbers start again: the new records arrive."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with _warm_gateway(kit, plugin, target) as gateway:
            before = len(gateway.stored)
            # The backfill may still be running: what is stored later of these sessions with a
            # higher seq is the old memory; a new session, or a lower seq, is the new sequence.
            sessions = {r.session for r in gateway.stored}
            top = max(r.seq for r in gateway.stored)
            await _hook(kit, "reset_memory")
            await kit.make_readings(kit.readings_after)
            await gateway.wait_until(
                lambda: (
                    sum(r.session not in sessions or r.seq < top for r in gateway.stored[before:])
                    >= kit.readings_after
                ),
                "readings of the new sequence",
                kit.timeout,
            )
        assert_contract(kit, gateway, plugin)


async def check_duplicated_and_out_of_order(kit: DriverKit) -> None:
    """New records sent twice and out of order are each stored once, in order."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with _warm_gateway(kit, plugin, target) as gateway:
            await _hook(kit, "disorder_records")
            await _more_readings(kit, gateway)
        assert_contract(kit, gateway, plugin)


async def check_large_backfill(kit: DriverKit) -> None:
    """A memory of `LARGE_BACKFILL` records on first contact is stored whole, in order."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        await _hook(kit, "fill_memory", LARGE_BACKFILL)
        async with run_gateway(plugin, target, device_id=kit.device_id) as gateway:
            await kit.make_readings(kit.readings_after)
            await gateway.wait_for(LARGE_BACKFILL + kit.readings_after, kit.timeout)
        assert_contract(kit, gateway, plugin)
        backfilled = sum(r.backfilled for r in gateway.stored)
        _expect(backfilled >= LARGE_BACKFILL, f"only {backfilled} readings backfilled")


async def check_link_drop_mid_report(kit: DriverKit) -> None:
    """The link drops in the middle of the first backfill: the next connection completes it."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        await _hook(kit, "drop_in_report")
        async with run_gateway(plugin, target, device_id=kit.device_id) as gateway:
            await gateway.wait_for_session(1, kit.timeout)
            await kit.make_readings(kit.readings_after)
            await gateway.wait_for(kit.readings_after, kit.timeout, live=kit.live)
        assert_contract(kit, gateway, plugin)
        _expect(gateway.opened >= 2, "the link did not drop")


FAULT_CHECKS: tuple[Callable[[DriverKit], Awaitable[None]], ...] = (
    check_records_damaged_in_memory,
    check_device_clock_ahead_1h,
    check_device_clock_behind_7_months,
    check_device_clock_at_epoch,
    check_memory_reset,
    check_duplicated_and_out_of_order,
    check_large_backfill,
    check_link_drop_mid_report,
    check_record_in_flight_before_reports,
)
