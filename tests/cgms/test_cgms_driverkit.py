"""The CGMS driver passes the driver kit (gatewayd.testing.driverkit) against its emulator."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from drivers.cgms.emulator.kit import CgmsKit, SiblingCgmsKit
from gatewayd.testing import driverkit

Check = Callable[[driverkit.DriverKit], Awaitable[None]]


@pytest.mark.timeout(40)
@pytest.mark.parametrize("check", driverkit.CHECKS, ids=driverkit.check_name)
async def test_cgms_driver_honours_the_contract_in_process(check: Check) -> None:
    await check(CgmsKit())


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
