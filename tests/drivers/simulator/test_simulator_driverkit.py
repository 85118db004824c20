"""The simulator driver honours the driver contract (`gatewayd.plugin.kit`) on its
virtual sensor: a reading every 0.1 s, forced link drops, damaged, duplicated and late
notifications. The fault checks it cannot have (no device calendar, a computed memory, no
first backfill) skip, naming the hook.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from drivers.simulator.kit import SimulatorKit
from gatewayd.plugin import kit as driverkit

pytestmark = pytest.mark.timeout(40)

Check = Callable[[driverkit.DriverKit], Awaitable[None]]
#: The fault checks the simulator runs; the others skip (their hooks say why).
SUPPORTED = {driverkit.check_duplicated_and_out_of_order}


@pytest.mark.parametrize("check", driverkit.CHECKS, ids=driverkit.check_name)
async def test_simulator_honours_the_contract(check: Check) -> None:
    await check(SimulatorKit())


@pytest.mark.parametrize("check", driverkit.FAULT_CHECKS, ids=driverkit.check_name)
async def test_simulator_survives_the_kit_faults(check: Check) -> None:
    if check in SUPPORTED:
        await check(SimulatorKit())
        return
    with pytest.raises(pytest.skip.Exception, match="does not support this fault"):
        await check(SimulatorKit())
