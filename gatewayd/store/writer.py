"""The store's writer thread: commits (and their fsync) happen here, never on the event loop.

One thread owns one write connection. Callers on the event loop `submit` a job (a function of
the connection) and await its result; the thread takes every job waiting when it wakes and runs
them in one transaction (group commit): readings that arrive while a commit and its fsync run go
in the next transaction together, so at a high rate many readings share one fsync and the pages
they touch, and at a low rate a reading waits for nothing but its own commit. A job's future is
resolved only after the COMMIT returned, so a reading is on disk (as the store's `synchronous`
setting defines it) before anything sees it — the publisher reads committed rows only.

Jobs submitted `lazy` (acknowledged rows leaving the outbox) need no fsync of their own: losing
them to a crash only sends those rows again, with the same ids. They wait up to `lazy_s` for a
durable commit to ride along in (at a high rate there is always one), else they are committed
alone with `synchronous = NORMAL`. The wait is short, so an idle outbox is seen empty.

When a group fails (SQLITE_FULL from a full disk, one job's error), it is rolled back and each of
its jobs runs again in a transaction of its own, so every caller gets its own outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: Seconds a lazy job waits for a durable commit to ride along with before it commits alone:
#: at 10 readings/s or more it rides along nearly always; at a low rate the outbox is seen empty
#: (`gatewayd status`, metrics) this soon after the PUBACK.
LAZY_S = 0.05


@dataclass(slots=True)
class _Job:
    run: Callable[[sqlite3.Connection], Any]
    lazy: bool
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[Any] | None = None
    then: Callable[[Any], None] | None = None
    outcome: tuple[bool, Any] = field(default=(True, None))


def _settle(jobs: list[_Job]) -> None:
    """On the event loop: hand every job's outcome to its `then` and its future."""
    for job in jobs:
        ok, value = job.outcome
        if ok and job.then is not None:
            job.then(value)
        future = job.future
        if future is None or future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class Writer:
    """The thread that commits the store's writes; started on the first `submit`."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        error: Callable[[sqlite3.Error], Exception],
        synchronous: str,
        *,
        lazy_s: float = LAZY_S,
    ) -> None:
        self._connect = connect
        self._error = error
        self._synchronous = synchronous
        self._lazy_s = lazy_s
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        #: Held while a group commits: `paused()` takes it to swap the files under the store.
        self.lock = threading.Lock()
        self._start_lock = threading.Lock()
        #: Transactions committed (a group, or one job of a failed group): for tests and metrics.
        self.commits = 0

    def submit(
        self,
        run: Callable[[sqlite3.Connection], Any],
        *,
        lazy: bool = False,
        then: Callable[[Any], None] | None = None,
    ) -> asyncio.Future[Any]:
        """Queue `run(db)` for the next group commit; its result (or error) in the future.
        `then(result)` is called on the event loop once committed, before the future is done,
        even when whoever waited for it was cancelled meanwhile."""
        loop = asyncio.get_running_loop()
        job = _Job(run, lazy, loop, loop.create_future(), then)
        if self._thread is None:  # the lock only to start it (`close` clears it on the loop)
            self._start()
        self._queue.put(job)
        assert job.future is not None  # noqa: S101 - set just above
        return job.future

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No group commits meanwhile, and the thread's connection closed: the next group opens
        a fresh one (the store's files are being swapped)."""
        with self.lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            yield

    def close(self) -> None:
        """Commit what waits (lazy jobs too), stop the thread and close its connection."""
        thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        thread.join()
        self._thread = None

    # -- the thread ---------------------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="store-writer", daemon=True)
                self._thread.start()

    def _main(self) -> None:
        lazy: list[_Job] = []
        deadline = 0.0
        stopping = False
        try:
            while not stopping:
                jobs, stopping = self._next(None if not lazy else deadline)
                durable: list[_Job] = []
                for job in jobs:
                    if not job.lazy:
                        durable.append(job)
                        continue
                    if not lazy:
                        deadline = time.monotonic() + self._lazy_s
                    lazy.append(job)
                if durable or (lazy and (stopping or time.monotonic() >= deadline)):
                    group, lazy = lazy + durable, []
                    self._commit(group, relaxed=not durable)
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _next(self, deadline: float | None) -> tuple[list[_Job], bool]:
        """Every job waiting (blocking for the first, until `deadline` when one is given), and
        whether `close()` asked the thread to stop."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            items = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return [], False
        while not self._queue.empty():  # only this thread takes from the queue
            items.append(self._queue.get_nowait())
        jobs = [job for job in items if job is not None]
        return jobs, len(jobs) < len(items)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._connect()
        return self._db

    def _commit(self, group: list[_Job], *, relaxed: bool) -> None:
        with self.lock:
            try:
                db = self._connection()
            except Exception as exc:  # noqa: BLE001 - handed to the callers through their futures
                error = self._error(exc) if isinstance(exc, sqlite3.Error) else exc
                for job in group:
                    job.outcome = (False, error)
                self._hand_back(group)
                return
            if relaxed and self._synchronous == "FULL":
                db.execute("PRAGMA synchronous=NORMAL")
            try:
                if not self._transaction(db, group):
                    for job in group:  # each on its own: every caller gets its own outcome
                        self._transaction(db, [job])
            finally:
                if relaxed and self._synchronous == "FULL":
                    db.execute(f"PRAGMA synchronous={self._synchronous}")
        self._hand_back(group)

    def _transaction(self, db: sqlite3.Connection, jobs: list[_Job]) -> bool:
        """Run `jobs` in one transaction; False (rolled back, outcomes set to the error) when
        any failed."""
        try:
            db.execute("BEGIN IMMEDIATE")
            results = [job.run(db) for job in jobs]
            db.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # noqa: BLE001 - handed to the caller through its future
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            error = self._error(exc) if isinstance(exc, sqlite3.Error) else exc
            for job in jobs:
                job.outcome = (False, error)
            return False
        for job, result in zip(jobs, results, strict=True):
            job.outcome = (True, result)
        return True

    @staticmethod
    def _hand_back(group: list[_Job]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in group:
            if job.loop is not None:
                by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, jobs)
