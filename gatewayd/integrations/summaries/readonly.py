"""A read-only view of the store for the CLI (`report`, `export`), safe beside a running daemon.

It opens the SQLite file with `mode=ro`: it never creates, migrates or writes the store, and
WAL lets it read a consistent snapshot while the daemon writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from gatewayd.errors import StoreError
from gatewayd.models import DeviceIdentity, Reading
from gatewayd.records import decode_identity, decode_record, identity_key


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


class ReadOnlyStore:
    """The readings of a store, read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise StoreError(f"no store at {path} (has the daemon run with this config?)")
        try:
            # One thread at a time, but not always the opening one (the service's worker).
            uri = f"{path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("SELECT 1 FROM readings LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {path}: {exc}") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def readings(
        self, device: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[Reading]:
        """Stored readings of a device in [start, end), by measured time."""
        return list(self.iter_readings(device, start, end))

    def iter_readings(
        self, device: str, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[Reading]:
        """`readings`, one at a time from the cursor (an export of months stays small)."""
        try:
            cursor = self._db.execute(
                "SELECT record FROM readings WHERE device = ? AND time_ms >= ? AND time_ms < ? "
                "ORDER BY time_ms, rowid",
                (device, _ms(start) if start else -(2**62), _ms(end) if end else 2**62),
            )
            for (text,) in cursor:
                yield decode_record(text)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from exc

    def identity(self, device: str) -> DeviceIdentity | None:
        """What the device last said about itself (`Store.remember_identity`), if anything."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (identity_key(device),))
        return decode_identity(rows[0][0]) if rows else None

    def devices(self) -> list[str]:
        """Ids of the devices that have readings in the store."""
        return [d for (d,) in self._query("SELECT DISTINCT device FROM readings ORDER BY 1", ())]

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[str, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from exc
