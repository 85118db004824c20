"""gatewayd.store.writer: the live path's commits in groups on the writer thread (real SQLite)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.gatewayd.store.test_store import make

from gatewayd.errors import StoreError
from gatewayd.store import PendingRow, Store
from gatewayd.store.view import StoreView


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "gatewayd.db")
    yield s
    s.close()


def fail(_db: sqlite3.Connection) -> None:
    raise sqlite3.IntegrityError("a job that fails")


async def test_readings_that_arrive_during_a_commit_share_the_next_one(store: Store) -> None:
    await store.add_soon(make(0))  # the thread and its connection are up
    before = store.writer.commits
    with store.writer.lock:  # as if a commit (and its fsync) were running
        futures = [store.add_soon(make(seq)) for seq in range(1, 21)]
    rows = await asyncio.gather(*futures)
    assert [row.rowid if row else None for row in rows] == list(range(2, 22))
    # The thread took what was queued when it woke (at least one) and the rest together.
    assert store.writer.commits - before <= 2
    assert store.count() == 21
    assert [row.rowid for row in store.pending(100)] == list(range(1, 22))


async def test_a_failing_job_fails_alone_and_the_rest_of_its_group_lands(store: Store) -> None:
    futures = [store.add_soon(make(0)), store.writer.submit(fail), store.add_soon(make(1))]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(outcomes[0], PendingRow)
    assert isinstance(outcomes[1], StoreError)
    assert "a job that fails" in str(outcomes[1])
    assert isinstance(outcomes[2], PendingRow)
    assert [r.seq for r in store.readings("cgm1")] == [0, 1]


async def test_a_duplicate_is_reported_and_not_queued_twice(store: Store) -> None:
    row = await store.add_soon(make(0))
    assert row is not None
    assert (row.rowid, row.device, row.serial) == (1, "cgm1", "SN-cgm1")
    assert await store.add_soon(make(0)) is None
    assert store.outbox_depth() == 1


async def test_acknowledgements_ride_along_with_the_next_readings(store: Store) -> None:
    await store.add_soon(make(0))
    rowids = [row.rowid for row in store.pending(10)]
    before = store.writer.commits
    delivered = store.mark_delivered_soon(rowids)  # lazy: waits for a commit of readings
    await store.add_soon(make(1))
    await delivered
    assert store.writer.commits - before == 1
    assert [row.device for row in store.pending(10)] == ["cgm1"]
    assert store.outbox_depth() == 1


async def test_acknowledgements_alone_are_committed_soon(store: Store) -> None:
    await store.add_soon(make(0))
    delivered = store.mark_delivered_soon([row.rowid for row in store.pending(10)])
    assert store.outbox_depth() == 0  # acknowledged: no longer waiting, while it is deleted
    await delivered
    assert store.outbox_depth() == 0
    with StoreView(store.path) as other:  # the published mark is in the file
        assert other.waiting_by_device() == {}


async def test_settle_commits_what_waits_and_the_writer_starts_again(store: Store) -> None:
    await store.add_soon(make(0))
    delivered = store.mark_delivered_soon([row.rowid for row in store.pending(10)])
    store.settle()
    assert store.outbox_depth() == 0
    await delivered
    assert await store.add_soon(make(1)) is not None
    assert store.outbox_depth() == 1


async def test_writes_land_in_the_file_other_connections_read(store: Store) -> None:
    await store.add_soon(make(0))
    with StoreView(store.path) as other:
        assert other.waiting_by_device() == {"cgm1": 1}


async def test_the_published_mark_is_written_at_most_once_a_second_while_readings_come(
    store: Store,
) -> None:
    await store.add_soon(make(0))
    first = store.mark_delivered_soon([row.rowid for row in store.pending(10)])
    await first  # written at once: none was written in the last second
    on_disk = StoreView(store.path)
    try:
        assert on_disk.waiting_by_device() == {}
        await store.add_soon(make(1))
        later = store.mark_delivered_soon([row.rowid for row in store.pending(10)])
        assert store.outbox_depth() == 0  # the daemon's own count is exact at once
        assert on_disk.waiting_by_device() == {"cgm1": 1}  # the file's mark waits its turn
        assert store.mark_delivered_soon([]) is later  # one write serves every PUBACK meanwhile
        await later
        assert on_disk.waiting_by_device() == {}
    finally:
        on_disk.close()
