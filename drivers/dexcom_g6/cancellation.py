"""`honour_cancellation()`: re-raise a cancellation that an await of Bumble's swallowed.

Python 3.11's `asyncio.wait_for` (which Bumble's HCI and ATT requests use) returns the result
instead of raising when a cancel arrives as the awaited answer completes (CPython gh-86296,
fixed in 3.12). The G5/G6 driver and emulator connect, disconnect and advertise every wake-up,
so a stopping gateway (or emulator) would often miss its cancel and keep running; both call this
after every step that talks to the radio.
"""

from __future__ import annotations

import asyncio


def honour_cancellation() -> None:
    """Raise `CancelledError` when the current task is being cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
