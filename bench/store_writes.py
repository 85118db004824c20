"""Bytes written to storage per reading when readings come one at a time (a hub's real rate).

bench/live_path.py measures the live path at 100 readings/s, where readings of different
devices can share a commit. A hub with 10 sensors at one reading per 5 minutes (or per minute)
sees one every 30 s (6 s): every reading is a commit of its own, and so is the published mark
written after its PUBACK. This script does exactly what the daemon's store does for such a
reading, through the same calls (`Store.add_soon`, then `Store.mark_delivered_soon` after the
publish), `--readings` times in a row, and reports `write_bytes` from /proc/self/io per reading
(WAL, checkpoints and the database file included) for `synchronous = "full"` and `"normal"`,
beside a bare script's single committed insert (the same table as bench/live_path.py's), as the
median of `--rounds` paired ratios (min-max beside it).
docs/operations.md turns the figure into SD-card life.
Run: `.venv/bin/python bench/store_writes.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import paired, ratio_text, result_header, write_result
from gatewayd.models import Reading
from gatewayd.store import Store
from gatewayd.store import mark as mark_module

NAME = "store_writes"
MODES = ("full", "normal")
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def written() -> int:
    """Bytes this process made the kernel write to storage."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def reading(n: int, devices: int) -> Reading:
    """The n-th reading of a hub with `devices` sensors taking turns."""
    device = n % devices
    at = T0 + timedelta(seconds=30 * n)
    return Reading(
        device=f"cgm{device}",
        driver="simulator",
        serial=f"SIM{device:08d}",
        session="s1",
        seq=n // devices,
        time=at,
        received=at,
        glucose_mgdl=120.0,
        trend_mgdl_min=0.5,
        quality_pct=97.0,
    )


async def gatewayd_side(folder: Path, mode: str, count: int, devices: int) -> float:
    """The daemon's store: one reading committed, then its acknowledgement, `count` times.

    Readings 30 s apart: the published mark is written after each PUBACK (its `MARK_EVERY_S`
    has always passed by then), which the loop here does without waiting that long.
    """
    mark_module.MARK_EVERY_S = 0.0
    store = Store(folder / "gatewayd.db", synchronous=mode)
    try:
        for n in range(count // 10):  # warm: the file, its pages and the WAL exist
            await store.add_soon(reading(n, devices))
        await store.mark_delivered_soon([row.rowid for row in store.pending(count)])
        before = written()
        for n in range(count // 10, count // 10 + count):
            await store.add_soon(reading(n, devices))
            await store.mark_delivered_soon([row.rowid for row in store.pending(10)])
        return (written() - before) / count
    finally:
        store.close()


def bare_side(folder: Path, mode: str, count: int) -> float:
    """One committed insert per reading into a bare table (bench/live_path.py's bare script)."""
    db = sqlite3.connect(folder / "bare.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={mode.upper()}")
        db.execute(
            "CREATE TABLE readings (id TEXT PRIMARY KEY, device TEXT NOT NULL,"
            " seq INTEGER NOT NULL, time TEXT NOT NULL, record TEXT NOT NULL)"
        )
        record = "x" * 330  # the size of a stored reading's JSON
        before = 0
        for n in range(count // 10 + count):
            if n == count // 10:
                before = written()
            db.execute("BEGIN")
            db.execute(
                "INSERT INTO readings VALUES (?, ?, ?, ?, ?)",
                (uuid.uuid4().hex, f"dev{n % 10}", n, str(n), record),
            )
            db.execute("COMMIT")
        return (written() - before) / count
    finally:
        db.close()


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--readings", type=int, default=2000)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds per case")
    args = parser.parse_args()
    modes: dict[str, Any] = {}
    for mode in MODES:
        pairs = []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="bench-store-writes-") as tmp:
                ours = asyncio.run(gatewayd_side(Path(tmp), mode, args.readings, args.devices))
                bare = bare_side(Path(tmp), mode, args.readings)
            pairs.append((ours, bare))
        modes[mode] = {
            "gatewayd_bytes_per_reading": round(statistics.median(p[0] for p in pairs)),
            "bare_bytes_per_reading": round(statistics.median(p[1] for p in pairs)),
            "ratio": paired(pairs),
        }
    result = {
        **result_header(NAME),
        "setup": {"readings": args.readings, "devices": args.devices, "rounds": args.rounds},
        "modes": modes,
    }
    path = write_result(NAME, result)
    lines = [f"== {NAME}: {args.readings} readings one at a time, {args.devices} devices =="]
    lines += [
        f"  synchronous = {mode}: gatewayd {m['gatewayd_bytes_per_reading']:,} B/reading"
        f"   bare {m['bare_bytes_per_reading']:,}   ratio {ratio_text(m['ratio'])}"
        for mode, m in modes.items()
    ]
    lines.append(f"  json: {path}")
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
