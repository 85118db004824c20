"""`gatewayd export`: a device's readings for a clinician — FHIR bundle, CSV or AGP report.

The period is [--from, --to): dates or date-times in --tz (default the hub's local zone); a bare
--to date includes that day; default the 14 days up to now. FHIR and CSV go to stdout unless
--output is given; PDF and PNG need --output.
"""

from __future__ import annotations

import io
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gatewayd.summaries import options as summary_options
from gatewayd.summaries.inputs import OptionError, open_device, parse_time, zone
from gatewayd.summaries.metrics import DEFAULT_INTERVAL, estimate_interval, summarize

FORMATS = ("fhir", "csv", "pdf", "png")
DEFAULT_DAYS = 14


def run_export(
    config_path: Path,
    device: str,
    *,
    fmt: str,
    start: str | None = None,
    end: str | None = None,
    output: Path | None = None,
    tz: str | None = None,
    paper: str = "a4",
    include_serial: bool = False,
) -> int:
    """Write the export; returns the exit status."""
    if fmt not in FORMATS:
        raise OptionError("--format", f"must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if fmt in {"pdf", "png"} and output is None:
        raise OptionError("--output", f"is required for --format {fmt}")
    local = zone(tz)
    until = parse_time(end, "--to", local, end=True) if end else datetime.now(UTC)
    since = parse_time(start, "--from", local) if start else until - timedelta(days=DEFAULT_DAYS)
    if since >= until:
        raise OptionError("--from", f"must be before --to ({since.isoformat()} >= {until})")
    cfg, store = open_device(config_path, device)
    with store:
        readings = store.readings(device, since, until)
    interval = summary_options.read(cfg).interval
    interval = interval or estimate_interval([r.time for r in readings]) or DEFAULT_INTERVAL
    summary = summarize(readings, since, until, interval=interval, window="export")
    driver = next((d.driver for d in cfg.devices if d.id == device), None)
    driver = driver or (readings[0].driver if readings else "unknown")

    if fmt == "csv":
        from gatewayd.export.table import write_csv

        text = io.StringIO()
        write_csv(readings, text, include_serial=include_serial)
        body = text.getvalue().encode()
    elif fmt == "fhir":
        from gatewayd.export.fhir import bundle

        document = bundle(
            readings,
            summary,
            hub=cfg.hub.id,
            device=device,
            driver=driver,
            tz=local,
            now=datetime.now(UTC),
        )
        body = (json.dumps(document, indent=2) + "\n").encode()
    else:
        try:
            from gatewayd.export import agp
        except ImportError as exc:
            reason = f"needs matplotlib ({exc}): pip install 'gatewayd[reports]'"
            raise OptionError("--format", reason) from None
        picture = io.BytesIO()
        title = f"{device} on hub {cfg.hub.id}"
        agp.render(readings, summary, picture, title=title, tz=local, fmt=fmt, paper=paper)
        body = picture.getvalue()

    if output is None:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    else:
        _write_private(output, body)
        print(f"gatewayd: wrote {len(readings)} readings of {device} to {output}", file=sys.stderr)
    return 0


def _write_private(path: Path, body: bytes) -> None:
    """Write health data readable by its owner only (like the store)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(body)
    except OSError as exc:
        raise OptionError("--output", f"cannot write {path}: {exc.strerror}") from None
