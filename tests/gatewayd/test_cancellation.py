"""gatewayd.cancellation: a cancel that an await swallowed is noticed and honoured."""

from __future__ import annotations

import asyncio
import sys

import pytest

from gatewayd.cancellation import cancelling, honour_cancellation


async def test_a_task_nobody_cancels_carries_on() -> None:
    assert cancelling() is False
    honour_cancellation()  # no cancel pending: returns


async def test_a_swallowed_cancel_is_raised_again() -> None:
    """What a library that drops the CancelledError does (Bumble's requests on Python 3.11)."""
    started = asyncio.Event()
    steps: list[str] = []

    async def step_by_step() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            steps.append("swallowed")
        steps.append(f"cancelling={cancelling()}")
        honour_cancellation()
        steps.append("next step")  # never reached

    task = asyncio.create_task(step_by_step())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert steps == ["swallowed", "cancelling=True"]


async def test_a_withdrawn_cancel_is_not_honoured() -> None:
    """`asyncio.timeout` withdraws its own cancel on expiry: only a pending cancel counts."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await asyncio.Event().wait()
    assert cancelling() is False
    honour_cancellation()


async def test_a_cancel_lost_by_wait_for_ends_the_task() -> None:
    """CPython gh-86296: on 3.11 `wait_for` returns the answer that completes in the same loop
    turn as the cancel (3.12 raises); either way the step after the check never runs."""
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiting = asyncio.Event()
    steps: list[str] = []

    async def request() -> None:
        waiting.set()
        steps.append(f"answer={await asyncio.wait_for(answer, timeout=60)}")
        honour_cancellation()
        steps.append("next step")

    task = asyncio.create_task(request())
    await waiting.wait()  # set just before the task parked in wait_for, without yielding
    answer.set_result(7)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # 3.11: the answer came back, the check raised; 3.12+: wait_for raised the cancel itself.
    assert steps == (["answer=7"] if sys.version_info < (3, 12) else [])
