"""Summaries against a peer library: iglu (iglu-python 0.4.3, the Python port of the R package
`iglu` used in CGM research) on a 14-day trace.

`PEER` holds iglu's results on `trace()`, recorded once with iglu-python 0.4.3 (it needs
pandas; the project does not depend on it). `test_peer_values_are_current` recomputes them when
iglu-python is importable, so the record can be checked again:

    pip install iglu-python   # in any venv; then, with that venv's site-packages on the path:
    PYTHONPATH=<that venv>/lib/python3.11/site-packages .venv/bin/python -m pytest \
        tests/gatewayd/integrations/summaries/test_summary_peer.py
    PYTHONPATH=... .venv/bin/python \
        tests/gatewayd/integrations/summaries/test_summary_peer.py   # prints a new PEER
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gatewayd.integrations.summaries.metrics import estimate_interval, summarize
from gatewayd.models import Reading

START = datetime(2026, 3, 1, tzinfo=UTC)
END = START + timedelta(days=14)

#: iglu-python 0.4.3 on `trace()`: mean_glu, sd_glu, cv_glu, gmi, below_percent (54, 70),
#: in_range_percent ([70, 180]), above_percent (180, 250), active_percent (manual range, 14 days).
PEER: dict[str, float] = {
    "mean": 149.8094859565448,
    "sd": 59.53424674941157,
    "cv": 39.739971317090415,
    "gmi": 6.893442904080551,
    "below_54": 6.49178590355061,
    "below_70": 9.962904080551139,
    "in_range_70_180": 58.47906730259671,
    "above_180": 31.558028616852145,
    "above_250": 5.007949125596185,
    "active": 93.60119047619048,
}


def trace() -> list[tuple[datetime, int]]:
    """14 days at 5 minutes with jitter, a 10-hour gap, random dropouts; integer mg/dL 40-400."""
    rng = random.Random(20191593)
    points = []
    for i in range(14 * 288):
        jitter = rng.randint(-20, 20)
        noise = (rng.random() - 0.5) * 90
        if 1500 <= i < 1620 or rng.random() < 0.03:
            continue
        minute = i * 5
        base = (
            150
            + 60 * math.sin(2 * math.pi * minute / 1440)
            + 50 * math.sin(2 * math.pi * minute / 317)
        )
        value = min(400, max(40, round(base + noise)))
        time = START + timedelta(minutes=minute, seconds=jitter)
        if START <= time < END:
            points.append((time, value))
    return points


def readings() -> list[Reading]:
    return [
        Reading(
            device="cgm",
            driver="t",
            serial="S",
            session="s",
            seq=i,
            time=time,
            received=time,
            glucose_mgdl=value,
        )
        for i, (time, value) in enumerate(trace())
    ]


def ours() -> dict[str, float]:
    given = readings()
    interval = estimate_interval([r.time for r in given])
    assert interval == timedelta(minutes=5)
    s = summarize(given, START, END, interval=interval)
    assert s.mean_mgdl is not None
    assert s.sd_mgdl is not None
    assert s.cv_pct is not None
    assert s.gmi_pct is not None
    assert s.ranges_pct is not None
    very_low, low, in_range, high, very_high = s.ranges_pct
    return {
        "mean": s.mean_mgdl,
        "sd": s.sd_mgdl,
        "cv": s.cv_pct,
        "gmi": s.gmi_pct,
        "below_54": very_low,
        "below_70": very_low + low,
        "in_range_70_180": in_range,
        "above_180": high + very_high,
        "above_250": very_high,
        "active": s.coverage_pct,
    }


def peer(iglu: Any) -> dict[str, float]:
    import pandas as pd

    points = trace()
    data = pd.DataFrame(
        {
            "id": ["cgm"] * len(points),
            "time": pd.to_datetime([t for t, _ in points], utc=True),
            "gl": [float(v) for _, v in points],
        }
    )
    below = iglu.below_percent(data, targets_below=[54, 70])
    above = iglu.above_percent(data, targets_above=[180, 250])
    in_range = iglu.in_range_percent(data, target_ranges=[[70, 180]])
    active = iglu.active_percent(
        data, range_type="manual", ndays=14, consistent_end_date=END, tz="UTC"
    )
    return {
        "mean": float(iglu.mean_glu(data)["mean"].iloc[0]),
        "sd": float(iglu.sd_glu(data)["SD"].iloc[0]),
        "cv": float(iglu.cv_glu(data)["CV"].iloc[0]),
        "gmi": float(iglu.gmi(data)["GMI"].iloc[0]),
        "below_54": float(below["below_54"].iloc[0]),
        "below_70": float(below["below_70"].iloc[0]),
        "in_range_70_180": float(in_range["in_range_70_180"].iloc[0]),
        "above_180": float(above["above_180"].iloc[0]),
        "above_250": float(above["above_250"].iloc[0]),
        "active": float(active["active_percent"].iloc[0]),
    }


def test_the_trace_exercises_every_range_and_the_boundaries() -> None:
    values = [v for _, v in trace()]
    assert 3500 < len(values) < 4032
    assert {54, 69, 70, 180, 181, 250, 251} <= set(values)
    assert min(values) < 54
    assert max(values) > 250


def test_summaries_equal_the_peer_library() -> None:
    assert PEER, "PEER is empty: record it (see the module docstring)"
    assert ours() == pytest.approx(PEER, rel=1e-9, abs=1e-9)


def test_peer_values_are_current() -> None:
    iglu = pytest.importorskip("iglu_python")
    assert peer(iglu) == pytest.approx(PEER, rel=1e-9, abs=1e-9)


if __name__ == "__main__":
    import iglu_python

    print("PEER: dict[str, float] = {")
    for key, value in peer(iglu_python).items():
        print(f"    {key!r}: {value!r},")
    print("}")
