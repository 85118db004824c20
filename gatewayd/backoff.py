"""Capped exponential backoff with jitter, shared by the publisher and the device loops."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from `minimum` up to `maximum`, each jittered into [d/2, d].

    Jitter keeps a fleet of hubs (or several devices on one hub) from retrying in lock-step
    after a shared outage; the floor of d/2 keeps a retry from coming back immediately.
    """

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        if minimum <= 0 or maximum < minimum:
            raise ValueError("need 0 < minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        ceiling = min(self.maximum, self.minimum * 2.0 ** min(self.attempts, 62))
        self.attempts += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        """Back to the shortest delay (after a success)."""
        self.attempts = 0
