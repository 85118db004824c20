"""The local store: every reading lands here, durably, before anything else happens to it.

SQLite in WAL mode. `readings` holds the history (pruned after the retention period); `outbox`
holds the rowids not yet acknowledged by the broker, in insertion order. Inserting is
idempotent on the reading's deterministic id, so a backfill that overlaps what was already
received, or a replay after a crash, adds nothing twice.

Reads are synchronous and short; the daemon makes them on the event loop, which SQLite in WAL
mode serves in tens of microseconds without waiting for any writer. The live path's writes
(`add_soon`, `mark_delivered_soon`, `delete_message_soon`) go to the writer thread
(gatewayd.storewriter), which commits them in groups on its own connection: the event loop never
waits for a commit or its fsync. The synchronous writes (`add`, `transaction`, …) serve the
services, the full-disk recovery and the commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from gatewayd.driver import ResumePoint
from gatewayd.errors import StoreError, StorePathError
from gatewayd.models import DeviceIdentity, Reading
from gatewayd.records import (
    decode_identity,
    decode_record,
    encode_identity,
    encode_record,
    identity_key,
)
from gatewayd.storefile import identity, is_corrupt, move_aside, quick_check, restore
from gatewayd.storewriter import Writer

_SCHEMA_VERSION = 1
_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS readings (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    device TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_device_time ON readings (device, time_ms);
CREATE INDEX IF NOT EXISTS readings_time ON readings (time_ms);
CREATE TABLE IF NOT EXISTS outbox (rowid INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS messages (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL
);
-- Readings received while the hub's clock was not trustworthy (gatewayd.timesync): held back
-- from the broker until their times are corrected; the monotonic clock of that boot dates them.
CREATE TABLE IF NOT EXISTS clock_hold (
    rowid INTEGER PRIMARY KEY,
    boot_id TEXT NOT NULL,
    received_mono REAL NOT NULL
);
"""

_LATEST_ROW = (
    "SELECT rowid, device, record, time_ms FROM readings WHERE device = ? "
    "AND rowid NOT IN (SELECT rowid FROM clock_hold) ORDER BY time_ms DESC, rowid DESC LIMIT 1"
)
_LATEST = "SELECT record FROM readings WHERE device = ? ORDER BY time_ms DESC, rowid DESC LIMIT 1"
_LATEST_PUBLISHABLE = (
    "SELECT record FROM readings WHERE device = ? AND rowid NOT IN (SELECT rowid FROM clock_hold) "
    "ORDER BY time_ms DESC, rowid DESC LIMIT 1"
)
#: `_held_from()` when no reading is held for the clock.
_NO_HOLD = 2**63 - 1
#: Pages in the WAL before a commit checkpoints it into the database (SQLite's default, 1000
#: pages = 4 MiB, never fired on a 4 MiB volume: the WAL itself filled the disk, and then no
#: checkpoint could grow the database to empty it, so freed space went straight back to the WAL).
#: 200 pages (800 KiB, about 25 readings at one commit each) stays below the full-disk reserve
#: (1 MiB, gatewayd.recovery): releasing it always lets a checkpoint complete. The price, measured
#: on disk with `synchronous=full`: 34 instead of 32 KiB written per reading.
WAL_CHECKPOINT_PAGES = 200
#: Bytes the WAL file is cut back to after a checkpoint resets it (SQLite keeps it at its largest
#: otherwise): what a past burst made it need is given back to the disk.
WAL_SIZE_LIMIT = 1 << 20


class StoreFull(StoreError):  # noqa: N818 - reads as the condition it reports
    """The disk (or the filesystem's quota) is full: SQLITE_FULL; see gatewayd.recovery."""


class Hold(NamedTuple):
    """Where a reading received on an untrusted clock stands on the hub's monotonic clock."""

    boot_id: str
    received_mono: float


