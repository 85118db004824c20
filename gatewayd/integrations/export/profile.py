"""What the AGP report draws, computed (pure): the modal day, the daily profiles, the bar.

Modal day: every `step` minutes from 00:00 to 24:00 local time, the 5th, 25th, 50th, 75th and
95th percentiles of the readings within `span` minutes centred there (wrapping midnight), by
linear interpolation between order statistics (numpy's default, R's type 7). Out-of-range
readings count as the usual sensor limits, 40 and 400 mg/dL, so a "low" stays at the bottom.

Daily profiles: each local day of the period, midnight to midnight, its readings in order with
a break wherever readings are missing. The time-in-ranges bar: every range that holds a reading
gets a visible minimum height (`bar_heights`); the printed percentages stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from gatewayd.models import Reading

PERCENTILES = (5, 25, 50, 75, 95)
LOW_AS_MGDL = 40.0
HIGH_AS_MGDL = 400.0
_DAY_MIN = 1440.0


@dataclass(frozen=True, slots=True)
class ProfilePoint:
    """The percentiles (in `PERCENTILES` order) at `minute` after local midnight, or None
    where fewer than `min_count` readings fell in the span."""

    minute: float
    values: tuple[float, ...] | None


def percentile(ordered: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) of sorted values, linear between order statistics."""
    if not ordered:
        raise ValueError("percentile of no values")
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def agp_value(reading: Reading) -> float:
    """The value a reading plots at (out-of-range readings at the sensor limits)."""
    if reading.glucose_mgdl is not None:
        return reading.glucose_mgdl
    return LOW_AS_MGDL if reading.out_of_range == "low" else HIGH_AS_MGDL


def time_of_day(reading: Reading, tz: tzinfo) -> float:
    """Minutes after local midnight at which the reading was measured."""
    local = reading.time.astimezone(tz)
    return local.hour * 60 + local.minute + local.second / 60 + local.microsecond / 6e7


def modal_day(
    readings: Sequence[Reading],
    tz: tzinfo,
    *,
    step: int = 15,
    span: int = 60,
    min_count: int = 5,
) -> list[ProfilePoint]:
    """The modal day's percentile curves, at 0, step, … 1440 minutes (the last is 00:00 again)."""
    points = [(time_of_day(r, tz), agp_value(r)) for r in readings]
    profile: list[ProfilePoint] = []
    for k in range(int(_DAY_MIN // step) + 1):
        centre = k * step
        near = sorted(v for m, v in points if _circular_distance(m, centre) <= span / 2)
        values = tuple(percentile(near, p) for p in PERCENTILES) if len(near) >= min_count else None
        profile.append(ProfilePoint(float(centre), values))
    return profile


def _circular_distance(a: float, b: float) -> float:
    d = abs(a - b) % _DAY_MIN
    return min(d, _DAY_MIN - d)


@dataclass(frozen=True, slots=True)
class Day:
    """One local day of the period: (minutes after midnight, mg/dL) in time order, with a NaN
    value wherever readings are missing (so a line breaks there); empty without readings."""

    day: date
    points: list[tuple[float, float]]


def daily_profiles(
    readings: Sequence[Reading], tz: tzinfo, start: datetime, end: datetime, gap: timedelta
) -> list[Day]:
    """Every local day that [start, end) touches, with its readings (in time order)."""
    first, last = start.astimezone(tz).date(), (end - timedelta(microseconds=1)).astimezone(tz)
    days = {first + timedelta(days=k): Day(first + timedelta(days=k), []) for k in
            range((last.date() - first).days + 1)}  # fmt: skip
    previous: dict[date, datetime] = {}
    for reading in readings:
        local = reading.time.astimezone(tz)
        day = days.get(local.date())
        if day is None:
            continue
        before = previous.get(day.day)
        if before is not None and reading.time - before > gap:
            day.points.append((time_of_day(reading, tz) - 1e-6, math.nan))
        day.points.append((time_of_day(reading, tz), agp_value(reading)))
        previous[day.day] = reading.time
    return list(days.values())


def bar_heights(shares: Sequence[float], minimum: float) -> list[float]:
    """Heights (of 100) for the time-in-ranges bar: each non-zero share at least `minimum`,
    the surplus taken from the larger ones in proportion to what they have above it."""
    heights = [max(s, minimum) if s > 0 else 0.0 for s in shares]
    surplus = sum(heights) - sum(shares)
    room = sum(h - minimum for h in heights if h > minimum)
    if surplus <= 0 or room <= 0:
        return heights
    return [h - surplus * (h - minimum) / room if h > minimum else h for h in heights]


def per_day(pct: float) -> str:
    """The time a day that a percentage of it means: "1 h 12 min", "45 min", "0 min"."""
    minutes = round(pct / 100 * 1440)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
