"""`gatewayd export`: a device's readings for a clinician — FHIR bundle, CSV or AGP report.

The period is [--from, --to): dates or date-times in --tz (default the hub's local zone); a bare
--to date includes that day; default the 14 days up to now. FHIR and CSV go to stdout unless
--output is given; PDF and PNG need --output.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import stat
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TextIO

from gatewayd.integrations.summaries import options as summary_options
from gatewayd.integrations.summaries.inputs import OptionError, open_device, parse_time, zone
from gatewayd.integrations.summaries.metrics import summarize
from gatewayd.models import UNITS
from gatewayd.ops.config import Config
from gatewayd.store.view import StoreView

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
    unit: str | None = None,
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
        interval = summary_options.read(cfg).interval
        if fmt in {"csv", "fhir"}:
            # Streamed from the store's cursor to the output: memory stays flat over months.
            with _output(output) as out:
                if fmt == "csv":
                    from gatewayd.integrations.export.table import write_csv

                    rows = store.iter_readings(device, since, until)
                    count = write_csv(rows, out, include_serial=include_serial)
                else:
                    count = _write_fhir(
                        out, store, cfg, device, since=since, until=until, tz=local,
                        interval=interval, include_serial=include_serial,
                    )  # fmt: skip
        else:
            readings = store.readings(device, since, until)
            summary = summarize(readings, since, until, interval=interval, window="export")
            count = len(readings)
            try:
                from gatewayd.integrations.export import agp
            except ImportError as exc:
                reason = f"needs matplotlib ({exc}): pip install 'gatewayd[reports]'"
                raise OptionError("--format", reason) from None
            picture = io.BytesIO()
            title = f"{device} on hub {cfg.hub.id}"
            agp.render(
                readings, summary, picture, title=title, tz=local, fmt=fmt, paper=paper,
                unit=unit or cfg.hub.unit,
            )  # fmt: skip
            with _output(output, binary=True) as file:
                file.write(picture.getvalue())
    if output is not None:
        print(f"gatewayd: wrote {count} readings of {device} to {output}", file=sys.stderr)
    return 0


def _write_fhir(
    out: TextIO,
    store: StoreView,
    cfg: Config,
    device: str,
    *,
    since: datetime,
    until: datetime,
    tz: tzinfo,
    interval: timedelta | None,
    include_serial: bool,
) -> int:
    """The FHIR bundle: one pass over the readings for the summary, one to write them."""
    from gatewayd.integrations.export.fhir import bundle_entries, write_bundle

    readings = store.iter_readings(device, since, until)
    summary = summarize(readings, since, until, interval=interval, window="export")
    driver = next((d.driver for d in cfg.devices if d.id == device), None)
    if driver is None:
        first = next(store.iter_readings(device, since, until), None)
        driver = first.driver if first is not None else "unknown"
    entries = bundle_entries(
        store.iter_readings(device, since, until),
        summary,
        hub=cfg.hub.id,
        device=device,
        driver=driver,
        tz=tz,
        identity=store.identity(device),
        include_serial=include_serial,
    )
    write_bundle(out, entries, summary, hub=cfg.hub.id, device=device, now=_now())
    return summary.n


@contextlib.contextmanager
def _output(path: Path | None, *, binary: bool = False) -> Iterator[Any]:
    """stdout, or a new file readable by its owner only (health data, like the store)."""
    if path is None:
        sys.stdout.flush()
        if binary:
            yield sys.stdout.buffer
        else:
            text = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
            yield text
            text.detach()  # flushes; stdout itself stays open
        sys.stdout.buffer.flush()
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        file = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise OptionError("--output", f"cannot write {path}: {exc.strerror}") from None
    regular = stat.S_ISREG(os.fstat(fd).st_mode)
    try:
        with file:
            yield file
    except BaseException:
        if regular:  # no half-written export left behind (but never unlink a device or a pipe)
            path.unlink(missing_ok=True)
        raise


def _now() -> datetime:
    return datetime.now(UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`gatewayd export`'s options."""
    parser.add_argument("--config", "-c", type=Path, required=True, help="the TOML config file")
    parser.add_argument("--device", "-d", required=True, help="the device id")
    parser.add_argument("--format", choices=("fhir", "csv", "pdf", "png"), required=True)
    parser.add_argument("--from", dest="start", help="date or date-time (default --to - 14 days)")
    parser.add_argument("--to", dest="end", help="date (inclusive) or date-time (default now)")
    parser.add_argument("--output", "-o", type=Path, help="file (default stdout; pdf/png need it)")
    parser.add_argument("--tz", help="IANA time zone for dates and the AGP (default local)")
    parser.add_argument("--paper", choices=("a4", "letter"), default="a4", help="PDF page size")
    parser.add_argument("--include-serial", action="store_true", help="CSV: the sensor serial")
    parser.add_argument("--unit", choices=UNITS, help="AGP: glucose unit (default [hub] unit)")


def main(args: argparse.Namespace) -> int:
    """Run `gatewayd export` with the parsed options."""
    return run_export(
        args.config,
        args.device,
        fmt=args.format,
        start=args.start,
        end=args.end,
        output=args.output,
        tz=args.tz,
        paper=args.paper,
        include_serial=args.include_serial,
        unit=args.unit,
    )