def _error(path: Path, exc: BaseException) -> StoreError:
    """The project's error for a SQLite error (`StoreFull` for SQLITE_FULL)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    kind = StoreFull if code == sqlite3.SQLITE_FULL else StoreError
    return kind(f"store {path}: {exc}")


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A non-reading message waiting for the broker (alert, summary, discovery config)."""

    rowid: int
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True, slots=True)
class PendingRow:
    """One outbox entry: the store's rowid, its device, the stored record (JSON) and its
    measured time (ms since the epoch)."""

    rowid: int
    device: str
    record: str
    time_ms: int


def _insert(db: sqlite3.Connection, reading: Reading, hold: Hold | None) -> bool:
    """Insert a reading and queue it in the outbox (and `clock_hold`); False if already there."""
    cur = db.execute(
        "INSERT OR IGNORE INTO readings (id, device, time_ms, record) VALUES (?, ?, ?, ?)",
        (reading.id, reading.device, _ms(reading.time), encode_record(reading)),
    )
    if cur.rowcount != 1:
        return False
    db.execute("INSERT INTO outbox (rowid) VALUES (?)", (cur.lastrowid,))
    if hold is not None:
        db.execute(
            "INSERT INTO clock_hold (rowid, boot_id, received_mono) VALUES (?, ?, ?)",
            (cur.lastrowid, hold.boot_id, hold.received_mono),
        )
    return True


def _delete_outbox(db: sqlite3.Connection, rowids: Iterable[int]) -> None:
    db.executemany("DELETE FROM outbox WHERE rowid = ?", ((r,) for r in rowids))


def _delete_message(db: sqlite3.Connection, rowid: int) -> None:
    db.execute("DELETE FROM messages WHERE rowid = ?", (rowid,))


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _check_path(path: Path) -> None:
    """Create the store's folder (0700); `StorePathError` when the path cannot hold a file."""
    if path.is_dir():
        raise StorePathError(path, "is a directory, not a file")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorePathError(
            path, f"cannot create the folder {path.parent}: {exc.strerror or exc}"
        ) from None
    if not path.exists():
        try:  # Health data: the store is readable by the daemon's user only.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StorePathError(path, f"cannot create the file: {exc.strerror or exc}") from None


