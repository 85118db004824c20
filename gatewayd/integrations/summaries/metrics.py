"""Glucose summary metrics of one window (2019 international consensus on Time in Range), pure.

Ranges, on the continuous mg/dL axis so that every integer value falls where the consensus puts
it and a fractional one (69.5) is never lost between two ranges:

    very low (tbr2)   x < 54              and every out-of-range "low" reading
    low (tbr1)        54 <= x < 70        (the consensus' 54-69)
    in range (tir)    70 <= x <= 180
    high (tar1)       180 < x <= 250      (the consensus' 181-250)
    very high (tar2)  x > 250             and every out-of-range "high" reading

So 69.5 is low, 180.5 is high and 250.5 is very high — the same comparisons (`< 54`, `< 70`,
`>= 70 and <= 180`, `> 180`, `> 250`) as iglu and most published tools.

Percentages are of the readings present (out-of-range ones included); coverage reports the
readings present against those expected, separately. Mean, SD, CV and GMI use the readings
that carry a value: an out-of-range reading has none (its sensor limit differs by model). SD is
the sample standard deviation (n - 1), as in iglu, R's `sd` and AGP software; CV = SD / mean.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gatewayd.models import Reading

#: Upper bounds of very low and low, and of in range and high (see the module docstring).
VERY_LOW_BELOW = 54.0
LOW_BELOW = 70.0
IN_RANGE_UP_TO = 180.0
HIGH_UP_TO = 250.0

#: Expected spacing of readings when neither the config nor the data says otherwise.
DEFAULT_INTERVAL = timedelta(minutes=5)
_DAY = timedelta(days=1)
_TICK = timedelta(microseconds=1)

#: Index of each range in `Summary.ranges_pct` and `range_index`.
VERY_LOW, LOW, IN_RANGE, HIGH, VERY_HIGH = range(5)
#: The ranges as people read them, very low first, per unit (mmol/L as the consensus gives it).
RANGE_LABELS = {
    "mg/dL": ("<54", "54-69", "70-180", "181-250", ">250"),
    "mmol/L": ("<3.0", "3.0-3.8", "3.9-10.0", "10.1-13.9", ">13.9"),
}


def range_index(reading: Reading) -> int:
    """Which consensus range a reading falls in (VERY_LOW … VERY_HIGH)."""
    if reading.glucose_mgdl is None:
        return VERY_LOW if reading.out_of_range == "low" else VERY_HIGH
    return value_range(reading.glucose_mgdl)


def value_range(mgdl: float) -> int:
    """Which consensus range a value in mg/dL falls in."""
    if mgdl < VERY_LOW_BELOW:
        return VERY_LOW
    if mgdl < LOW_BELOW:
        return LOW
    if mgdl <= IN_RANGE_UP_TO:
        return IN_RANGE
    if mgdl <= HIGH_UP_TO:
        return HIGH
    return VERY_HIGH


def gmi(mean_mgdl: float) -> float:
    """Glucose management indicator (%), Bergenstal et al. 2018."""
    return 3.31 + 0.02392 * mean_mgdl


@dataclass(frozen=True, slots=True)
class Summary:
    """The metrics of one window [start, end). Values are None when there is nothing to
    compute them from (no reading; SD and CV need two values)."""

    window: str
    start: datetime
    end: datetime
    n: int
    #: How many of the window's 24-hour slices, counted back from `end`, hold a reading.
    days: int
    coverage_pct: float
    mean_mgdl: float | None
    sd_mgdl: float | None
    cv_pct: float | None
    gmi_pct: float | None
    #: Percent of readings per range: very low, low, in range, high, very high.
    ranges_pct: tuple[float, ...] | None


def estimate_interval(times: Sequence[datetime]) -> timedelta | None:
    """The median spacing of (sorted) reading times in whole minutes, or None with < 2 times."""
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times) if b > a]
    if not gaps:
        return None
    return timedelta(minutes=max(1, round(statistics.median(gaps) / 60)))


def summarize(
    readings: Iterable[Reading],
    start: datetime,
    end: datetime,
    *,
    interval: timedelta | None = DEFAULT_INTERVAL,
    window: str = "",
) -> Summary:
    """The metrics of the readings measured in [start, end), with readings expected every
    `interval` (for coverage; None: the median spacing of these readings, else 5 minutes).

    One pass that keeps only the values and counts, so `readings` may stream from the store.
    """
    n = 0
    values: list[float] = []
    times: list[datetime] = []
    counts = [0] * 5
    slices: set[int] = set()
    for reading in readings:
        if not start <= reading.time < end:
            continue
        n += 1
        if reading.glucose_mgdl is not None:
            values.append(reading.glucose_mgdl)
        counts[range_index(reading)] += 1
        # Slice k is [end - (k+1) days, end - k days); `end - time` is at least 1 µs.
        slices.add((end - reading.time - _TICK) // _DAY)
        if interval is None:
            times.append(reading.time)
    if interval is None:
        interval = estimate_interval(times) or DEFAULT_INTERVAL
    mean = math.fsum(values) / len(values) if values else None
    sd = statistics.stdev(values) if len(values) >= 2 else None
    expected = (end - start) / interval
    return Summary(
        window=window,
        start=start,
        end=end,
        n=n,
        days=len(slices),
        coverage_pct=min(100.0, 100.0 * n / expected) if expected > 0 else 0.0,
        mean_mgdl=mean,
        sd_mgdl=sd,
        cv_pct=100.0 * sd / mean if sd is not None and mean else None,
        gmi_pct=gmi(mean) if mean is not None else None,
        ranges_pct=tuple(100.0 * c / n for c in counts) if n else None,
    )
