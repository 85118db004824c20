"""The store's schema: the DDL of the current version and the ordered migrations to it.

`meta` holds `schema_version`. `migrate(db, path)` brings an older store to `VERSION` in one
transaction (a crash halfway leaves the old version intact) and refuses a store newer than the
code with `StoreVersionError` (one line naming the file and both versions: the daemon exits 2).

Version 2 (the live path's bytes on an SD card, issue 11):

- `readings` has no AUTOINCREMENT (no `sqlite_sequence` page per commit) and no `readings_time`
  index (every query by time goes through `readings_device_time` or rowid order). Rowids still
  only grow: a new row's rowid is above `max(rowid)` and above `meta.rowid_floor`, which a
  deletion of the newest rows raises (`Store.prune`), and above the published mark.
- `readings.serial` is its own column and the stored `record` is the JSON without it, so the
  published payload is assembled without relying on key order (`codec.reading_payload_json`).
- The `outbox` table (one insert and one delete per reading) is replaced by a high-water mark,
  `meta.published_through`: every reading at or below it was acknowledged by the broker (or is
  never to be published); above it, a reading waits unless its rowid is in `withheld` (readings
  never to be published: held in an earlier boot with implausible times, gatewayd.timesync) or
  at or after the oldest row of `clock_hold`.

Version 3: `meta` is a WITHOUT ROWID table (a write of the mark touches one page, not two).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from gatewayd.errors import StoreError, StoreVersionError

#: The schema this code reads and writes.
VERSION = 3

#: The current schema, for a new store. `clock_hold`: readings received while the hub's clock was
#: not trustworthy (gatewayd.timesync), held back from the broker until their times are
#: corrected; the monotonic clock of that boot dates them. `withheld`: readings never to be
#: published (their times could not be corrected). Idempotent: `migrate` runs it last.
DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS readings (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    device TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    serial TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_device_time ON readings (device, time_ms);
CREATE TABLE IF NOT EXISTS withheld (rowid INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS messages (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS clock_hold (
    rowid INTEGER PRIMARY KEY,
    boot_id TEXT NOT NULL,
    received_mono REAL NOT NULL
);
"""

#: `meta` keys of the store itself.
VERSION_KEY = "schema_version"
PUBLISHED_KEY = "published_through"
ROWID_FLOOR_KEY = "rowid_floor"


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Serial in its own column, no AUTOINCREMENT, no `readings_time`, outbox → mark."""
    (outbox_min,) = db.execute("SELECT min(rowid) FROM outbox").fetchone()
    (newest,) = db.execute("SELECT max(rowid) FROM readings").fetchone()
    seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
    floor = max(int(seq[0]) if seq else 0, int(newest or 0))
    # Every reading below the oldest waiting one was delivered (or withheld); above it, the
    # rows not in the outbox nor held were delivered out of order or are never to be published:
    # `withheld` keeps them from being published (again).
    mark = floor if outbox_min is None else int(outbox_min) - 1
    db.execute(
        "CREATE TABLE readings_v2 (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
        "device TEXT NOT NULL, time_ms INTEGER NOT NULL, serial TEXT NOT NULL, "
        "record TEXT NOT NULL)"
    )
    rows = db.execute("SELECT rowid, id, device, time_ms, record FROM readings ORDER BY rowid")
    db.executemany(
        "INSERT INTO readings_v2 (rowid, id, device, time_ms, serial, record) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (_split_serial(*row) for row in rows),
    )
    db.execute("CREATE TABLE withheld (rowid INTEGER PRIMARY KEY)")
    db.execute(
        "INSERT INTO withheld (rowid) SELECT rowid FROM readings WHERE rowid > ? "
        "AND rowid NOT IN (SELECT rowid FROM outbox) "
        "AND rowid NOT IN (SELECT rowid FROM clock_hold)",
        (mark,),
    )
    db.execute("DROP TABLE readings")
    db.execute("DROP TABLE outbox")
    db.execute("ALTER TABLE readings_v2 RENAME TO readings")
    db.execute("CREATE INDEX readings_device_time ON readings (device, time_ms)")
    db.execute("DELETE FROM sqlite_sequence WHERE name = 'readings'")
    set_meta(db, PUBLISHED_KEY, str(mark))
    set_meta(db, ROWID_FLOOR_KEY, str(floor))


def _split_serial(
    rowid: int, id_: str, device: str, time_ms: int, record: str
) -> tuple[int, str, str, int, str, str]:
    """A v1 row (serial inside the record) as a v2 row (serial in its own column)."""
    fields = json.loads(record)  # keeps the key order; json.dumps gives back the same text
    serial = fields.pop("serial")
    return rowid, id_, device, time_ms, serial, json.dumps(fields, separators=(",", ":"))


def _v2_to_v3(db: sqlite3.Connection) -> None:
    """`meta` without a rowid: one b-tree, its key's, so a write of the published mark touches
    one page of the file instead of two (the table and its key's index)."""
    db.execute("CREATE TABLE meta_v3 (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
    db.execute("INSERT INTO meta_v3 (key, value) SELECT key, value FROM meta")
    db.execute("DROP TABLE meta")
    db.execute("ALTER TABLE meta_v3 RENAME TO meta")


#: Migration to version N+1 at index N-1 (from 1); each runs inside `migrate`'s transaction.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1_to_v2, _v2_to_v3)


def set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    """Set one `meta` value (inside the caller's transaction)."""
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def stored_version(db: sqlite3.Connection) -> int | None:
    """The store's schema version (None for a new, empty file)."""
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:
        return None
    row = db.execute("SELECT value FROM meta WHERE key = ?", (VERSION_KEY,)).fetchone()
    return None if row is None else int(row[0])


def _check_version(path: Path, found: int | None) -> None:
    if found is not None and found > VERSION:
        raise StoreVersionError(path, found, VERSION)


def migrate(db: sqlite3.Connection, path: Path) -> int | None:
    """Create or upgrade the schema to `VERSION` in one transaction; the version found (None
    for a new store). Raises `StoreVersionError` for a store newer than the code. A store at
    `VERSION` is not written to (it may be on a full disk)."""
    found = stored_version(db)
    _check_version(path, found)
    if found == VERSION:
        return found
    db.execute("BEGIN IMMEDIATE")
    try:
        found = stored_version(db)  # another process may have migrated it meanwhile
        _check_version(path, found)
        if found == VERSION:
            db.execute("COMMIT")
            return found
        for step in MIGRATIONS[(found or VERSION) - 1 :]:
            try:
                step(db)
            except (ValueError, KeyError, TypeError) as exc:  # a row the migration cannot read
                raise StoreError(
                    f"store {path}: cannot migrate schema version {found} to {VERSION}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        for statement in DDL.split(";"):
            if statement.strip():
                db.execute(statement)
        set_meta(db, VERSION_KEY, str(VERSION))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return found
