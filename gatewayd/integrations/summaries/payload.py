"""Summaries as JSON: the retained MQTT `summary` payload, which `gatewayd report` prints too.

    {"schema": "gatewayd/summary/1", "hub": ..., "device": ...,
     "windows": [{"window": "24h", "from": ..., "to": ..., "n": ..., ...}, {"window": "14d", ...}]}

Every window has exactly the keys of `WINDOW_KEYS`; percentages and mg/dL are rounded to two
decimals, and a metric that cannot be computed is null (gatewayd/schemas/summary.schema.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from gatewayd.integrations.summaries.metrics import (
    DEFAULT_INTERVAL,
    Summary,
    estimate_interval,
    summarize,
)
from gatewayd.models import Reading, isoformat_utc

SUMMARY_SCHEMA = "gatewayd/summary/1"
#: The rolling windows of the published summary, shortest first.
STANDARD_WINDOWS: tuple[tuple[str, timedelta], ...] = (
    ("24h", timedelta(hours=24)),
    ("14d", timedelta(days=14)),
)
WINDOW_KEYS = (
    "window",
    "from",
    "to",
    "n",
    "days",
    "coverage_pct",
    "mean_mgdl",
    "sd_mgdl",
    "cv_pct",
    "gmi_pct",
    "tbr2_pct",
    "tbr1_pct",
    "tir_pct",
    "tar1_pct",
    "tar2_pct",
)
_RANGE_KEYS = ("tbr2_pct", "tbr1_pct", "tir_pct", "tar1_pct", "tar2_pct")


class ReadingSource(Protocol):
    """Where readings come from: the daemon's `Store` or the CLI's read-only view of it."""

    def readings(
        self, device: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[Reading]:
        """Stored readings of a device in [start, end), by measured time."""
        ...


def device_summaries(
    source: ReadingSource,
    device: str,
    end: datetime,
    *,
    windows: Sequence[tuple[str, timedelta]] = STANDARD_WINDOWS,
    interval: timedelta | None = None,
) -> list[Summary]:
    """The summaries of `device` over windows ending at `end`.

    `interval` is the expected spacing of readings; None estimates it from the readings of the
    longest window (their median spacing), falling back to 5 minutes.
    """
    longest = max(length for _, length in windows)
    readings = source.readings(device, end - longest, end)
    if interval is None:
        interval = estimate_interval([r.time for r in readings]) or DEFAULT_INTERVAL
    return [
        summarize(readings, end - length, end, interval=interval, window=label)
        for label, length in windows
    ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def window_json(summary: Summary) -> dict[str, Any]:
    """One window's JSON object (keys in `WINDOW_KEYS` order)."""
    ranges = summary.ranges_pct or (None,) * len(_RANGE_KEYS)
    return {
        "window": summary.window,
        "from": isoformat_utc(summary.start),
        "to": isoformat_utc(summary.end),
        "n": summary.n,
        "days": summary.days,
        "coverage_pct": round(summary.coverage_pct, 2),
        "mean_mgdl": _round(summary.mean_mgdl),
        "sd_mgdl": _round(summary.sd_mgdl),
        "cv_pct": _round(summary.cv_pct),
        "gmi_pct": _round(summary.gmi_pct),
        **{key: _round(value) for key, value in zip(_RANGE_KEYS, ranges, strict=True)},
    }


def summary_payload(hub: str, device: str, summaries: Sequence[Summary]) -> dict[str, Any]:
    """The `summary` payload of one device."""
    return {
        "schema": SUMMARY_SCHEMA,
        "hub": hub,
        "device": device,
        "windows": [window_json(s) for s in summaries],
    }
