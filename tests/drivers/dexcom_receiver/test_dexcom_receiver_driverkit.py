"""The Dexcom receiver driver honours the driver contract (`gatewayd.plugin.kit`) on its
pty emulator.

The receiver stores a record every 0.1 s (a replayed hour) and the driver polls every 0.05 s,
so new readings keep arriving; a forced link drop unplugs the receiver for 0.5 s and plugs it
back in, so every reconnect backfills from the database pages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from drivers.dexcom_receiver.kit import ReceiverKit
from gatewayd.plugin import kit as driverkit

pytestmark = pytest.mark.timeout(40)


@pytest.mark.parametrize("check", driverkit.CHECKS, ids=driverkit.check_name)
async def test_receiver_driver_honours_the_contract(
    check: Callable[[driverkit.DriverKit], Awaitable[None]],
) -> None:
    await check(ReceiverKit())


@pytest.mark.slow
@pytest.mark.parametrize("check", driverkit.FAULT_CHECKS, ids=driverkit.check_name)
async def test_receiver_driver_survives_the_kit_faults(
    check: Callable[[driverkit.DriverKit], Awaitable[None]],
) -> None:
    await check(ReceiverKit())
