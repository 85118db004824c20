"""Readings as CSV: one row per reading, the columns of the stored record, and back again.

Columns are the `reading` payload's fields in its order (without `schema` and `hub`); the sensor
`serial` only when asked. Empty cell = null, `true`/`false`, `status` flags joined by `;`,
numbers as Python writes them (so a float reads back to the same float).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, TextIO

from gatewayd.models import Direction, OutOfRange, Reading
from gatewayd.store.codec import to_record

COLUMNS = (
    "id",
    "device",
    "driver",
    "session",
    "seq",
    "time",
    "received",
    "glucose_mgdl",
    "glucose_mmoll",
    "out_of_range",
    "trend_mgdl_min",
    "direction",
    "quality_pct",
    "status",
    "backfilled",
)

_OUT_OF_RANGE: dict[str, OutOfRange | None] = {"": None, "low": "low", "high": "high"}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(value)
    return str(value)


def write_csv(readings: Iterable[Reading], out: TextIO, *, include_serial: bool = False) -> int:
    """Write the readings; returns how many rows."""
    columns = (*COLUMNS, "serial") if include_serial else COLUMNS
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    rows = 0
    for reading in readings:
        record = to_record(reading)
        writer.writerow([_cell(record[c]) for c in columns])
        rows += 1
    return rows


def _number(text: str) -> float | None:
    return None if text == "" else float(text)


def read_csv(lines: Iterable[str]) -> Iterator[Reading]:
    """The readings of a CSV written by `write_csv` (the serial is "" when it was left out)."""
    for row in csv.DictReader(lines):
        yield Reading(
            id=row["id"],
            device=row["device"],
            driver=row["driver"],
            serial=row.get("serial", ""),
            session=row["session"],
            seq=int(row["seq"]),
            time=datetime.fromisoformat(row["time"]),
            received=datetime.fromisoformat(row["received"]),
            glucose_mgdl=_number(row["glucose_mgdl"]),
            out_of_range=_OUT_OF_RANGE[row["out_of_range"]],
            trend_mgdl_min=_number(row["trend_mgdl_min"]),
            direction=Direction(row["direction"]),
            quality_pct=_number(row["quality_pct"]),
            status=tuple(row["status"].split(";")) if row["status"] else (),
            backfilled=row["backfilled"] == "true",
        )
