"""gatewayd.store.feed: the rows just committed, handed to the publisher without a query (real
SQLite store and writer thread; the feed's answers are compared with the store's query)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from tests.gatewayd.store.test_store import make

from gatewayd.store import Hold, PendingRow, Store
from gatewayd.store.feed import LiveFeed


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "gatewayd.db")
    yield s
    s.close()


def queried(store: Store) -> list[str]:
    """Every statement the store's event-loop connection runs from now on."""
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    return statements


def outbox(store: Store) -> list[int]:
    """The rowids waiting, as another process reads them from the file."""
    with closing(sqlite3.connect(store.path)) as db:
        rows = db.execute(
            "SELECT rowid FROM readings WHERE rowid > coalesce((SELECT CAST(value AS INTEGER) "
            "FROM meta WHERE key = 'published_through'), 0) "
            "AND rowid NOT IN (SELECT rowid FROM withheld) "
            "AND rowid < (SELECT coalesce(min(rowid), 1e18) FROM clock_hold) ORDER BY rowid"
        ).fetchall()
    return [rowid for (rowid,) in rows]


# --- the feed alone --------------------------------------------------------------------------


def test_a_closed_feed_does_not_answer() -> None:
    feed: LiveFeed[PendingRow] = LiveFeed()
    feed.add(PendingRow(1, "d", "{}", 0, "s"))
    assert feed.take(0, 10, set()) is None
    feed.start(5)
    assert feed.take(4, 10, set()) is None  # below where it was opened: only a query knows
    feed.close()
    assert not feed.open


def test_an_open_feed_answers_in_order_after_the_row_asked_for() -> None:
    feed: LiveFeed[PendingRow] = LiveFeed()
    feed.start(2)
    for rowid in (2, 3, 4, 5, 6):  # 2 was known when it was opened
        feed.add(PendingRow(rowid, "d", "{}", rowid, "s"))
    assert [r.rowid for r in feed.take(2, 10, set()) or []] == [3, 4, 5, 6]
    assert [r.rowid for r in feed.take(3, 2, {5}) or []] == [4, 6]
    assert [r.rowid for r in feed.take(6, 10, set()) or []] == []
    assert feed.take(5, 10, set()) is None  # rows up to 6 were dropped: only a query knows


# --- the store's outbox through it --------------------------------------------------------------


async def test_while_caught_up_the_outbox_is_read_without_a_query(store: Store) -> None:
    await store.add_soon(make(0))
    first = store.pending(10)  # a query: finds the outbox caught up, opens the feed
    assert [r.rowid for r in first] == [1]
    statements = queried(store)
    rows = [await store.add_soon(make(seq)) for seq in range(1, 6)]
    fed = store.pending(10, after=1)
    assert fed == rows
    assert [r.rowid for r in fed] == outbox(store)[1:]
    assert not [s for s in statements if "FROM readings" in s]


async def test_the_feed_answers_what_the_query_would(store: Store) -> None:
    await store.add_soon(make(0))
    store.pending(10)
    for seq in range(1, 30):
        await store.add_soon(make(seq, device=f"cgm{seq % 3}"))
    fed = store.pending(100, after=1)
    store._feed.close()
    assert store.pending(100, after=1) == fed


async def test_a_reading_held_for_the_clock_stops_the_feed_and_what_follows_waits(
    store: Store,
) -> None:
    await store.add_soon(make(0))
    store.pending(10)
    await store.add_soon(make(1), hold=Hold("boot", 1.0))
    await store.add_soon(make(2))
    assert [r.rowid for r in store.pending(10, after=1)] == []  # behind the held one
    held = store.held()
    store.release_held([(h.rowid, h.reading) for h in held], [])
    assert [r.rowid for r in store.pending(10, after=1)] == [2, 3]


async def test_a_reading_written_on_the_loop_closes_the_feed_so_none_is_skipped(
    store: Store,
) -> None:
    await store.add_soon(make(0))
    store.pending(10)
    with store.writer.lock:  # a commit on the writer thread is not handed back yet ...
        late = store.add_soon(make(1))
        await asyncio.sleep(0)
    await late
    store.add(make(2))  # ... nor is it when the loop writes one of its own
    assert [r.rowid for r in store.pending(10, after=1)] == [2, 3]


async def test_a_reading_whose_waiter_was_cancelled_still_reaches_the_feed(store: Store) -> None:
    await store.add_soon(make(0))
    store.pending(10)
    with store.writer.lock:
        waiter = asyncio.ensure_future(store.add_soon(make(1)))
        await asyncio.sleep(0)
        waiter.cancel()
    await store.add_soon(make(2))  # committed after it: both handed back by now
    assert waiter.cancelled()
    assert [r.rowid for r in store.pending(10, after=1)] == [2, 3]


async def test_acknowledged_rows_are_not_fed_again(store: Store) -> None:
    await store.add_soon(make(0))
    store.pending(10)
    rows = [await store.add_soon(make(seq)) for seq in range(1, 4)]
    assert all(rows)
    store.mark_delivered([1, 3])  # 3 out of order: above the mark, still acknowledged
    assert [r.rowid for r in store.pending(10)] == [2, 4]
    assert outbox(store) == [2, 4]


async def test_rows_a_lost_session_was_handed_are_handed_again_to_the_next(store: Store) -> None:
    """The broker goes away with readings sent but not acknowledged: the next session asks from
    the published mark again and must get them, although the feed dropped them."""
    await store.add_soon(make(0))
    store.pending(10)  # opens the feed after row 1
    rows = [await store.add_soon(make(seq)) for seq in range(1, 4)]
    assert store.pending(10, after=1) == rows  # rows 2-4 handed to the broker
    assert store.pending(10, after=4) == []
    store.mark_delivered([1, 2])  # acknowledged before the link went: 3 and 4 were not
    assert [r.rowid for r in store.pending(10, after=0)] == [3, 4]  # the next session
