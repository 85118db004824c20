"""The store's history reads: a device's newest reading, readings by time or after a cursor,
counts. `Store` has them (gatewayd.store.store), on its event-loop connection; every one is an
index seek or range (`readings_device_time`, rowid order), never a scan of every reading.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gatewayd.driver import ResumePoint
from gatewayd.errors import StoreError
from gatewayd.models import Reading
from gatewayd.store.codec import decode_record
from gatewayd.store.mark import NO_HOLD

_LATEST = (
    "SELECT record, serial FROM readings WHERE device = ? ORDER BY time_ms DESC, rowid DESC LIMIT 1"
)
_LATEST_PUBLISHABLE = (
    "SELECT record, serial FROM readings WHERE device = ? "
    "AND rowid NOT IN (SELECT rowid FROM clock_hold) ORDER BY time_ms DESC, rowid DESC LIMIT 1"
)
#: The next device id after `?` (an index seek: `SELECT DISTINCT device` would read the index).
_NEXT_DEVICE = "SELECT device FROM readings WHERE device > ? ORDER BY device LIMIT 1"


def to_ms(dt: datetime) -> int:
    """A time as the store keeps it: whole milliseconds since the Unix epoch."""
    return int(dt.timestamp() * 1000)


def stored_devices(db: sqlite3.Connection) -> list[str]:
    """The devices that have readings, in order (one seek of `readings_device_time` each)."""
    devices: list[str] = []
    row = db.execute("SELECT min(device) FROM readings").fetchone()
    while row is not None and row[0] is not None:
        devices.append(str(row[0]))
        row = db.execute(_NEXT_DEVICE, (row[0],)).fetchone()
    return devices


class History:
    """The history reads of a store whose connection is `_db` (the store at `path`)."""

    path: Path
    _db: sqlite3.Connection

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    def _held_from(self) -> int:
        """The rowid of the oldest reading held for the clock: the outbox is published up to
        it, so publishing stays in order (`NO_HOLD` when none is held)."""
        (rowid,) = self._db.execute("SELECT min(rowid) FROM clock_hold").fetchone()
        return NO_HOLD if rowid is None else int(rowid)

    def latest(self, device: str, *, publishable: bool = False) -> Reading | None:
        """The newest stored reading of a device, by measured time (with `publishable`, not
        one held for the clock, whose time is not yet trustworthy)."""
        row = self._db.execute(
            _LATEST_PUBLISHABLE if publishable else _LATEST,
            (device,),
        ).fetchone()
        return decode_record(*row) if row else None

    def resume_point(self, device: str) -> ResumePoint | None:
        """Where a driver should backfill from: the newest stored reading of the device."""
        reading = self.latest(device)
        if reading is None:
            return None
        return ResumePoint(reading.serial, reading.session, reading.seq, reading.time)

    def readings(
        self, device: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[Reading]:
        """Stored readings of a device in [start, end), by measured time."""
        rows = self._db.execute(
            "SELECT record, serial FROM readings WHERE device = ? AND time_ms >= ? "
            "AND time_ms < ? ORDER BY time_ms, rowid",
            (device, to_ms(start) if start else -(2**62), to_ms(end) if end else 2**62),
        ).fetchall()
        return [decode_record(text, serial) for text, serial in rows]

    def readings_after(
        self, rowid: int, devices: Sequence[str], since: int, limit: int
    ) -> list[tuple[int, Reading]]:
        """Publishable readings of `devices` after `rowid` in rowid order, measured at or after
        `since` (ms since the epoch), up to the oldest held one (an uploader's cursor, such as
        gatewayd.integrations.nightscout's)."""
        marks = ",".join("?" * len(devices))
        # Only "?" placeholders are formatted in.
        sql = (
            "SELECT rowid, record, serial FROM readings WHERE rowid > ? AND rowid < ? "  # noqa: S608
            f"AND time_ms >= ? AND device IN ({marks}) ORDER BY rowid LIMIT ?"
        )
        rows = self._read(sql, (rowid, self._held_from(), since, *devices, limit))
        return [(int(r), decode_record(text, serial)) for r, text, serial in rows]

    def count_after(self, rowid: int, devices: Sequence[str], since: int) -> int:
        """How many readings `readings_after` has to give (without a limit)."""
        marks = ",".join("?" * len(devices))
        # Only "?" placeholders are formatted in.
        sql = (
            "SELECT count(*) FROM readings WHERE rowid > ? AND rowid < ? "  # noqa: S608
            f"AND time_ms >= ? AND device IN ({marks})"
        )
        ((count,),) = self._read(sql, (rowid, self._held_from(), since, *devices))
        return int(count)

    def count(self) -> int:
        """How many readings the store holds."""
        (count,) = self._db.execute("SELECT count(*) FROM readings").fetchone()
        return int(count)

    def devices(self) -> list[str]:
        """The devices that have readings in the store (one index seek per device)."""
        return stored_devices(self._db)

    def newest_time_ms(self) -> int | None:
        """The newest measured time (ms) of a reading not held for the clock, over all devices."""
        times = [
            row[0][0]
            for device in self.devices()
            if (
                row := self._read(
                    "SELECT time_ms FROM readings WHERE device = ? "
                    "AND rowid NOT IN (SELECT rowid FROM clock_hold) ORDER BY time_ms DESC LIMIT 1",
                    (device,),
                )
            )
        ]
        return max(times) if times else None
