"""The local store: every reading lands here, durably, before anything else happens to it.

SQLite in WAL mode (schema and migrations: gatewayd.store.schema). `readings` holds the history
(pruned after the retention period) in rowid order, which is the order of publishing. The outbox
is every reading above the published mark (`meta.published_through`) that is neither withheld
(`withheld`: never to be published) nor at or after the oldest reading held for the clock.
Inserting is idempotent on the reading's deterministic id, so a backfill that overlaps what was
already received, or a replay after a crash, adds nothing twice.

The mark (gatewayd.store.mark) moves over the acknowledged readings in rowid order and is written
lazily: a crash only sends those readings again, with the same ids (QoS 1 allows it), never
loses one.

Reads are synchronous and short; the daemon makes them on the event loop, which SQLite in WAL
mode serves in tens of microseconds without waiting for any writer. The live path's writes
(`add_soon`, `mark_delivered_soon`, `delete_message_soon`) go to the writer thread
(gatewayd.store.writer), which commits them in groups on its own connection: the event loop never
waits for a commit or its fsync. The synchronous writes (`add`, `transaction`, …) serve the
services, the full-disk handling and the commands. Services keep their own tables in the store
(`ensure_schema`, `transaction`, `query`); the core tables are read and written here only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from gatewayd.errors import StoreError, StoreFull, StorePathError
from gatewayd.models import DeviceIdentity, Reading
from gatewayd.store.codec import (
    decode_identity,
    decode_record,
    encode_identity,
    encode_record,
    identity_key,
)
from gatewayd.store.feed import LiveFeed
from gatewayd.store.file import identity, is_corrupt, move_aside, quick_check, restore
from gatewayd.store.history import History, stored_devices, to_ms
from gatewayd.store.mark import NO_HOLD, PublishedMark
from gatewayd.store.messages import Messages
from gatewayd.store.schema import PUBLISHED_KEY, ROWID_FLOOR_KEY, migrate, set_meta
from gatewayd.store.writer import Writer

_LATEST_ROW = (
    "SELECT rowid, device, record, time_ms, serial FROM readings WHERE device = ? "
    "AND rowid NOT IN (SELECT rowid FROM clock_hold) ORDER BY time_ms DESC, rowid DESC LIMIT 1"
)
#: The readings waiting for the broker after a rowid, up to the oldest held one.
_PENDING = (
    "SELECT rowid, device, record, time_ms, serial FROM readings WHERE rowid > ? "
    "AND rowid < (SELECT coalesce(min(rowid), ?) FROM clock_hold) "
    "AND rowid NOT IN (SELECT rowid FROM withheld) ORDER BY rowid LIMIT ?"
)
#: The new rowid of a reading: above every rowid there is, and above `floor` (the published
#: mark, and the newest rowid a deletion took away), so rowids only grow without AUTOINCREMENT.
_INSERT = (
    "INSERT OR IGNORE INTO readings (rowid, id, device, time_ms, serial, record) "
    "VALUES (max(coalesce((SELECT max(rowid) FROM readings), 0), ?) + 1, ?, ?, ?, ?, ?)"
)
#: Seconds between two identity checks of the store file on the live path
#: (`ensure_file(every=...)`): two stats per reading cost ~5 % of the CPU at 100 readings/s.
FILE_CHECK_EVERY_S = 1.0
#: Bytes in the WAL before a commit checkpoints it into the database (`wal_autocheckpoint` is
#: this in pages of the store's size). SQLite's default, 1000 pages = 4 MiB, never fired on a
#: 4 MiB volume: the WAL itself filled the disk, and then no checkpoint could grow the database
#: to empty it, so freed space went straight back to the WAL. 800 KiB stays below the full-disk
#: reserve (1 MiB, gatewayd.store.full_disk): releasing it always lets a checkpoint complete.
WAL_CHECKPOINT_BYTES = 800 << 10
#: The page size of a new store (an existing one keeps its own: SQLite changes it only with a
#: VACUUM outside WAL mode). A lone reading's commit appends a WAL frame for each page it
#: touches (the row, the id index, the device/time index): 3 frames of 2 KiB are 1.5 file-system
#: blocks of 4 KiB where 3 frames of SQLite's default 4 KiB are 3. Measured at 100 readings/s
#: (bench/live_path.py): 14.5 KB written per reading with 2 KiB pages, 19.7 KB with 4 KiB,
#: 14.1 KB with 1 KiB (which packs only two stored readings in a page).
PAGE_SIZE = 2048
#: Bytes the WAL file is cut back to after a checkpoint resets it (SQLite keeps it at its largest
#: otherwise): what a past burst made it need is given back to the disk.
WAL_SIZE_LIMIT = 1 << 20


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
class PendingRow:
    """One reading waiting for the broker: the store's rowid, its device, the stored record
    (JSON without the serial), its measured time (ms since the epoch) and the sensor serial."""

    rowid: int
    device: str
    record: str
    time_ms: int
    serial: str


@dataclass(frozen=True, slots=True)
class HeldRow:
    """A reading held for the clock (gatewayd.timesync) and where it stands on the monotonic
    clock of the boot that received it."""

    rowid: int
    hold: Hold
    reading: Reading


def _insert(
    db: sqlite3.Connection, reading: Reading, hold: Hold | None, floor: int
) -> PendingRow | None:
    """Insert a reading (and its `clock_hold` row); its row, or None if already there."""
    time_ms, record = to_ms(reading.time), encode_record(reading)
    cur = db.execute(_INSERT, (floor, reading.id, reading.device, time_ms, reading.serial, record))
    if cur.rowcount != 1 or cur.lastrowid is None:
        return None
    if hold is not None:
        db.execute(
            "INSERT INTO clock_hold (rowid, boot_id, received_mono) VALUES (?, ?, ?)",
            (cur.lastrowid, hold.boot_id, hold.received_mono),
        )
    return PendingRow(cur.lastrowid, reading.device, record, time_ms, reading.serial)


def _barrier(_db: sqlite3.Connection) -> None:
    """A write that writes nothing: it commits after the writes queued before it."""


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


class Store(History, Messages):
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
        (gatewayd.store.file); other commands never move the daemon's file."""
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
        self._file_checked = time.monotonic()
        #: Commits the live path's writes off the event loop, on its own connection.
        self.writer = Writer(
            self._open_writer, lambda exc: _error(self.path, exc), self._synchronous
        )
        #: The published mark: the outbox is every reading above it (gatewayd.store.mark).
        #: The readings just committed, for `pending` while the publisher keeps up.
        self._feed: LiveFeed[PendingRow] = LiveFeed()
        #: Called on the event loop when a new publishable reading is committed (the publisher's
        #: `notify`; from the writer thread's hand-back, it drains in the same turn as the
        #: reading's waiter resumes).
        self.on_commit: Callable[[], None] = _nothing
        self._mark = PublishedMark(
            self._db,
            self.writer,
            self.transaction,
            self._synchronous,
            self._meta_int(PUBLISHED_KEY),
            withheld=self._feed.discard,
        )
        #: A new reading's rowid is above this and the mark (and above every rowid there is).
        self._floor = self._meta_int(ROWID_FLOOR_KEY)
        #: No message waits (known since the last `pending_messages` that found none).
        self._no_messages = False

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
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // int(page_size)}")
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
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # a new file only: ignored otherwise
            self._configure(db)
            db.execute("PRAGMA journal_mode=WAL")
            migrate(db, self.path)
        except BaseException as exc:
            if check and is_corrupt(exc):
                move_aside(self.path, exc)  # before closing, which would delete the -wal
                db.close()
                return self._connect(check=False)
            db.close()
            raise
        return db

    def _rowid_floor(self) -> int:
        """What a new reading's rowid must be above: the published mark, and the newest rowid
        a deletion took away (rowids only grow, without AUTOINCREMENT)."""
        return max(self._floor, self._mark.published)

    def _identities(self) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """(st_dev, st_ino) of the database file and of its WAL (which the open connection
        keeps: deleted alone, it would take the commits not yet checkpointed with it)."""
        return identity(self.path), identity(Path(f"{self.path}-wal"))

    def ensure_file(self, *, every: float = 0.0) -> bool:
        """Check (two stats) that the files at `path` are still the ones open; when they were
        deleted or replaced under the running daemon, write the open database back to `path`
        (moving a replacement aside), reopen it and log `store_file_replaced` at error level.
        True when it did; on failure (e.g. a full disk) it logs once and keeps writing to the
        open file. With `every`, not again within that many seconds of the last check (the live
        path: `FILE_CHECK_EVERY_S`; `close` checks once more).
        """
        now = time.monotonic()
        if every and now - self._file_checked < every:
            return False
        self._file_checked = now
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
            self._feed.close()
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

    async def committed(self) -> None:
        """Return once every write submitted so far is committed and handed back to the event
        loop (so the publisher has been told of every reading stored until now)."""
        await self.writer.submit(_barrier)

    def settle(self) -> None:
        """Commit what waits for the writer thread (the acknowledgements it holds back too) and
        the published mark, and stop the thread; the next write starts it again."""
        self.writer.close()
        self._mark.settle()

    def close(self) -> None:
        """Commit what the writer thread holds and the published mark, write a replaced store
        file back, checkpoint and close (a checkpoint a full disk refuses is left to the next
        open)."""
        try:
            self.ensure_file()
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
            row = _insert(db, reading, hold, self._rowid_floor())
        # Its rowid may be above rows the writer thread committed but has not handed back yet:
        # the feed must not take it before them.
        self._feed.close()
        if row is not None and hold is None:
            self.on_commit()
        return row is not None

    def add_soon(
        self, reading: Reading, *, hold: Hold | None = None
    ) -> asyncio.Future[PendingRow | None]:
        """`add` committed by the writer thread, in a group with whatever else waits: the
        future's result once the reading is on disk, its row (None if its id was already
        stored; `StoreFull` / `StoreError` on failure)."""
        return self.writer.submit(
            partial(_insert, reading=reading, hold=hold, floor=self._rowid_floor()),
            then=partial(self._committed, hold=hold),
        )

    def _committed(self, row: PendingRow | None, hold: Hold | None) -> None:
        """On the event loop, a reading's commit handed back (whether or not its caller still
        waits): the live feed takes its row; a held one closes it (nothing after it is
        published until it is released)."""
        if hold is not None:
            self._feed.close()
        elif row is not None:
            self._feed.add(row)
            self.on_commit()

    def mark_delivered_soon(self, rowids: list[int], *, lazy: bool = True) -> asyncio.Future[None]:
        """`mark_delivered`, the mark written by the writer thread: `lazy`, riding along with a
        commit of readings at most every `MARK_EVERY_S` (or alone, without an fsync); not
        `lazy`, at once. The future is done when the mark is on disk."""
        return self._mark.deliver_soon(rowids, lazy=lazy)

    def remember_identity(self, device: str, identity: DeviceIdentity) -> bool:
        """Keep what a device said about itself (model, firmware; for exports and Home
        Assistant); True when it differs from what was kept."""
        value = encode_identity(identity)
        key = identity_key(device)
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] == value:
                return False
            set_meta(db, key, value)
            return True

    def identity(self, device: str) -> DeviceIdentity | None:
        """What `remember_identity` kept for the device, if anything."""
        value = self.meta(identity_key(device))
        return decode_identity(value) if value is not None else None

    def meta(self, key: str) -> str | None:
        """A value kept in `meta` (the store's own keys, and small state such as the boot the
        clock was trusted in, gatewayd.timesync)."""
        row = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row[0][0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        """Keep a value in `meta` (one transaction)."""
        with self.transaction() as db:
            set_meta(db, key, value)

    def _meta_int(self, key: str) -> int:
        value = self.meta(key)
        return int(value) if value is not None else 0

    def ensure_schema(self, ddl: str) -> None:
        """Create a service's tables (idempotent DDL: CREATE … IF NOT EXISTS)."""
        try:
            self._db.executescript(ddl)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on a service's own tables (never the core tables)."""
        return self._read(sql, params)

    def pending(self, limit: int, after: int = 0) -> list[PendingRow]:
        """Undelivered rows after rowid `after`, oldest first, up to the oldest held one.

        While the caller keeps up, from the live feed (gatewayd.store.feed): the rows committed
        since, without a query. A query that finds fewer than `limit` rows and nothing held for
        the clock opens the feed after the last row it found."""
        acked = self._mark.acked
        after = max(after, self._mark.published)
        fed = self._feed.take(after, limit, acked)
        if fed is not None:
            return fed
        found = self._db.execute(_PENDING, (after, NO_HOLD, limit + len(acked))).fetchall()
        waiting = [PendingRow(*row) for row in found if row[0] not in acked]
        caught_up = len(found) < limit + len(acked) and len(waiting) <= limit
        if caught_up and self._held_from() == NO_HOLD:  # every row above `after` is in `found`
            self._feed.start(found[-1][0] if found else after)
        return waiting[:limit]

    def mark_delivered(self, rowids: Iterable[int]) -> None:
        """Record that the broker acknowledged these readings: the published mark moves over
        them (in rowid order) and is written at once, without an fsync even under
        `synchronous = full`: if power fails before the next synced commit, the readings are
        merely sent again with the same ids, which the contract allows."""
        self._mark.deliver(rowids)

    @property
    def published_through(self) -> int:
        """The published mark: every reading at or below this rowid was acknowledged."""
        return self._mark.published

    def outbox_depth(self) -> int:
        """How many readings wait for the broker (not those held for the clock: `held_depth`)."""
        barrier = self._held_from()
        ((count,),) = self._read(
            "SELECT (SELECT count(*) FROM readings WHERE rowid > ?1 AND rowid < ?2) "
            "- (SELECT count(*) FROM withheld WHERE rowid > ?1 AND rowid < ?2)",
            (self._mark.published, barrier),
        )
        return int(count) - sum(1 for r in self._mark.acked if r < barrier)

    def held_depth(self) -> int:
        """How many readings wait for the hub's clock to be corrected (gatewayd.timesync)."""
        (count,) = self._db.execute("SELECT count(*) FROM clock_hold").fetchone()
        return int(count)

    def held(self) -> list[HeldRow]:
        """The readings held for the clock, oldest first (gatewayd.timesync)."""
        rows = self._read(
            "SELECT h.rowid, h.boot_id, h.received_mono, r.record, r.serial "
            "FROM clock_hold h JOIN readings r USING (rowid) ORDER BY h.rowid"
        )
        return [
            HeldRow(rowid, Hold(boot_id, mono), decode_record(record, serial))
            for rowid, boot_id, mono, record, serial in rows
        ]

    def release_held(
        self, released: Sequence[tuple[int, Reading]], withheld: Sequence[tuple[int, Reading]]
    ) -> None:
        """Take every held reading off hold in one transaction, with its corrected time and
        flags: `released` ones are published (in rowid order), `withheld` ones never are."""
        self._feed.close()
        with self.transaction() as db:
            db.executemany(
                "UPDATE readings SET time_ms = ?, record = ? WHERE rowid = ?",
                (
                    (to_ms(reading.time), encode_record(reading), rowid)
                    for rowid, reading in (*released, *withheld)
                ),
            )
            db.executemany(
                "INSERT OR IGNORE INTO withheld (rowid) VALUES (?)", ((r,) for r, _ in withheld)
            )
            db.executemany(
                "DELETE FROM clock_hold WHERE rowid = ?",
                ((r,) for r, _ in (*released, *withheld)),
            )

    def latest_row(self, device: str) -> PendingRow | None:
        """The newest publishable reading of a device (as `latest(publishable=True)`), as its
        stored row: for the retained `state`, which is sent as stored, never decoded."""
        row = self._db.execute(_LATEST_ROW, (device,)).fetchone()
        return PendingRow(*row) if row else None

    def delete_delivered(self, before_ms: int, limit: int) -> int:
        """Delete up to `limit` readings measured before `before_ms` that the broker has
        acknowledged (as written on disk: a crash cannot bring them back to the outbox), oldest
        first; how many (the full-disk handling, gatewayd.store.full_disk)."""
        self._feed.close()
        with self.transaction() as db:
            return int(
                db.execute(
                    "DELETE FROM readings WHERE rowid IN (SELECT rowid FROM readings "
                    "WHERE rowid <= ? AND time_ms < ? "
                    "AND rowid NOT IN (SELECT rowid FROM clock_hold) ORDER BY rowid LIMIT ?)",
                    (self._mark.written, before_ms, limit),
                ).rowcount
            )

    def checkpoint(self) -> None:
        """A PASSIVE WAL checkpoint: never waits for a reader; recycles the WAL when it can."""
        self._read("PRAGMA wal_checkpoint(PASSIVE)")

    def prune(self, now: datetime) -> tuple[int, int]:
        """Delete readings older than the retention period; returns (deleted, of them undelivered).

        Undelivered rows that old are deleted too: the store must never grow without bound,
        and the caller logs how many never reached the broker. Readings held for the clock are
        kept: their time is not known yet. Each device's rows are found through its index.
        """
        cutoff = to_ms(now - self.retention)
        deleted = undelivered = 0
        self._feed.close()
        with self.transaction() as db:
            (top,) = db.execute("SELECT max(rowid) FROM readings").fetchone()
            for device in stored_devices(db):
                (waiting,) = db.execute(
                    "SELECT count(*) FROM readings WHERE device = ? AND time_ms < ? "
                    "AND rowid > ? AND rowid NOT IN (SELECT rowid FROM clock_hold) "
                    "AND rowid NOT IN (SELECT rowid FROM withheld)",
                    (device, cutoff, self._mark.published),
                ).fetchone()
                undelivered += int(waiting)
                deleted += db.execute(
                    "DELETE FROM readings WHERE device = ? AND time_ms < ? "
                    "AND rowid NOT IN (SELECT rowid FROM clock_hold)",
                    (device, cutoff),
                ).rowcount
            db.execute(
                "DELETE FROM withheld WHERE rowid <= ? "
                "OR rowid NOT IN (SELECT rowid FROM readings)",
                (self._mark.written,),
            )
            (newest,) = db.execute("SELECT max(rowid) FROM readings").fetchone()
            if top is not None and (newest is None or newest < top) and top > self._rowid_floor():
                # The newest rows went: rowids must not be given out again (`_INSERT`).
                self._floor = int(top)
                set_meta(db, ROWID_FLOOR_KEY, str(top))
        return deleted, undelivered


def _nothing() -> None:
    """No one listens."""
