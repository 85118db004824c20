"""Clocks for the G5/G6 emulator: the wall clock, an accelerated replay, and a manual one.

The transmitter counts seconds since its activation; the emulator maps them to the wall time of
a `Clock` (`now()`, `sleep_until(moment)`). None of them runs ahead of the hub's wall clock:

* `WallClock`: real time (`gatewayd simulate` by default).
* `AcceleratedClock`: replays `history` seconds of the past at `speed` x real time, then runs in
  real time (the simulator's `SimClock`), so a gateway sees hours of wake-ups in minutes and no
  reading is ever dated in the future.
* `ManualClock`: moves only when a test calls `advance()` / `set()`; sleepers wake then. Give the
  same clock to the gateway (`DeviceContext.clock`) and both agree on every timestamp.
* `SteppingClock`: a `ManualClock` that jumps to whatever a sleeper waits for (never past the
  wall clock): the emulator's wake-ups come as fast as the gateway serves them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

from drivers.emulation.clock import SimClock, to_us


class Clock(Protocol):
    """The emulator's wall clock."""

    def now(self) -> datetime:
        """Now, aware UTC."""
        ...

    async def sleep_until(self, moment: datetime) -> None:
        """Return once `now()` >= `moment`."""
        ...


class WallClock:
    """Real time."""

    def now(self) -> datetime:
        """`datetime.now(UTC)`."""
        return datetime.now(UTC)

    async def sleep_until(self, moment: datetime) -> None:
        """Sleep until the wall clock reaches `moment`."""
        delay = (moment - self.now()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)


class AcceleratedClock:
    """`history` seconds of the past replayed at `speed`, then real time (see `SimClock`)."""

    def __init__(self, *, history: float = 0.0, speed: float = 1.0) -> None:
        self.sim = SimClock(datetime.now(UTC), history=history, speed=speed)

    def now(self) -> datetime:
        """Simulated now (never ahead of the wall clock)."""
        return self.sim.now()

    async def sleep_until(self, moment: datetime) -> None:
        """Sleep (in real time) until simulated time reaches `moment`."""
        await self.sim.sleep_until(to_us(moment))


class ManualClock:
    """A clock a test moves by hand; `sleep_until` returns once it has been moved far enough."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._now = start.astimezone(UTC)
        self._moved = asyncio.Event()

    def now(self) -> datetime:
        """The time set last."""
        return self._now

    def set(self, moment: datetime) -> None:
        """Move to `moment` (never backwards) and wake the sleepers."""
        if moment < self._now:
            raise ValueError("a ManualClock never goes backwards")
        self._now = moment
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def advance(self, seconds: float) -> datetime:
        """Move forward by `seconds`; returns the new now."""
        self.set(self._now + timedelta(seconds=seconds))
        return self._now

    async def sleep_until(self, moment: datetime) -> None:
        """Wait until the clock has been moved to `moment` or later."""
        while self._now < moment:
            await self._moved.wait()


class SteppingClock(ManualClock):
    """A `ManualClock` that jumps at once to each moment a sleeper waits for - wake-ups come
    as fast as a gateway serves them - but never past the wall clock: a moment still in the
    future is waited for in real time. Start it in the past to replay history at full speed."""

    async def sleep_until(self, moment: datetime) -> None:
        """Jump to `moment` (or wait for the wall clock to reach it), then let others run."""
        while self.now() < moment:
            wall = datetime.now(UTC)
            if moment <= wall:
                self.set(moment)
            else:
                self.set(max(self.now(), wall))
                await asyncio.sleep((moment - wall).total_seconds())
        await asyncio.sleep(0)
