"""The store's other outbox: alerts, summaries and discovery configs waiting for the broker
(`messages`), queued by the services inside their own transactions and deleted after the
PUBACK. `Store` has these methods (gatewayd.store.store).
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

from gatewayd.store.writer import Writer


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A non-reading message waiting for the broker (alert, summary, discovery config)."""

    rowid: int
    topic: str
    payload: bytes
    retain: bool


def _delete_message(db: sqlite3.Connection, rowid: int) -> None:
    db.execute("DELETE FROM messages WHERE rowid = ?", (rowid,))


class Messages:
    """The messages of a store whose connection is `_db` and writer thread `writer`."""

    _db: sqlite3.Connection
    writer: Writer
    #: No message waits (known since the last `pending_messages` that found none).
    _no_messages: bool

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction: `Store.transaction`."""
        raise NotImplementedError

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A read on `_db`: `History._read`, which `Store` has first."""
        raise NotImplementedError

    def add_message(
        self, topic: str, payload: bytes, *, retain: bool, db: sqlite3.Connection | None = None
    ) -> None:
        """Queue a message for the broker (inside the caller's transaction when `db` is given)."""
        if db is not None:
            db.execute(
                "INSERT INTO messages (topic, payload, retain) VALUES (?, ?, ?)",
                (topic, payload, int(retain)),
            )
            self._no_messages = False  # (a rolled-back transaction only costs a query)
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
        """Queued messages, oldest first (no query while none was queued since the last look:
        the publisher asks twice per drain)."""
        if self._no_messages:
            return []
        rows = self._db.execute(
            "SELECT rowid, topic, payload, retain FROM messages ORDER BY rowid LIMIT ?", (limit,)
        ).fetchall()
        self._no_messages = not rows
        return [PendingMessage(r, t, bytes(p), bool(k)) for r, t, p, k in rows]

    def message_count(self) -> int:
        """How many messages wait for the broker (alerts, summaries, discovery configs)."""
        ((count,),) = self._read("SELECT count(*) FROM messages")
        return int(count)

    def delete_message(self, rowid: int) -> None:
        """Forget a message the broker acknowledged."""
        with self.transaction() as db:
            _delete_message(db, rowid)

    def delete_message_soon(self, rowid: int) -> asyncio.Future[None]:
        """`delete_message` by the writer thread (lazily, as `mark_delivered_soon`)."""
        return self.writer.submit(partial(_delete_message, rowid=rowid), lazy=True)
