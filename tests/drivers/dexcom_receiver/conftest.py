"""Fixtures of the Dexcom receiver tests: an emulated receiver on a pty, driver contexts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest
import structlog

from drivers.dexcom_receiver.emulator import ManualClock, ReceiverEmulator
from drivers.dexcom_receiver.options import ReceiverOptions
from gatewayd.driver import DeviceContext, ResumePoint
from gatewayd.models import Reading
from protocols.dexcom_receiver.commands import receiver_seconds

#: The emulated receiver's clock starts this far behind the wall clock (readings are never in
#: the future however far a test advances it).
BEHIND = 6 * 3600


class MakeContext(Protocol):
    def __call__(
        self, resume: ResumePoint | None = None, **options: Any
    ) -> DeviceContext[ReceiverOptions]: ...


Take = Callable[[AsyncIterator[Reading], int], Coroutine[Any, Any, list[Reading]]]


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[ReceiverEmulator]:
    """A G4 receiver with two days of EGV records, its clock six hours behind the wall."""
    clock = ManualClock(receiver_seconds(datetime.now(UTC)) - BEHIND)
    emulator = ReceiverEmulator(tmp_path / "receiver", clock=clock, origin=clock.now() - 2 * 86400)
    async with emulator:
        yield emulator


@pytest.fixture
def make_ctx(receiver: ReceiverEmulator) -> MakeContext:
    """Driver contexts for the `receiver` fixture's path (fast polls and timeouts)."""

    def make(resume: ResumePoint | None = None, **options: Any) -> DeviceContext[ReceiverOptions]:
        values: dict[str, Any] = {
            "path": str(receiver.link),
            "poll_interval": 0.02,
            "backfill_hours": 1.0,
            "timeout": 0.3,
        }
        values.update(options)
        return DeviceContext(
            device_id="rx1",
            driver="dexcom_receiver",
            options=ReceiverOptions(**values),
            resume=resume,
            log=structlog.get_logger().bind(device="rx1"),
        )

    return make


@pytest.fixture
def clock(receiver: ReceiverEmulator) -> ManualClock:
    """The `receiver` fixture's clock (advance it to make new records)."""
    assert isinstance(receiver.clock, ManualClock)
    return receiver.clock


async def _take(stream: AsyncIterator[Reading], count: int, timeout: float = 5.0) -> list[Reading]:
    readings: list[Reading] = []
    async with asyncio.timeout(timeout):
        while len(readings) < count:
            readings.append(await anext(stream))
    return readings


@pytest.fixture
def take() -> Take:
    """`await take(stream, n)`: the next n readings of a `readings()` stream (5 s at most)."""
    return _take
