"""The G5/G6 driver honours the driver contract (`gatewayd.plugin.kit`) on its emulator.

The transmitter wakes on a stepping clock (each wake-up as soon as the gateway finished the last
one); forced link drops also make the gateway miss wake-ups, so every reconnect backfills.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from drivers.dexcom_g6.kit import G6Kit
from gatewayd.plugin import kit as driverkit

pytestmark = pytest.mark.timeout(40)


@pytest.mark.parametrize("check", driverkit.CHECKS, ids=driverkit.check_name)
async def test_g6_driver_honours_the_contract(
    check: Callable[[driverkit.DriverKit], Awaitable[None]],
    on_stack: Callable[[driverkit.DriverKit], driverkit.DriverKit],
) -> None:
    await check(on_stack(G6Kit()))


@pytest.mark.parametrize("check", driverkit.BOND_CHECKS, ids=driverkit.check_name)
async def test_a_transmitter_that_refuses_to_bond_is_parked(
    check: Callable[[driverkit.DriverKit], Awaitable[None]],
) -> None:
    await check(G6Kit())


@pytest.mark.parametrize("check", driverkit.FAULT_CHECKS, ids=driverkit.check_name)
async def test_g6_driver_survives_the_kit_faults(
    check: Callable[[driverkit.DriverKit], Awaitable[None]],
) -> None:
    await check(G6Kit())
