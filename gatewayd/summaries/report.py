"""`gatewayd report`: a device's summary from the store, without the daemon.

Without `--days` it prints the windows of the MQTT `summary` (24h and 14d); `--days N` prints
one window of N days instead. `--format json` prints the `summary` payload itself.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from gatewayd.summaries import options as summary_options
from gatewayd.summaries.inputs import OptionError, open_device, parse_time
from gatewayd.summaries.payload import STANDARD_WINDOWS, device_summaries, summary_payload

#: Longest `--days` (the default retention is 90 days).
MAX_DAYS = 366
_ROWS = (
    ("from", "from"),
    ("to", "to"),
    ("readings", "n"),
    ("days with data", "days"),
    ("coverage %", "coverage_pct"),
    ("mean mg/dL", "mean_mgdl"),
    ("SD mg/dL", "sd_mgdl"),
    ("CV %", "cv_pct"),
    ("GMI %", "gmi_pct"),
    ("very low <54 %", "tbr2_pct"),
    ("low 54-69 %", "tbr1_pct"),
    ("in range 70-180 %", "tir_pct"),
    ("high 181-250 %", "tar1_pct"),
    ("very high >250 %", "tar2_pct"),
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
        stream.write(render_text(payload))
    return 0


def render_text(payload: dict[str, Any]) -> str:
    """The payload as a table: one row per metric, one column per window."""
    windows: Sequence[dict[str, Any]] = payload["windows"]
    header = f"hub {payload['hub']}, device {payload['device']}"
    label_width = max(len(label) for label, _ in _ROWS)
    cells = [[_cell(w[key]) for w in windows] for _, key in _ROWS]
    width = max(len(c) for row in [[w["window"] for w in windows], *cells] for c in row)
    lines = [header, " " * label_width + "".join(f"  {w['window']:>{width}}" for w in windows)]
    for (label, _), row in zip(_ROWS, cells, strict=True):
        lines.append(f"{label:<{label_width}}" + "".join(f"  {c:>{width}}" for c in row))
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
