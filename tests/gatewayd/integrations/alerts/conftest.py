"""Readings for alert tests: measured at `T0 + minute`, on a 5-minute sensor by default."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import pytest

from gatewayd.models import OutOfRange, Reading

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


class MakeReading(Protocol):
    def __call__(
        self,
        minute: float,
        glucose: float | None,
        trend: float | None = 0.0,
        *,
        out_of_range: OutOfRange | None = None,
        status: tuple[str, ...] = (),
        session: str = "s1",
        backfilled: bool = False,
        device: str = "cgm1",
    ) -> Reading: ...


def _make(
    minute: float,
    glucose: float | None,
    trend: float | None = 0.0,
    *,
    out_of_range: OutOfRange | None = None,
    status: tuple[str, ...] = (),
    session: str = "s1",
    backfilled: bool = False,
    device: str = "cgm1",
) -> Reading:
    measured = T0 + timedelta(minutes=minute)
    return Reading(
        device=device,
        driver="testcgm",
        serial=f"SN-{device}",
        session=session,
        seq=round(minute * 60),
        time=measured,
        received=measured + timedelta(seconds=2),
        glucose_mgdl=glucose,
        out_of_range=out_of_range,
        trend_mgdl_min=trend,
        status=status,
        backfilled=backfilled,
    )


@pytest.fixture
def make_reading() -> MakeReading:
    """`make_reading(minute, glucose, trend, ...)`: a reading of device `cgm1`."""
    return _make


@pytest.fixture
def at() -> Callable[[float], datetime]:
    """`at(minute)`: the instant `T0 + minute`."""
    return lambda minute: T0 + timedelta(minutes=minute)
