"""The metric core: hand-computed cases, the consensus boundaries, and a plain-loop reference."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.integrations.summaries.metrics import (
    DEFAULT_INTERVAL,
    HIGH,
    IN_RANGE,
    LOW,
    VERY_HIGH,
    VERY_LOW,
    estimate_interval,
    gmi,
    range_index,
    summarize,
    value_range,
)
from gatewayd.models import OutOfRange, Reading

END = datetime(2026, 3, 15, tzinfo=UTC)
DAY = timedelta(days=1)


def reading(
    minutes_before_end: float, mgdl: float | None = None, out: OutOfRange | None = None
) -> Reading:
    time = END - timedelta(minutes=minutes_before_end)
    return Reading(
        device="cgm",
        driver="t",
        serial="S",
        session="s",
        seq=int(minutes_before_end * 60),
        time=time,
        received=time,
        glucose_mgdl=mgdl,
        out_of_range=out,
    )


def test_mean_sample_sd_cv_and_gmi_by_hand() -> None:
    s = summarize([reading(10, 100), reading(20, 120), reading(30, 140)], END - DAY, END)
    assert s.n == 3
    assert s.mean_mgdl == 120
    assert s.sd_mgdl == pytest.approx(20.0)  # sqrt((20² + 0 + 20²) / (3 - 1))
    assert s.cv_pct == pytest.approx(100 / 6)
    assert s.gmi_pct == pytest.approx(3.31 + 0.02392 * 120)  # 6.1804
    assert gmi(154) == pytest.approx(6.99368)
    assert s.ranges_pct == (0.0, 0.0, 100.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("mgdl", "expected"),
    [
        (40, VERY_LOW),
        (53, VERY_LOW),
        (53.9, VERY_LOW),
        (54, LOW),
        (69, LOW),
        (69.5, LOW),  # below 70: the consensus' "54-69" on the continuous axis
        (69.99, LOW),
        (70, IN_RANGE),
        (180, IN_RANGE),
        (180.5, HIGH),  # above 180: the consensus' "181-250"
        (181, HIGH),
        (250, HIGH),
        (250.5, VERY_HIGH),
        (251, VERY_HIGH),
        (400, VERY_HIGH),
    ],
)
def test_consensus_boundaries(mgdl: float, expected: int) -> None:
    assert value_range(mgdl) == expected
    assert range_index(reading(1, mgdl)) == expected


def test_out_of_range_readings_count_as_very_low_and_very_high_but_carry_no_value() -> None:
    assert range_index(reading(1, out="low")) == VERY_LOW
    assert range_index(reading(1, out="high")) == VERY_HIGH
    given = [
        reading(5, out="low"),
        reading(10, 53),
        reading(15, 54),
        reading(20, 69),
        reading(25, 70),
        reading(30, 180),
        reading(35, 181),
        reading(40, 250),
        reading(45, 251),
        reading(50, out="high"),
    ]
    s = summarize(given, END - DAY, END)
    assert s.n == 10
    assert s.ranges_pct == (20.0, 20.0, 20.0, 20.0, 20.0)
    # Mean of the eight values only: (53 + 54 + 69 + 70 + 180 + 181 + 250 + 251) / 8.
    assert s.mean_mgdl == pytest.approx(1108 / 8)


def test_only_out_of_range_readings_have_ranges_but_no_mean() -> None:
    s = summarize([reading(5, out="low"), reading(10, out="low")], END - DAY, END)
    assert s.ranges_pct == (100.0, 0.0, 0.0, 0.0, 0.0)
    assert (s.mean_mgdl, s.sd_mgdl, s.cv_pct, s.gmi_pct) == (None, None, None, None)


def test_an_empty_window_and_a_single_value() -> None:
    empty = summarize([], END - DAY, END)
    assert (empty.n, empty.days, empty.coverage_pct) == (0, 0, 0.0)
    assert empty.mean_mgdl is None
    assert empty.ranges_pct is None
    one = summarize([reading(5, 99)], END - DAY, END)
    assert (one.mean_mgdl, one.sd_mgdl, one.cv_pct) == (99, None, None)


def test_window_is_start_inclusive_end_exclusive() -> None:
    given = [reading(24 * 60, 100), reading(0, 300), reading(24 * 60 + 1, 300)]
    s = summarize(given, END - DAY, END)
    assert s.n == 1
    assert s.mean_mgdl == 100


def test_coverage_is_present_over_expected_and_capped() -> None:
    half = [reading(10 * i + 1, 120) for i in range(144)]  # every 10 min: half of 288
    assert summarize(half, END - DAY, END).coverage_pct == pytest.approx(50.0)
    every_minute = [reading(i + 0.5, 120) for i in range(1440)]
    assert summarize(every_minute, END - DAY, END, interval=DEFAULT_INTERVAL).coverage_pct == 100
    fifteen = summarize(half, END - DAY, END, interval=timedelta(minutes=15))
    assert fifteen.coverage_pct == 100.0  # 144 of 96 expected, capped
    assert summarize(half[:48], END - DAY, END, interval=timedelta(minutes=15)).coverage_pct == 50


def test_days_counts_24_hour_slices_back_from_the_end() -> None:
    given = [
        reading(1, 100),  # slice 0
        reading(23 * 60, 100),  # slice 0
        reading(24 * 60 + 1, 100),  # slice 1
        reading(5 * 24 * 60 + 7, 100),  # slice 5
        reading(14 * 24 * 60 - 1, 100),  # slice 13
        reading(14 * 24 * 60, 100),  # slice 13 too: the window's first instant
    ]
    assert summarize(given, END - 14 * DAY, END).days == 4
    assert summarize(given, END - DAY, END).days == 1


@pytest.mark.parametrize(
    ("spacings_s", "expected"),
    [
        ([300, 300, 600, 300], timedelta(minutes=5)),  # a gap does not move the median
        ([290, 310, 295, 305, 300], timedelta(minutes=5)),  # jitter
        ([60] * 10, timedelta(minutes=1)),  # Libre-style 1-minute data
        ([900, 900, 900, 60], timedelta(minutes=15)),
        ([0, 0, 300], timedelta(minutes=5)),  # duplicate times are not spacings
        ([10, 10, 10], timedelta(minutes=1)),  # never below a minute
    ],
)
def test_interval_is_the_median_spacing_in_whole_minutes(
    spacings_s: list[int], expected: timedelta
) -> None:
    times = [END]
    for gap in spacings_s:
        times.append(times[-1] + timedelta(seconds=gap))
    assert estimate_interval(times) == expected


def test_no_interval_from_fewer_than_two_distinct_times() -> None:
    assert estimate_interval([]) is None
    assert estimate_interval([END]) is None
    assert estimate_interval([END, END]) is None


# -- a straightforward reference, written independently with plain loops ----------------------

CONSENSUS_RANGES = (range(54), range(54, 70), range(70, 181), range(181, 251))


def reference(
    given: list[Reading], start: datetime, end: datetime, interval_min: int
) -> dict[str, Any]:
    inside = []
    for r in given:
        if r.time >= start and r.time < end:
            inside.append(r)  # noqa: PERF401 - plain loops on purpose
    counts = [0, 0, 0, 0, 0]
    values = []
    for r in inside:
        if r.glucose_mgdl is None:
            counts[0 if r.out_of_range == "low" else 4] += 1
            continue
        values.append(r.glucose_mgdl)
        slot = 4
        for i, integers in enumerate(CONSENSUS_RANGES):
            if int(r.glucose_mgdl) in integers:
                slot = i
                break
        counts[slot] += 1
    total = 0.0
    for v in values:
        total += v
    mean = total / len(values) if values else None
    sd = None
    if mean is not None and len(values) >= 2:
        squares = 0.0
        for v in values:
            squares += (v - mean) ** 2
        sd = math.sqrt(squares / (len(values) - 1))
    minutes = (end - start).total_seconds() / 60
    days = 0
    for k in range(math.ceil(minutes / 1440)):
        for r in inside:
            if end - (k + 1) * DAY <= r.time < end - k * DAY:
                days += 1
                break
    return {
        "n": len(inside),
        "days": days,
        "coverage": min(100.0, 100.0 * len(inside) / (minutes / interval_min)),
        "mean": mean,
        "sd": sd,
        "cv": None if sd is None or mean is None else 100 * sd / mean,
        "gmi": None if mean is None else 3.31 + 0.02392 * mean,
        "ranges": [100 * c / len(inside) for c in counts] if inside else None,
    }


samples = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=15 * 24 * 60),  # minutes before END (some outside)
        st.one_of(st.integers(min_value=40, max_value=400), st.sampled_from(["low", "high"])),
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(samples=samples, window_days=st.sampled_from([1, 14]))
def test_summaries_equal_a_plain_loop_reference(
    samples: list[tuple[int, int | str]], window_days: int
) -> None:
    given_readings = [
        reading(m, None, v) if isinstance(v, str) else reading(m, v)  # type: ignore[arg-type]
        for m, v in samples
    ]
    start = END - window_days * DAY
    ours = summarize(given_readings, start, END, interval=timedelta(minutes=5))
    ref = reference(given_readings, start, END, 5)
    assert ours.n == ref["n"]
    assert ours.days == ref["days"]
    assert ours.coverage_pct == pytest.approx(ref["coverage"])
    for name, value in (
        ("mean", ours.mean_mgdl),
        ("sd", ours.sd_mgdl),
        ("cv", ours.cv_pct),
        ("gmi", ours.gmi_pct),
    ):
        assert (value is None) == (ref[name] is None), name
        if value is not None:
            assert value == pytest.approx(ref[name], rel=1e-9, abs=1e-9), name
    if ref["ranges"] is None:
        assert ours.ranges_pct is None
    else:
        assert ours.ranges_pct is not None
        assert ours.ranges_pct == pytest.approx(ref["ranges"])
        assert sum(ours.ranges_pct) == pytest.approx(100.0)
