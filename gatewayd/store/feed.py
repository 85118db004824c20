"""The live feed: the readings the writer thread just committed, handed to the publisher as rows
without reading them back from the store.

While the publisher keeps up (the live path), every reading it must publish is one that was just
committed, so a query per reading for "what waits after the last row sent" only reads back what
the event loop already holds. The feed holds those rows instead, in rowid order, and answers the
question when it can prove its answer is the store's:

- it is *open* from a rowid (`start(after)`): every publishable reading above it committed since
  then is in the feed. The store opens it only after a query found the outbox caught up and no
  reading held for the clock (nothing above `after` the query did not see);
- rows enter it on the event loop when their commit is handed back (`add`), in commit order,
  which is rowid order (one writer thread gives out rowids in order);
- anything that makes a reading publishable other than its own commit, or may delete a waiting
  one (a release of readings held for the clock, a prune, a write by another path, a store file
  written back), closes it (`close`): the next query opens it again.

A row committed before the query that opened the feed but handed back after it is in both: the
publisher asks for rows after the last one it sent, so it is never sent twice in a session.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Set
from typing import Generic, Protocol, TypeVar


class _Row(Protocol):
    @property
    def rowid(self) -> int: ...


RowT = TypeVar("RowT", bound=_Row)


class LiveFeed(Generic[RowT]):
    """Committed rows above `start`'s rowid, while open."""

    def __init__(self) -> None:
        self._rows: deque[RowT] = deque()
        #: Every publishable reading above this rowid is in `_rows` (None: closed).
        self._after: int | None = None

    @property
    def open(self) -> bool:
        """Whether the feed answers for the outbox."""
        return self._after is not None

    def start(self, after: int) -> None:
        """Open the feed: nothing publishable waits above `after` but what `add` will bring."""
        self._rows.clear()
        self._after = after

    def close(self) -> None:
        """Stop answering until the next `start`."""
        self._rows.clear()
        self._after = None

    def add(self, row: RowT) -> None:
        """A reading committed (publishable, in rowid order)."""
        if self._after is not None and row.rowid > self._after:
            self._rows.append(row)

    def discard(self, rowids: Set[int]) -> None:
        """These readings are not to be published after all (acknowledged out of order and
        written as withheld)."""
        if any(row.rowid in rowids for row in self._rows):
            self._rows = deque(row for row in self._rows if row.rowid not in rowids)

    def take(self, after: int, limit: int, skip: Set[int]) -> list[RowT] | None:
        """The rows above `after` not in `skip`, oldest first, up to `limit`; None when the feed
        cannot answer (closed, or `after` below the last row asked after). Rows at or below
        `after` are dropped: the caller has them, so from then on the feed answers only from
        `after` (a new broker session asks from the published mark again, below the rows a
        lost session was handed, and must get them from the store)."""
        if self._after is None or after < self._after:
            return None
        self._after = after
        rows = self._rows
        while rows and rows[0].rowid <= after:
            rows.popleft()
        found: list[RowT] = []
        for row in rows:
            if row.rowid not in skip:
                found.append(row)
                if len(found) >= limit:
                    break
        return found
