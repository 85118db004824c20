"""The simulator's glucose model: plausible over two weeks, deterministic, seed-dependent."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from drivers.emulation import physiology
from drivers.emulation.physiology import HIGH_LIMIT, LOW_LIMIT, Sample, sample, true_glucose
from gatewayd.models import Direction

DAY = 86_400
#: 2023-11-14 00:00 UTC: any midnight will do; the model is defined for every time.
T0 = 1_699_920_000
STEP = 300
READINGS = 14 * DAY // STEP


def trace(seed: int, session: int = 0) -> list[Sample]:
    return [sample(seed, session, k, T0 + k * STEP) for k in range(READINGS)]


def value(s: Sample) -> int:
    """A value for statistics: out-of-range readings count as their limit."""
    if s.glucose_mgdl is not None:
        return s.glucose_mgdl
    return LOW_LIMIT - 1 if s.out_of_range == "low" else HIGH_LIMIT + 1


@pytest.fixture(scope="module")
def traces() -> dict[int, list[Sample]]:
    return {seed: trace(seed) for seed in range(6)}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_two_weeks_are_plausible(traces: dict[int, list[Sample]], seed: int) -> None:
    samples = traces[seed]
    values = [value(s) for s in samples]
    assert 120 <= statistics.mean(values) <= 170
    assert any(v < 70 for v in values), "no low in two weeks"
    assert any(v > 180 for v in values), "no post-meal high in two weeks"
    time_in_range = sum(70 <= v <= 180 for v in values) / len(values)
    assert 0.6 <= time_in_range <= 0.95
    for s in samples:
        if s.glucose_mgdl is None:
            assert s.out_of_range in {"low", "high"}
        else:
            assert s.out_of_range is None
            assert isinstance(s.glucose_mgdl, int)
            assert LOW_LIMIT <= s.glucose_mgdl <= HIGH_LIMIT
        assert 60 <= (s.quality_pct or 0) <= 100
    steps = [abs(a - b) for a, b in itertools.pairwise(values)]
    assert max(steps) <= 30, "a 5-minute step larger than physiology plus noise allows"


def test_severe_lows_and_out_of_range_happen_sometimes(traces: dict[int, list[Sample]]) -> None:
    values = [value(s) for samples in traces.values() for s in samples]
    below_54 = sum(v < 54 for v in values) / len(values)
    assert 0 < below_54 < 0.02
    assert any(s.out_of_range == "low" for samples in traces.values() for s in samples)


def test_post_meal_highs_are_typical(traces: dict[int, list[Sample]]) -> None:
    per_day = DAY // STEP
    maxima = [
        max(value(s) for s in samples[d * per_day : (d + 1) * per_day])
        for samples in traces.values()
        for d in range(14)
    ]
    assert 180 <= statistics.median(maxima) <= 260


def test_dawn_phenomenon_raises_early_morning_glucose() -> None:
    def at(hour: float) -> float:
        return statistics.mean(
            true_glucose(seed, T0 + d * DAY + hour * 3600) for seed in range(10) for d in range(14)
        )

    assert at(6.0) > at(3.0) + 10


def test_same_seed_same_trace_in_any_order(traces: dict[int, list[Sample]]) -> None:
    physiology.day_events.cache_clear()
    backwards = [sample(3, 0, k, T0 + k * STEP) for k in reversed(range(READINGS))]
    assert backwards[::-1] == traces[3]


def test_other_seed_or_sensor_gives_another_trace(traces: dict[int, list[Sample]]) -> None:
    assert traces[1] != traces[2]
    other_sensor = trace(1, session=1)
    differing = sum(a != b for a, b in zip(traces[1], other_sensor, strict=True))
    assert differing > READINGS // 2


def test_trend_follows_the_trace(traces: dict[int, list[Sample]]) -> None:
    samples = traces[0]
    agree = total = 0
    for k in range(3, len(samples)):
        s = samples[k]
        if s.glucose_mgdl is None or samples[k - 3].glucose_mgdl is None:
            continue
        change = value(s) - value(samples[k - 3])  # over the same 15 minutes
        if abs(s.trend_mgdl_min) >= 1.5:
            total += 1
            agree += (change > 0) == (s.trend_mgdl_min > 0)
            assert Direction.from_rate(s.trend_mgdl_min) not in {Direction.FLAT, Direction.NONE}
    assert total > 50
    assert agree / total > 0.9


def test_noise_is_the_truncated_sum_of_seeded_innovations_in_any_order() -> None:
    """`noise` keeps each stream's latest innovations: the value is still exactly the sum of
    the model, whatever order the records are asked for in."""
    sd = 3.0 * math.sqrt(1.0 - 0.7**2)

    def innovation(seq: int) -> float:
        draw = physiology._rng(5, "noise", 2, seq).gauss(0.0, sd)
        return max(-3.0 * sd, min(3.0 * sd, draw))

    def model(seq: int) -> float:
        return sum(0.7**k * innovation(seq - k) for k in range(24))

    physiology._innovation.cache_clear()
    seqs = [*range(60), *range(80, 40, -1), 7, 500, 501, 502, -3, -2, 58, 59, 60]
    assert [physiology.noise(5, 2, seq) for seq in seqs] == [model(seq) for seq in seqs]