class Store:
    """The SQLite store of one hub."""

    def __init__(
        self,
        path: Path,
        *,
        retention_days: float = 90.0,
        synchronous: str = "full",
        recover_corrupt: bool = False,
    ) -> None:
        """Open (or create) the store. With `recover_corrupt` (the daemon does), the file is
        checked with `PRAGMA quick_check` and a corrupt one is moved aside for a fresh store
        (gatewayd.storefile); other commands never move the daemon's file."""
        self.path = path
        self.retention = timedelta(days=retention_days)
        self._synchronous = synchronous.upper()
        _check_path(path)
        try:
            self._db = self._connect(check=recover_corrupt)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        #: (st_dev, st_ino) of the files opened: `ensure_file` notices them deleted or replaced.
        self._identity = self._identities()
        self._restore_failing = False
        #: Commits the live path's writes off the event loop, on its own connection.
        self.writer = Writer(
            self._open_writer, lambda exc: _error(self.path, exc), self._synchronous
        )
        #: Outbox rows acknowledged and handed to the writer, not yet known to be deleted.
        self._leaving: set[int] = set()

    def _open(self) -> sqlite3.Connection:
        """A connection with the store's settings (used from one thread at a time)."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._configure(db)
        except BaseException:
            db.close()
            raise
        return db

    def _configure(self, db: sqlite3.Connection) -> None:
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        db.execute("PRAGMA busy_timeout=5000")

    def _open_writer(self) -> sqlite3.Connection:
        """The writer thread's connection (the file exists and is in WAL mode by then); not
        while the files at `path` are not the ones open (`ensure_file` has yet to write them
        back): a connection there would write into another file."""
        if self._identities()[0] != self._identity[0]:
            raise StoreError(f"store {self.path}: the file was deleted or replaced")
        return self._open()

    def _connect(self, *, check: bool) -> sqlite3.Connection:
        if not self.path.exists():  # a corrupt store was just moved aside
            _check_path(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            if check:
                quick_check(db)
            self._configure(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_DDL)
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(_SCHEMA_VERSION),)
            )
        except BaseException as exc:
            if check and is_corrupt(exc):
                move_aside(self.path, exc)  # before closing, which would delete the -wal
                db.close()
                return self._connect(check=False)
            db.close()
            raise
        return db

    def _identities(self) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """(st_dev, st_ino) of the database file and of its WAL (which the open connection
        keeps: deleted alone, it would take the commits not yet checkpointed with it)."""
        return identity(self.path), identity(Path(f"{self.path}-wal"))

    def ensure_file(self) -> bool:
        """Check (two stats) that the files at `path` are still the ones open; when they were
        deleted or replaced under the running daemon, write the open database back to `path`
        (moving a replacement aside), reopen it and log `store_file_replaced` at error level.
        True when it did; on failure (e.g. a full disk) it logs once and keeps writing to the
        open file.
        """
        database, wal = self._identities()
        if database == self._identity[0] and (wal == self._identity[1] or not self._identity[1]):
            return False
        if database is None:
            found = "deleted"
        elif database != self._identity[0]:
            found = "replaced"
        else:
            found = "wal deleted" if wal is None else "wal replaced"
        log = structlog.get_logger().bind(component="store")
        with self.writer.paused():  # its connection closed: the loop's is the last one open
            try:
                moved = restore(self._db, self.path, foreign=found == "replaced")
            except (sqlite3.Error, OSError) as exc:
                if not self._restore_failing:
                    self._restore_failing = True
                    log.error(  # noqa: TRY400 - expected (a full disk): no traceback needed
                        "store_file_replaced",
                        path=str(self.path),
                        found=found,
                        error=str(exc),
                        action="cannot write the store back yet; still writing to the open "
                        "file, trying again with every reading",
                    )
                return False
            self._db = self._connect(check=False)
            self._identity = self._identities()
        self._restore_failing = False
        log.error(
            "store_file_replaced",
            path=str(self.path),
            found=found,
            moved_to=str(moved) if moved else None,
            action="the open store was written back to its path: history, outbox and resume "
            "points kept",
        )
        return True

    def settle(self) -> None:
        """Commit what waits for the writer thread (the acknowledgements it holds back too) and
        stop the thread; the next write starts it again."""
        self.writer.close()

    def close(self) -> None:
        """Commit what the writer thread holds, checkpoint and close (a checkpoint a full disk
        refuses is left to the next open)."""
        try:
            self.settle()
            with contextlib.suppress(sqlite3.OperationalError):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT, rolled back on error).

        Services keep their own tables in the store this way (created with `ensure_schema`), so
        their state commits atomically with the messages they queue.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._rollback()
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            # A COMMIT refused with SQLITE_FULL can leave the transaction open, and every
            # later BEGIN would fail: roll it back. SQLITE_FULL raises `StoreFull`.
            self._rollback()
            raise _error(self.path, exc) from exc

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # ProgrammingError too: a closed store
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    def add(self, reading: Reading, *, hold: Hold | None = None) -> bool:
        """Store a reading and queue it for publishing; False if its id was already stored.

        With `hold` (the hub's clock is not trustworthy yet) the row also enters `clock_hold`:
        the publisher does not see it, nor anything after it, until gatewayd.timesync corrects
        its time and releases it.
        """
        with self.transaction() as db:
            return _insert(db, reading, hold)

    def add_soon(self, reading: Reading, *, hold: Hold | None = None) -> asyncio.Future[bool]:
        """`add` committed by the writer thread, in a group with whatever else waits: the
        future's result once the reading is on disk (`StoreFull` / `StoreError` on failure)."""
        return self.writer.submit(partial(_insert, reading=reading, hold=hold))

    def mark_delivered_soon(self, rowids: list[int], *, lazy: bool = True) -> asyncio.Future[None]:
        """`mark_delivered` by the writer thread: `lazy`, riding along with the next commit of
        readings (or alone within 50 ms, without an fsync: see `mark_delivered`)."""
        self._leaving.update(rowids)
        future = self.writer.submit(partial(_delete_outbox, rowids=rowids), lazy=lazy)
        future.add_done_callback(lambda _future: self._leaving.difference_update(rowids))
        return future

    def delete_message_soon(self, rowid: int) -> asyncio.Future[None]:
        """`delete_message` by the writer thread (lazily, as `mark_delivered_soon`)."""
        return self.writer.submit(partial(_delete_message, rowid=rowid), lazy=True)

    def remember_identity(self, device: str, identity: DeviceIdentity) -> bool:
        """Keep what a device said about itself (model, firmware; for exports and Home
        Assistant); True when it differs from what was kept."""
        value = encode_identity(identity)
        key = identity_key(device)
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] == value:
                return False
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return True

    def identity(self, device: str) -> DeviceIdentity | None:
        """What `remember_identity` kept for the device, if anything."""
        rows = self.query("SELECT value FROM meta WHERE key = ?", (identity_key(device),))
        return decode_identity(rows[0][0]) if rows else None

    def ensure_schema(self, ddl: str) -> None:
        """Create a service's tables (idempotent DDL: CREATE … IF NOT EXISTS)."""
        try:
            self._db.executescript(ddl)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query (for services reading their own tables)."""
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    def add_message(
        self, topic: str, payload: bytes, *, retain: bool, db: sqlite3.Connection | None = None
    ) -> None:
        """Queue a message for the broker (inside the caller's transaction when `db` is given)."""
        if db is not None:
            db.execute(
                "INSERT INTO messages (topic, payload, retain) VALUES (?, ?, ?)",
                (topic, payload, int(retain)),
            )
            return
        with self.transaction() as own:
            self.add_message(topic, payload, retain=retain, db=own)

    def replace_retained(
        self, topic: str, payload: bytes, *, db: sqlite3.Connection | None = None
    ) -> bool:
        """Queue a retained message, dropping any older one for the same topic not yet sent;
        False (nothing written) when the same payload already waits for that topic.

        Only the newest retained value matters to subscribers; a publish of the superseded row
        already in flight deletes its row after the PUBACK, which is harmless once it is gone.
        Skipping an identical one keeps repeated announcements from wearing the SD card.
        """
        if db is None:
            with self.transaction() as own:
                return self.replace_retained(topic, payload, db=own)
        waiting = db.execute(
            "SELECT payload FROM messages WHERE topic = ? AND retain = 1 ORDER BY rowid DESC",
            (topic,),
        ).fetchall()
        if len(waiting) == 1 and bytes(waiting[0][0]) == payload:
            return False
        if waiting:
            db.execute("DELETE FROM messages WHERE topic = ? AND retain = 1", (topic,))
        self.add_message(topic, payload, retain=True, db=db)
        return True

    def pending_messages(self, limit: int) -> list[PendingMessage]:
        """Queued messages, oldest first."""
        rows = self._db.execute(
            "SELECT rowid, topic, payload, retain FROM messages ORDER BY rowid LIMIT ?", (limit,)
        ).fetchall()
        return [PendingMessage(r, t, bytes(p), bool(k)) for r, t, p, k in rows]

    def delete_message(self, rowid: int) -> None:
        """Forget a message the broker acknowledged."""
        with self.transaction() as db:
            _delete_message(db, rowid)

    def pending(self, limit: int, after: int = 0) -> list[PendingRow]:
        """Undelivered rows after rowid `after`, oldest first, up to the oldest held one."""
        rows = self._db.execute(
            "SELECT o.rowid, r.device, r.record, r.time_ms FROM outbox o "
            "JOIN readings r USING (rowid) WHERE o.rowid > ? AND o.rowid < ? "
            "ORDER BY o.rowid LIMIT ?",
            (after, self._held_from(), limit),
        ).fetchall()
        return [PendingRow(*row) for row in rows]

    def mark_delivered(self, rowids: Iterable[int]) -> None:
        """Remove acknowledged rows from the outbox (one transaction).

        Committed without an fsync even under `synchronous = full`: if power fails before the
        next synced commit, the rows are merely sent again with the same ids, which the contract
        allows; on an SD card the fsync cost milliseconds per live reading on the event loop.
        """
        relaxed = self._synchronous == "FULL"
        if relaxed:
            self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.transaction() as db:
                _delete_outbox(db, rowids)
        finally:
            if relaxed:
                self._db.execute(f"PRAGMA synchronous={self._synchronous}")

    def outbox_depth(self) -> int:
        """How many readings wait for the broker (not those held for the clock: `held_depth`)."""
        barrier = self._held_from()
        if self._leaving:  # acknowledged rows the writer is deleting are not waiting
            (count,) = self._db.execute(
                "SELECT count(*) FROM outbox WHERE rowid < ? "
                "AND rowid NOT IN (SELECT value FROM json_each(?))",
                (barrier, json.dumps(sorted(self._leaving))),
            ).fetchone()
        elif barrier == _NO_HOLD:  # the common case: count(*) of the whole table is O(1)-ish
            (count,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        else:
            (count,) = self._db.execute(
                "SELECT count(*) FROM outbox WHERE rowid < ?", (barrier,)
            ).fetchone()
        return int(count)

    def _held_from(self) -> int:
        """The rowid of the oldest reading held for the clock: the outbox is published up to
        it, so publishing stays in order (`_NO_HOLD` when none is held)."""
        (rowid,) = self._db.execute("SELECT min(rowid) FROM clock_hold").fetchone()
        return _NO_HOLD if rowid is None else int(rowid)

    def held_depth(self) -> int:
        """How many readings wait for the hub's clock to be corrected (gatewayd.timesync)."""
        (count,) = self._db.execute("SELECT count(*) FROM clock_hold").fetchone()
        return int(count)

    def latest(self, device: str, *, publishable: bool = False) -> Reading | None:
        """The newest stored reading of a device, by measured time (with `publishable`, not
        one held for the clock, whose time is not yet trustworthy)."""
        row = self._db.execute(
            _LATEST_PUBLISHABLE if publishable else _LATEST,
            (device,),
        ).fetchone()
        return decode_record(row[0]) if row else None

    def latest_row(self, device: str) -> PendingRow | None:
        """The newest publishable reading of a device (as `latest(publishable=True)`), as its
        stored row: for the retained `state`, which is sent as stored, never decoded."""
        row = self._db.execute(_LATEST_ROW, (device,)).fetchone()
        return PendingRow(*row) if row else None

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
            "SELECT record FROM readings WHERE device = ? AND time_ms >= ? AND time_ms < ? "
            "ORDER BY time_ms, rowid",
            (device, _ms(start) if start else -(2**62), _ms(end) if end else 2**62),
        ).fetchall()
        return [decode_record(text) for (text,) in rows]

    def count(self) -> int:
        """How many readings the store holds."""
        (count,) = self._db.execute("SELECT count(*) FROM readings").fetchone()
        return int(count)

    def prune(self, now: datetime) -> tuple[int, int]:
        """Delete readings older than the retention period; returns (deleted, of them undelivered).

        Undelivered rows that old are deleted too: the store must never grow without bound,
        and the caller logs how many never reached the broker. Readings held for the clock are
        kept: their time is not known yet.
        """
        cutoff = _ms(now - self.retention)
        with self.transaction() as db:
            (undelivered,) = db.execute(
                "SELECT count(*) FROM outbox WHERE rowid IN (SELECT rowid FROM readings "
                "WHERE time_ms < ? AND rowid NOT IN (SELECT rowid FROM clock_hold))",
                (cutoff,),
            ).fetchone()
            db.execute(
                "DELETE FROM outbox WHERE rowid IN (SELECT rowid FROM readings "
                "WHERE time_ms < ? AND rowid NOT IN (SELECT rowid FROM clock_hold))",
                (cutoff,),
            )
            deleted = db.execute(
                "DELETE FROM readings WHERE time_ms < ? "
                "AND rowid NOT IN (SELECT rowid FROM clock_hold)",
                (cutoff,),
            ).rowcount
        return deleted, int(undelivered)
