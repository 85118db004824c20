"""The `rig` fixture: one emulated G5/G6 transmitter on an in-process Bumble link.

See `drivers.dexcom_g6.kit.Rig`: the driver and the transmitter share a `ManualClock` that starts
a day in the past; `rig.connect()` is one wake-up served to one unmodified driver session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from drivers.dexcom_g6.kit import Rig, rig

#: A fixed start in the past: the simulated person's values are the same on every run.
START = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
async def g6() -> AsyncIterator[Rig]:
    async with rig(START) as harness:
        yield harness
