"""`StoreView`: the store read-only, safe beside a running daemon (`gatewayd status`, `doctor`,
`report`, `export`, the summaries' worker).

It opens the SQLite file with `mode=ro`: it never creates, migrates or writes the store, and
WAL lets it read a consistent snapshot while the daemon writes. What waits for the broker is
read as the daemon defines it (gatewayd.store.store): above the published mark, not withheld,
before the oldest reading held for the clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from gatewayd.errors import StoreError
from gatewayd.models import DeviceIdentity, Reading
from gatewayd.store.codec import decode_identity, decode_record, identity_key
from gatewayd.store.history import stored_devices, to_ms
from gatewayd.store.mark import NO_HOLD
from gatewayd.store.schema import PUBLISHED_KEY, VERSION, stored_version


def _check_version(path: Path, version: int | None) -> None:
    if version != VERSION:
        raise StoreError(
            f"cannot read store {path}: schema version {version}, this gatewayd reads "
            f"{VERSION} (the daemon migrates the store when it starts)"
        )


class StoreView:
    """The store of a hub, read-only."""

    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        self.path = path
        if not path.is_file():
            raise StoreError(f"no store at {path} (has the daemon run with this config?)")
        try:
            # One thread at a time, but not always the opening one (the summaries' worker).
            uri = f"{path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {path}: {exc}") from exc
        try:
            _check_version(path, stored_version(self._db))
            self._db.execute("SELECT 1 FROM readings LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot read store {path}: {exc}") from exc
        except StoreError:
            self._db.close()
            raise

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

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from exc

    # -- readings ------------------------------------------------------------------------------

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
                "SELECT record, serial FROM readings WHERE device = ? AND time_ms >= ? "
                "AND time_ms < ? ORDER BY time_ms, rowid",
                (device, to_ms(start) if start else -(2**62), to_ms(end) if end else 2**62),
            )
            for text, serial in cursor:
                yield decode_record(text, serial)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from exc

    def newest(self, device: str) -> Reading | None:
        """The newest stored reading of a device, by measured time."""
        rows = self._query(
            "SELECT record, serial FROM readings WHERE device = ? "
            "ORDER BY time_ms DESC, rowid DESC LIMIT 1",
            (device,),
        )
        return decode_record(*rows[0]) if rows else None

    def count_since(self, device: str, since: datetime) -> int:
        """How many readings of a device were measured at or after `since`."""
        ((count,),) = self._query(
            "SELECT count(*) FROM readings WHERE device = ? AND time_ms >= ?",
            (device, to_ms(since)),
        )
        return int(count)

    def count(self) -> int:
        """How many readings the store holds."""
        ((count,),) = self._query("SELECT count(*) FROM readings")
        return int(count)

    def devices(self) -> list[str]:
        """Ids of the devices that have readings in the store."""
        try:
            return stored_devices(self._db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from exc

    def identity(self, device: str) -> DeviceIdentity | None:
        """What the device last said about itself (`Store.remember_identity`), if anything."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (identity_key(device),))
        return decode_identity(rows[0][0]) if rows else None

    # -- what waits for the broker -------------------------------------------------------------

    def _bounds(self) -> tuple[int, int]:
        """The published mark and the oldest rowid held for the clock: what lies strictly
        between, and is not withheld, waits for the broker."""
        mark = self._query("SELECT value FROM meta WHERE key = ?", (PUBLISHED_KEY,))
        ((held,),) = self._query("SELECT min(rowid) FROM clock_hold")
        return (int(mark[0][0]) if mark else 0), (NO_HOLD if held is None else int(held))

    def waiting_by_device(self, *, stored_up_to: int | None = None) -> dict[str, int]:
        """How many readings wait for the broker, per device (with `stored_up_to`, only those
        at or below that rowid: the file's mark is up to a second behind the daemon's)."""
        mark, held = self._bounds()
        if stored_up_to is not None:
            held = min(held, stored_up_to + 1)
        rows = self._query(
            "SELECT device, count(*) FROM readings WHERE rowid > ? AND rowid < ? "
            "AND rowid NOT IN (SELECT rowid FROM withheld) GROUP BY device",
            (mark, held),
        )
        return {str(device): int(count) for device, count in rows}

    def newest_rowid(self) -> int:
        """The rowid of the newest stored reading (0 for none): readings stored later have
        higher ones."""
        ((rowid,),) = self._query("SELECT max(rowid) FROM readings")
        return int(rowid or 0)

    def oldest_waiting(self) -> Reading | None:
        """The oldest reading waiting for the broker."""
        rows = self._query(
            "SELECT record, serial FROM readings WHERE rowid > ? AND rowid < ? "
            "AND rowid NOT IN (SELECT rowid FROM withheld) ORDER BY rowid LIMIT 1",
            self._bounds(),
        )
        return decode_record(*rows[0]) if rows else None

    def message_count(self) -> int:
        """How many other messages wait for the broker (alerts, summaries, discovery)."""
        ((count,),) = self._query("SELECT count(*) FROM messages")
        return int(count)

    # -- the file ------------------------------------------------------------------------------

    def integrity(self) -> tuple[str, str]:
        """The journal mode and the first line of `PRAGMA quick_check` (`ok` when sound)."""
        ((journal,),) = self._query("PRAGMA journal_mode")
        ((check,),) = self._query("PRAGMA quick_check")
        return str(journal), str(check)
