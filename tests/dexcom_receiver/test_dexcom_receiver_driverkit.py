"""The Dexcom receiver driver honours the driver contract (`gatewayd.testing.driverkit`) on its
pty emulator.

The receiver stores a record every 0.1 s (a replayed hour) and the driver polls every 0.05 s,
so new readings keep arriving; a forced link drop unplugs the receiver for 0.5 s and plugs it
back in, so every reconnect backfills from the database pages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from drivers.dexcom_receiver.kit import ReceiverKit
from gatewayd.testing import driverkit

pytestmark = pytest.mark.timeout(40)


@pytest.mark.parametrize("check", driverkit.CHECKS, ids=driverkit.check_name)
async def test_receiver_driver_honours_the_contract(
    check: Callable[[driverkit.DriverKit], Awaitable[None]],
) -> None:
    await check(ReceiverKit())


#: Faults the receiver driver does not survive yet (found by these checks; strict where the
#: failure is certain, so a fix shows).
KNOWN_FAULTS = {
    # intermittent (not strict): it depends on where a poll falls against the jump
    "device_clock_ahead_1h": "at times the record stamped as the clock jumps ahead is lost",
    "device_clock_behind_7_months": (
        "a clock set back to an offset it had before reuses that era's session name "
        "(timeline.era_session): two eras' records mix in one session, out of order"
    ),
    "device_clock_at_epoch": (
        "two resets to the epoch in the same minute get the same era session name "
        "(timeline.era_session)"
    ),
    "duplicated_and_out_of_order": (
        "records are delivered in storage order: one stored late comes after newer ones"
    ),
}


def _fault(check: Callable[[driverkit.DriverKit], Awaitable[None]]) -> object:
    reason = KNOWN_FAULTS.get(driverkit.check_name(check))
    strict = driverkit.check_name(check) != "device_clock_ahead_1h"
    marks = [pytest.mark.xfail(reason=reason, strict=strict)] if reason else []
    return pytest.param(check, marks=marks, id=driverkit.check_name(check))


@pytest.mark.slow
@pytest.mark.parametrize("check", [_fault(c) for c in driverkit.FAULT_CHECKS])
async def test_receiver_driver_survives_the_kit_faults(
    check: Callable[[driverkit.DriverKit], Awaitable[None]],
) -> None:
    await check(ReceiverKit())
