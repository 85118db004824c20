"""The contract checks every driver passes (`CHECKS`), the bond check (`BOND_CHECKS`), and
`assert_contract`, what every check asserts at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gatewayd.device_status import LinkState
from gatewayd.driver import DriverPlugin
from gatewayd.models import reading_id
from gatewayd.plugin.kit.gateway import KitGateway, run_gateway
from gatewayd.plugin.kit.kit import DriverKit, Target


def _expect(condition: bool, message: str) -> None:
    """`assert` that survives `python -O` (the kit is library code)."""
    if not condition:
        raise AssertionError(message)


def assert_contract(kit: DriverKit, gateway: KitGateway, plugin: DriverPlugin[Any]) -> None:
    """What must hold of everything stored: well formed, complete, no duplicates, in order
    (complete: every key of `kit.expected_sequence`)."""
    stored = gateway.stored
    _expect(bool(stored), "nothing was stored")
    for r in stored:
        _expect(r.device == gateway.device.id, f"reading for {r.device!r}")
        _expect(r.driver == plugin.name, f"reading of driver {r.driver!r}")
        _expect(r.id == reading_id(r.driver, r.serial, r.session, r.seq), f"id of {r}")
        _expect(r.time <= r.received, f"dated after it was received: {r}")
    keys = gateway.keys()
    twice = [key for key, n in Counter(keys).items() if n > 1]
    _expect(not twice, f"(session, seq) stored under two ids: {twice[:10]}")
    missing = sorted(set(kit.expected_sequence(stored)) - set(keys))
    _expect(not missing, f"{len(missing)} sequences missing, first {missing[:10]}")
    for session in {s for s, _ in keys}:
        seqs = [seq for s, seq in keys if s == session]
        _expect(seqs == sorted(seqs), f"session {session} stored out of order")
    if not kit.redelivers:
        again = [rid for rid, n in Counter(r.id for r in gateway.yielded).items() if n > 1]
        _expect(not again, f"{len(again)} readings yielded twice")


@contextlib.asynccontextmanager
async def _warm_gateway(
    kit: DriverKit, plugin: DriverPlugin[Any], target: Target
) -> AsyncIterator[KitGateway]:
    """A gateway on the running emulator, once `readings_before` readings are stored."""
    async with run_gateway(plugin, target, device_id=kit.device_id) as gateway:
        await kit.make_readings(kit.readings_before)
        await gateway.wait_for(kit.readings_before, kit.timeout, live=kit.live)
        yield gateway


async def _more_readings(kit: DriverKit, gateway: KitGateway) -> None:
    """Have the device make `readings_after` more readings and wait until they are stored."""
    await kit.make_readings(kit.readings_after)
    after = gateway.count(live=kit.live) + kit.readings_after
    await gateway.wait_for(after, kit.timeout, live=kit.live)


async def check_readings_arrive(kit: DriverKit) -> None:
    """Readings flow into the store, complete and well formed."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with _warm_gateway(kit, plugin, target) as gateway:
            state = gateway.device.status.state if gateway.device.status else None
            _expect(state == LinkState.CONNECTED, f"device {state}, not connected")
        assert_contract(kit, gateway, plugin)


async def check_backfill_after_link_drop(kit: DriverKit) -> None:
    """Forced link drops: the driver reconnects and the gap is backfilled."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with _warm_gateway(kit, plugin, target) as gateway:
            first_drop = len(gateway.stored)
            for _ in range(kit.drops):
                opened = gateway.opened
                await kit.force_link_drop()
                await gateway.wait_for_session(opened, kit.timeout)
                await _more_readings(kit, gateway)
        assert_contract(kit, gateway, plugin)
        if kit.backfills_after_drop:
            _expect(any(r.backfilled for r in gateway.stored[first_drop:]), "nothing backfilled")


async def check_corrupt_packet_survived(kit: DriverKit) -> None:
    """A damaged packet is dropped and counted; the session goes on; nothing is missing."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with _warm_gateway(kit, plugin, target) as gateway:
            dropped = gateway.device.dropped
            before = sum(dropped.values())
            await kit.corrupt_next()
            await kit.make_readings(kit.readings_after)
            await gateway.wait_until(
                lambda: sum(dropped.values()) > before, "the damaged packet", kit.timeout
            )
            after = gateway.count(live=kit.live) + kit.readings_after
            await gateway.wait_for(after, kit.timeout, live=kit.live)
        assert_contract(kit, gateway, plugin)


async def check_clean_shutdown(kit: DriverKit) -> None:
    """Stopping the gateway closes every session and the device's link."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with _warm_gateway(kit, plugin, target) as gateway:
            pass  # the gateway stops here, with readings stored
        _expect(gateway.opened >= 1, "no session was opened")
        _expect(gateway.closed == gateway.opened, "a session was not closed")
        state = gateway.device.status.state if gateway.device.status else None
        _expect(state == LinkState.STOPPED, f"device {state}, not stopped")
        if target.idle is not None:
            await target.idle()
        assert_contract(kit, gateway, plugin)


async def check_refused_bond_parks(kit: DriverKit) -> None:
    """A device that refuses to bond is parked with an actionable reason, after one attempt."""
    plugin = kit.make_plugin()
    kit.refuse_bonding()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with run_gateway(plugin, target, device_id=kit.device_id) as gateway:

            def parked() -> bool:
                status = gateway.device.status
                return status is not None and status.state == LinkState.PARKED

            # half the check's time: a device that keeps being retried fails here, with the count
            await gateway.wait_until(parked, "the device parked", kit.timeout / 2)
            attempts = gateway.attempts
            if target.idle is not None:
                await target.idle()  # the link is closed, and stays so
            status = gateway.device.status
            reason = (status.reason if status is not None else None) or ""
        _expect("bond" in reason.lower(), f"the parking reason does not name the bond: {reason!r}")
        _expect(attempts == 1, f"{attempts} connection attempts before parking, not 1")
        # parked for good: no attempt between parking and the gateway's stop
        _expect(gateway.attempts == attempts, f"retried after parking: {gateway.attempts}")
        _expect(not gateway.stored, f"{len(gateway.stored)} readings stored from a refused device")
        _expect(gateway.closed == gateway.opened, "a session was not closed")


CHECKS: tuple[Callable[[DriverKit], Awaitable[None]], ...] = (
    check_readings_arrive,
    check_backfill_after_link_drop,
    check_corrupt_packet_survived,
    check_clean_shutdown,
)


#: Opt-in checks for a BLE driver whose kit implements `refuse_bonding()`.
BOND_CHECKS: tuple[Callable[[DriverKit], Awaitable[None]], ...] = (check_refused_bond_parks,)


def check_name(check: Callable[[DriverKit], Awaitable[None]]) -> str:
    """A check's name without the `check_` prefix (pytest ids)."""
    return check.__name__.removeprefix("check_")
