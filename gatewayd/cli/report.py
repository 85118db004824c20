"""`gatewayd report`: a device's summary from the store, without the daemon.

Without `--days` it prints the windows of the MQTT `summary` (24h and 14d); `--days N` prints
one window of N days instead. `--format json` prints the `summary` payload itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from gatewayd.integrations.summaries import options as summary_options
from gatewayd.integrations.summaries.inputs import OptionError, open_device, parse_time
from gatewayd.integrations.summaries.metrics import RANGE_LABELS
from gatewayd.integrations.summaries.payload import (
    STANDARD_WINDOWS,
    device_summaries,
    summary_payload,
)
from gatewayd.models import MGDL_PER_MMOLL

#: Longest `--days` (the default retention is 90 days).
MAX_DAYS = 366
_RANGE_KEYS = ("tbr2_pct", "tbr1_pct", "tir_pct", "tar1_pct", "tar2_pct")
_RANGE_NAMES = ("very low", "low", "in range", "high", "very high")
#: The keys in mg/dL, converted for a hub that shows mmol/L.
_GLUCOSE_KEYS = ("mean_mgdl", "sd_mgdl")


def _rows(unit: str) -> tuple[tuple[str, str], ...]:
    """(label, payload key) of every row, glucose and ranges in `unit`."""
    ranges = zip(_RANGE_NAMES, RANGE_LABELS[unit], _RANGE_KEYS, strict=True)
    return (
        ("from", "from"),
        ("to", "to"),
        ("readings", "n"),
        ("days with data", "days"),
        ("coverage %", "coverage_pct"),
        (f"mean {unit}", "mean_mgdl"),
        (f"SD {unit}", "sd_mgdl"),
        ("CV %", "cv_pct"),
        ("GMI %", "gmi_pct"),
        *((f"{name} {label} %", key) for name, label, key in ranges),
    )


def run_report(
    config_path: Path,
    device: str,
    *,
    days: int | None = None,
    fmt: str = "text",
    at: str | None = None,
    out: TextIO | None = None,
) -> int:
    """Print the report; returns the exit status."""
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise OptionError("--days", f"must be 1-{MAX_DAYS}, got {days}")
    end = parse_time(at, "--at", UTC) if at else datetime.now(UTC)
    cfg, store = open_device(config_path, device)
    with store:
        windows = STANDARD_WINDOWS if days is None else ((f"{days}d", timedelta(days=days)),)
        interval = summary_options.read(cfg).interval
        summaries = device_summaries(store, device, end, windows=windows, interval=interval)
    payload = summary_payload(cfg.hub.id, device, summaries)
    stream = out or sys.stdout
    if fmt == "json":
        stream.write(json.dumps(payload, indent=2) + "\n")
    else:
        stream.write(render_text(payload, cfg.hub.unit))
    return 0


def render_text(payload: dict[str, Any], unit: str = "mg/dL") -> str:
    """The payload as a table: one row per metric, one column per window; glucose in `unit`
    (the JSON stays in mg/dL)."""
    windows: Sequence[dict[str, Any]] = payload["windows"]
    rows = _rows(unit)
    header = f"hub {payload['hub']}, device {payload['device']}"
    label_width = max(len(label) for label, _ in rows)
    cells = [[_cell(_in_unit(w[key], key, unit)) for w in windows] for _, key in rows]
    width = max(len(c) for row in [[w["window"] for w in windows], *cells] for c in row)
    lines = [header, " " * label_width + "".join(f"  {w['window']:>{width}}" for w in windows)]
    for (label, _), row in zip(rows, cells, strict=True):
        lines.append(f"{label:<{label_width}}" + "".join(f"  {c:>{width}}" for c in row))
    return "\n".join(lines) + "\n"


def _in_unit(value: Any, key: str, unit: str) -> Any:
    if key in _GLUCOSE_KEYS and value is not None and unit == "mmol/L":
        return value / MGDL_PER_MMOLL
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`gatewayd report`'s options."""
    parser.add_argument("--config", "-c", type=Path, required=True, help="the TOML config file")
    parser.add_argument("--device", "-d", required=True, help="the device id")
    parser.add_argument("--days", type=int, help="one window of N days instead of 24h and 14d")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--at", help="end of the windows, ISO-8601 (default now)")


def main(args: argparse.Namespace) -> int:
    """Run `gatewayd report` with the parsed options."""
    return run_report(args.config, args.device, days=args.days, fmt=args.format, at=args.at)
