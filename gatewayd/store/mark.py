"""The published mark: how far the broker has acknowledged the outbox, in memory and on disk.

Every reading at or below the mark (`meta.published_through`) was acknowledged or is withheld.
PUBACKs may come out of order within the publisher's window: a reading acknowledged above one
still in flight waits in memory (`acked`) until the mark can pass it. The mark is written
lazily, riding along with a commit of readings at most every `MARK_EVERY_S` (or alone, without
an fsync): a crash before that only sends those readings again, with the same ids (QoS 1
allows it), never loses one. Readings acknowledged above the written mark are recorded as
withheld with it, so they are not sent again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from functools import partial

from gatewayd.errors import StoreError
from gatewayd.store.schema import PUBLISHED_KEY, set_meta
from gatewayd.store.writer import Writer

#: `_held_from()` when no reading is held for the clock (no rowid reaches it).
NO_HOLD = 2**63 - 1
#: Seconds between two writes of the published mark while PUBACKs keep coming (each write
#: rides along with a commit of readings; a crash loses at most this much of the mark).
MARK_EVERY_S = 1.0


class PublishedMark:
    """The mark of one store: `published` in memory, `written` on disk, `acked` above it."""

    def __init__(
        self,
        db: sqlite3.Connection,
        writer: Writer,
        transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
        synchronous: str,
        published: int,
        *,
        withheld: Callable[[set[int]], None] = lambda rowids: None,
    ) -> None:
        """`db` is the store's event-loop connection, `transaction` its write transaction,
        `synchronous` its configured `PRAGMA synchronous` (upper case), `published` the mark
        as written; `withheld(rowids)` is told which readings acknowledged above the mark were
        written as withheld (never to be sent again)."""
        self._withheld = withheld
        self._db = db
        self._writer = writer
        self._transaction = transaction
        self._synchronous = synchronous
        #: Every reading at or below this rowid was acknowledged (or is withheld).
        self.published = published
        #: The mark as it is on disk.
        self.written = self.published
        #: Acknowledged rowids above the mark (out of order).
        self.acked: set[int] = set()
        self._written_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._job: asyncio.Future[None] | None = None

    def deliver_soon(self, rowids: list[int], *, lazy: bool = True) -> asyncio.Future[None]:
        """Move the mark over `rowids` and have the writer thread write it: `lazy`, riding along
        with a commit of readings at most every `MARK_EVERY_S` (or alone, without an fsync); not
        `lazy`, at once (also what a lazy write scheduled earlier waits for). The future is done
        when the mark is on disk."""
        self._advance(rowids)
        job = self._job
        if job is not None and lazy:
            return job  # queued or scheduled: it writes the mark as it is when it runs
        if job is None and self.written >= self.published and not self.acked:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        if lazy:
            wait = self._written_at + MARK_EVERY_S - time.monotonic()
            if wait > 0:
                loop = asyncio.get_running_loop()
                scheduled: asyncio.Future[None] = loop.create_future()
                self._job = scheduled
                self._timer = loop.call_later(wait, self._submit_scheduled, scheduled)
                return scheduled
        return self._submit(lazy=lazy)

    def deliver(self, rowids: Iterable[int]) -> None:
        """Move the mark over `rowids` and write it at once, on the calling thread."""
        self._advance(rowids)
        self.write_now()

    def write_now(self, *, relaxed: bool = True) -> None:
        """Write the mark now if it moved; `relaxed`, without an fsync even under `synchronous =
        full`: if power fails before the next synced commit, the readings are merely sent again
        with the same ids, which the contract allows."""
        if self.written >= self.published and not self.acked:
            return
        relaxed = relaxed and self._synchronous == "FULL"
        if relaxed:
            self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._transaction() as db:
                written = self._write(db, self.published, self.acked.copy())
            self._is_written(*written)
        finally:
            if relaxed:
                self._db.execute(f"PRAGMA synchronous={self._synchronous}")

    def settle(self) -> None:
        """After the writer thread stopped: write the mark now, and end a lazy write that waits
        (a full disk leaves the mark as it was: those readings are sent again after a restart)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        scheduled, self._job = self._job, None
        with contextlib.suppress(StoreError):
            self.write_now(relaxed=False)
        if scheduled is not None and not scheduled.done():
            scheduled.set_result(None)

    def _submit(self, *, lazy: bool) -> asyncio.Future[None]:
        scheduled = None
        if self._timer is not None:  # a lazy write waits for its turn: this one serves it
            self._timer.cancel()
            self._timer = None
            scheduled = self._job
        self._written_at = time.monotonic()
        future: asyncio.Future[tuple[int, set[int]]] = self._writer.submit(
            self._write_current, lazy=lazy
        )
        outcome: asyncio.Future[None] = future.get_loop().create_future()
        self._job = outcome
        future.add_done_callback(partial(self._written_by_writer, outcome))
        if scheduled is not None and not scheduled.done():
            outcome.add_done_callback(partial(_chain, scheduled))
        return outcome

    def _submit_scheduled(self, scheduled: asyncio.Future[None]) -> None:
        self._timer = None
        if self._job is scheduled:
            self._job = None
        if scheduled.done():
            return
        written = self._submit(lazy=True)
        written.add_done_callback(partial(_chain, scheduled))

    def _written_by_writer(
        self, outcome: asyncio.Future[None], future: asyncio.Future[tuple[int, set[int]]]
    ) -> None:
        """On the event loop: a mark job committed (or failed)."""
        if self._job is outcome:
            self._job = None
        if future.cancelled():
            outcome.cancel()
            return
        exc = future.exception()
        if exc is not None:
            if not outcome.done():
                outcome.set_exception(exc)
            return
        self._is_written(*future.result())
        if not outcome.done():  # else its waiter gave up (cancelled it): written all the same
            outcome.set_result(None)
        if self.written < self.published and self._job is None:
            # Acknowledged while the job ran: written with the next one (out-of-order ones
            # alone wait for the mark, the next flush or `settle`).
            self.deliver_soon([]).add_done_callback(_consume)

    @staticmethod
    def _write(db: sqlite3.Connection, mark: int, above: set[int]) -> tuple[int, set[int]]:
        """Write the mark, and the readings acknowledged above it (out of order) as withheld:
        they are not sent again after a restart."""
        set_meta(db, PUBLISHED_KEY, str(mark))
        above = {r for r in above if r > mark}
        if above:
            db.executemany(
                "INSERT OR IGNORE INTO withheld (rowid) VALUES (?)", ((r,) for r in above)
            )
        return mark, above

    def _write_current(self, db: sqlite3.Connection) -> tuple[int, set[int]]:
        """Write the mark as it is now (in the writer thread; `set.copy` is atomic)."""
        return self._write(db, self.published, self.acked.copy())

    def _is_written(self, mark: int, above: set[int]) -> None:
        self.written = max(self.written, mark)
        self.acked -= above  # withheld on disk now: `pending` and `_advance` skip them
        if above:
            self._withheld(above)

    def _advance(self, rowids: Iterable[int]) -> None:
        """Move the mark over the acknowledged readings, in rowid order."""
        self.acked.update(r for r in rowids if r > self.published)
        if not self.acked:
            return
        top = max(self.acked)
        if top - self.published == len(self.acked):  # every rowid up to `top`: no query needed
            self.published, self.acked = top, set()
            return
        rows = self._db.execute(
            "SELECT rowid FROM readings WHERE rowid > ? "
            "AND rowid NOT IN (SELECT rowid FROM withheld) ORDER BY rowid LIMIT ?",
            (self.published, len(self.acked) + 1),
        ).fetchall()
        mark = self.published
        for (rowid,) in rows:
            if rowid not in self.acked:
                break
            mark = rowid
        else:  # nothing above the mark waits: it passes the withheld ones too (not the held).
            # Withheld only: a reading committed since the query above has a higher rowid.
            (top,) = self._db.execute(
                "SELECT max(rowid) FROM withheld "
                "WHERE rowid < (SELECT coalesce(min(rowid), ?) FROM clock_hold)",
                (NO_HOLD,),
            ).fetchone()
            mark = max(mark, top or 0, *self.acked)
        if mark > self.published:
            self.published = mark
            self.acked = {r for r in self.acked if r > mark}


def _consume(future: asyncio.Future[None]) -> None:
    """Retrieve a background mark write's outcome (a failure is retried with the next one)."""
    if not future.cancelled():
        future.exception()


def _chain(target: asyncio.Future[None], source: asyncio.Future[None]) -> None:
    """Hand `source`'s outcome to `target` (a mark job waiting for its turn)."""
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(None)
