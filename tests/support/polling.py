"""Waiting in a test for a condition that something else makes true: a deadline, not a delay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: The first pause between two looks at the condition; each pause is longer, up to `LAST_S`.
FIRST_S = 0.002
#: The longest pause: a condition that reads a store file is not asked 200 times a second.
LAST_S = 0.05


async def wait_until(
    condition: Callable[[], bool], timeout: float = 10.0, what: str = "the condition"
) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` s naming `what`.

    The pauses grow from `FIRST_S` to `LAST_S`: what holds soon is seen soon, and a long wait
    costs the processes under test little CPU.
    """
    deadline = time.monotonic() + timeout
    pause = FIRST_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, LAST_S)
