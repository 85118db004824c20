"""gatewayd.backoff.Backoff: capped exponential delays, jittered into [d/2, d]."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.backoff import Backoff


def ceilings(minimum: float, maximum: float, n: int) -> list[float]:
    return [min(maximum, minimum * 2.0**k) for k in range(n)]


def test_grows_to_the_cap_within_jitter() -> None:
    b = Backoff(1.0, 30.0, random.Random(1))
    delays = [b.next() for _ in range(12)]
    for delay, ceiling in zip(delays, ceilings(1.0, 30.0, 12), strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert b.attempts == 12
    assert all(15.0 <= d <= 30.0 for d in delays[5:])  # 1, 2, 4, 8, 16, then capped
    assert max(delays) <= 30.0


def test_first_delay_within_half_minimum_and_minimum() -> None:
    for seed in range(50):
        delay = Backoff(2.0, 100.0, random.Random(seed)).next()
        assert 1.0 <= delay <= 2.0


def test_jitter_spreads_the_delays() -> None:
    """Many hubs retrying after one outage do not retry in lock-step."""
    delays = {Backoff(10.0, 10.0, random.Random(seed)).next() for seed in range(100)}
    assert len(delays) > 90
    assert min(delays) < 6.0
    assert max(delays) > 9.0
    assert all(5.0 <= d <= 10.0 for d in delays)


def test_minimum_equal_to_maximum() -> None:
    b = Backoff(5.0, 5.0, random.Random(3))
    assert all(2.5 <= b.next() <= 5.0 for _ in range(20))


def test_reset() -> None:
    b = Backoff(1.0, 64.0, random.Random(7))
    for _ in range(10):
        b.next()
    assert b.attempts == 10
    b.reset()
    assert b.attempts == 0
    assert 0.5 <= b.next() <= 1.0
    assert b.attempts == 1
    assert 1.0 <= b.next() <= 2.0


def test_many_attempts_do_not_overflow() -> None:
    b = Backoff(0.001, 3600.0, random.Random(0))
    for _ in range(5000):
        delay = b.next()
    assert 1800.0 <= delay <= 3600.0
    assert math.isfinite(delay)


@pytest.mark.parametrize(
    ("minimum", "maximum"),
    [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0), (0.0, 0.0), (-5.0, -1.0)],
)
def test_bad_arguments(minimum: float, maximum: float) -> None:
    with pytest.raises(ValueError, match="0 < minimum <= maximum"):
        Backoff(minimum, maximum)


def test_seeded_rng_reproducible() -> None:
    a = Backoff(1.0, 60.0, random.Random(42))
    b = Backoff(1.0, 60.0, random.Random(42))
    seq_a = [a.next() for _ in range(20)]
    assert seq_a == [b.next() for _ in range(20)]
    c = Backoff(1.0, 60.0, random.Random(43))
    assert seq_a != [c.next() for _ in range(20)]


def test_default_rng_works() -> None:
    b = Backoff(1.0, 2.0)
    assert 0.5 <= b.next() <= 1.0


@given(
    st.floats(min_value=1e-3, max_value=1e3),
    st.floats(min_value=1.0, max_value=1e4),
    st.integers(min_value=0, max_value=2**32),
    st.integers(min_value=1, max_value=80),
)
def test_every_delay_within_bounds(minimum: float, factor: float, seed: int, n: int) -> None:
    maximum = minimum * factor
    b = Backoff(minimum, maximum, random.Random(seed))
    for ceiling in ceilings(minimum, maximum, n):
        delay = b.next()
        assert ceiling / 2 <= delay <= ceiling
        assert delay <= maximum
