"""The simulated clock: how real elapsed time maps to the sensor's simulated time.

Simulated time is kept as integer microseconds since the Unix epoch, so the record grid (session
starts, `interval` steps) is exact arithmetic and a record's time never depends on float rounding.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000
#: Smallest real sleep (s) when a wake-up came a hair early: guarantees progress on any clock.
_MIN_STEP = 1e-6


def to_us(dt: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def from_us(us: int) -> datetime:
    """The aware UTC datetime of `us` microseconds since the Unix epoch."""
    return _EPOCH + timedelta(0, 0, us)  # positional: cheaper than microseconds=us


class SimClock:
    """Simulated time = anchor + min(elapsed * speed - history, elapsed).

    `anchor` is the wall clock when the clock was made (read once); `elapsed` is real time since
    then, from `monotonic`. The simulated clock starts `history` seconds before the anchor, runs
    `speed` times faster than real time until it has caught up with the wall clock, and from
    then on runs in real time: it is never ahead of anchor + elapsed, so no record it makes is
    dated in the future. With `history` 0 it is the wall clock and `speed` does not matter.

    `monotonic` and `sleep` are injectable: a test can run the clock on virtual time.
    """

    def __init__(
        self,
        anchor: datetime,
        *,
        history: float = 0.0,
        speed: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if speed < 1.0 or history < 0.0:
            raise ValueError("speed must be >= 1 and history >= 0")
        self.anchor_us = to_us(anchor)
        self.history = history
        self.speed = speed
        self._monotonic = monotonic
        self._sleep = sleep
        self._start = monotonic()

    def elapsed(self) -> float:
        """Real seconds since the anchor."""
        return self._monotonic() - self._start

    def now_us(self) -> int:
        """Simulated now, microseconds since the Unix epoch."""
        e = self.elapsed()
        return self.anchor_us + math.floor(min(e * self.speed - self.history, e) * _US)

    def now(self) -> datetime:
        """Simulated now, aware UTC."""
        return from_us(self.now_us())

    def wall_us(self) -> int:
        """The wall clock as this clock sees it (anchor + real elapsed): the upper bound."""
        return self.anchor_us + math.floor(self.elapsed() * _US)

    def caught_up(self) -> bool:
        """Whether the history replay is over and the clock runs in real time."""
        return self.elapsed() * (self.speed - 1.0) >= self.history

    def real_delay(self, target_us: int) -> float:
        """Real seconds until simulated time reaches `target_us` (0 when it already has)."""
        x = (target_us - self.anchor_us) / _US
        needed = max((x + self.history) / self.speed, x)
        return max(0.0, needed - self.elapsed())

    async def sleep_until(self, target_us: int) -> None:
        """Sleep until simulated time reaches `target_us`.

        Each wait is computed afresh from the mapping (never by adding up sleeps), so timer
        jitter does not accumulate into drift.
        """
        while self.now_us() < target_us:
            await self._sleep(max(self.real_delay(target_us), _MIN_STEP))
