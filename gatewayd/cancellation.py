"""A cancellation that a library swallowed, noticed and honoured.

CPython 3.11's `asyncio.wait_for` returns the result instead of raising when a cancel lands as
the awaited answer completes (gh-86296, fixed in 3.12); Bumble's HCI and ATT requests use it.
Bumble also cancels the pending requests of a link that went down, so a `CancelledError` out of
Bumble is not always ours. Both cases are told apart by asking the current task whether a cancel
was requested of it (`Task.cancelling()`): the daemon's device loops, the Bumble transport and
the drivers that talk to the radio step by step ask here.
"""

from __future__ import annotations

import asyncio

__all__ = ["cancelling", "honour_cancellation"]


def cancelling() -> bool:
    """True when a cancel of the current task is pending (requested, not yet withdrawn).

    In an `except CancelledError:` it tells the caller's own cancellation (re-raise it) from a
    library's internal one (a lost link: translate it). Call it from within a task.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def honour_cancellation() -> None:
    """Raise `CancelledError` when a cancel of the current task is pending: call it after an
    await that may have swallowed one, before the next step."""
    if cancelling():
        raise asyncio.CancelledError
