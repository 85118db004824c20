"""gatewayd.store: the durable SQLite store and its outbox (real SQLite files in tmp_path)."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gatewayd.driver import ResumePoint
from gatewayd.errors import GatewayError, StoreError
from gatewayd.models import Reading
from gatewayd.store import PendingRow, Store
from gatewayd.store.codec import decode_record
from gatewayd.store.store import PAGE_SIZE

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def make(seq: int, minutes: float | None = None, device: str = "cgm1", **kw: Any) -> Reading:
    fields: dict[str, Any] = {
        "device": device,
        "driver": "simulator",
        "serial": f"SN-{device}",
        "session": "s1",
        "seq": seq,
        "time": T0 + timedelta(minutes=5 * seq if minutes is None else minutes),
        "received": T0 + timedelta(minutes=5 * seq if minutes is None else minutes, seconds=1),
        "glucose_mgdl": 100.0 + seq,
    }
    fields.update(kw)
    return Reading(**fields)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gatewayd.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path)
    yield s
    s.close()


def pragma(path: Path, name: str) -> Any:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(f"PRAGMA {name}").fetchone()[0]


# --- opening ------------------------------------------------------------------------------------


def test_wal_mode(store: Store, db_path: Path) -> None:
    assert pragma(db_path, "journal_mode") == "wal"


def test_a_new_store_has_small_pages_and_an_old_one_keeps_its_own(
    store: Store, db_path: Path, tmp_path: Path
) -> None:
    assert pragma(db_path, "page_size") == PAGE_SIZE == 2048
    # The WAL is checkpointed at the same size whatever the pages: 800 KiB.
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 400
    old = tmp_path / "old.db"
    with closing(sqlite3.connect(old)) as db:  # made by an earlier version: SQLite's default
        db.execute("PRAGMA page_size=4096")
        db.execute("PRAGMA journal_mode=WAL")
    with closing(Store(old)) as again:
        again.add(make(0))
        assert [r.seq for r in again.readings("cgm1")] == [0]
        assert again._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 200
    assert pragma(old, "page_size") == 4096


def test_schema_version_recorded(store: Store, db_path: Path) -> None:
    with closing(sqlite3.connect(db_path)) as db:
        rows = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    assert rows == [("3",)]


def test_file_mode_0600_on_creation(db_path: Path) -> None:
    old = os.umask(0)  # a permissive umask must not widen the store's mode
    try:
        s = Store(db_path)
    finally:
        os.umask(old)
    try:
        s.add(make(0))
        for path in db_path.parent.iterdir():  # the db and its -wal / -shm companions
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        s.close()


def test_creates_missing_nested_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "store.db"
    s = Store(path)
    try:
        assert s.add(make(0))
        assert path.is_file()
    finally:
        s.close()


def test_directory_as_store_path_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "adir"
    path.mkdir()
    with pytest.raises(StoreError) as info:
        Store(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, GatewayError)
    assert info.value.retryable is False


def test_parent_is_a_file_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x", encoding="utf-8")
    path = tmp_path / "file" / "store.db"
    with pytest.raises(StoreError) as info:
        Store(path)
    assert str(path) in str(info.value)


def test_not_a_database_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an sqlite database at all" * 200)
    with pytest.raises(StoreError):
        Store(path)


def test_synchronous_normal_accepted(db_path: Path) -> None:
    s = Store(db_path, synchronous="normal")
    try:
        assert s.add(make(0))
        assert s.count() == 1
    finally:
        s.close()


# --- add ----------------------------------------------------------------------------------------


def test_add_is_idempotent(store: Store) -> None:
    r = make(0)
    assert store.add(r) is True
    assert store.add(r) is False
    # The same id with other contents (a replay, another hub's copy) is still the same reading.
    assert store.add(make(0, glucose_mgdl=250.0, received=T0 + timedelta(hours=1))) is False
    assert store.count() == 1
    assert store.outbox_depth() == 1
    assert len(store.pending(100)) == 1
    assert store.latest("cgm1") == r
    assert store.latest("cgm1").glucose_mgdl == 100.0  # type: ignore[union-attr]


def test_add_after_delivery_does_not_requeue(store: Store) -> None:
    store.add(make(0))
    store.mark_delivered([row.rowid for row in store.pending(10)])
    assert store.add(make(0)) is False
    assert store.outbox_depth() == 0


def test_add_after_close_raises_store_error(db_path: Path) -> None:
    s = Store(db_path)
    s.close()
    with pytest.raises(StoreError):
        s.add(make(0))


# --- pending / outbox ---------------------------------------------------------------------------


def test_pending_in_insertion_order(store: Store) -> None:
    order = [make(5), make(1), make(3, device="cgm2"), make(2)]
    for r in order:
        store.add(r)
    rows = store.pending(10)
    assert all(isinstance(row, PendingRow) for row in rows)
    assert [decode_record(row.record, row.serial).id for row in rows] == [r.id for r in order]
    assert [row.device for row in rows] == ["cgm1", "cgm1", "cgm2", "cgm1"]
    assert [row.rowid for row in rows] == sorted(row.rowid for row in rows)
    assert decode_record(rows[0].record, rows[0].serial) == order[0]


def test_pending_limit_and_after(store: Store) -> None:
    for seq in range(6):
        store.add(make(seq))
    first = store.pending(2)
    assert [decode_record(r.record, r.serial).seq for r in first] == [0, 1]
    rest = store.pending(10, after=first[-1].rowid)
    assert [decode_record(r.record, r.serial).seq for r in rest] == [2, 3, 4, 5]
    assert store.pending(10, after=rest[-1].rowid) == []
    assert store.pending(0) == []


def test_mark_delivered(store: Store) -> None:
    for seq in range(4):
        store.add(make(seq))
    rows = store.pending(10)
    store.mark_delivered([rows[0].rowid, rows[2].rowid])
    assert store.outbox_depth() == 2
    assert [decode_record(r.record, r.serial).seq for r in store.pending(10)] == [1, 3]
    assert store.count() == 4  # delivered readings stay in the history
    store.mark_delivered([rows[0].rowid])  # again: harmless
    store.mark_delivered([])
    store.mark_delivered(iter([rows[1].rowid, rows[3].rowid]))  # any iterable
    assert store.outbox_depth() == 0
    assert store.pending(10) == []


def test_outbox_depth(store: Store) -> None:
    assert store.outbox_depth() == 0
    for seq in range(3):
        store.add(make(seq))
    assert store.outbox_depth() == 3


# --- latest / resume_point / readings -----------------------------------------------------------


def test_latest_by_measured_time_not_insertion(store: Store) -> None:
    newest = make(3, minutes=30)
    store.add(newest)
    store.add(make(1, minutes=0))  # a backfill arriving after the live reading
    store.add(make(2, minutes=10))
    store.add(make(9, minutes=60, device="other"))
    assert store.latest("cgm1") == newest
    assert store.resume_point("cgm1") == ResumePoint("SN-cgm1", "s1", 3, newest.time)


def test_latest_and_resume_point_of_unknown_device(store: Store) -> None:
    store.add(make(0))
    assert store.latest("nobody") is None
    assert store.resume_point("nobody") is None


def test_resume_point_follows_new_session(store: Store) -> None:
    store.add(make(500, minutes=0, session="s1"))
    store.add(make(0, minutes=10, session="s2"))
    point = store.resume_point("cgm1")
    assert point is not None
    assert (point.session, point.seq) == ("s2", 0)


def test_readings_window(store: Store) -> None:
    for seq in range(6):  # t = 0, 5, ..., 25 minutes
        store.add(make(seq))
    store.add(make(2, device="cgm2"))
    start, end = T0 + timedelta(minutes=5), T0 + timedelta(minutes=20)
    got = store.readings("cgm1", start, end)
    assert [r.seq for r in got] == [1, 2, 3]  # start inclusive, end exclusive
    assert [r.seq for r in store.readings("cgm1")] == [0, 1, 2, 3, 4, 5]
    assert [r.seq for r in store.readings("cgm1", start=T0 + timedelta(minutes=21))] == [5]
    assert [r.seq for r in store.readings("cgm1", end=T0 + timedelta(minutes=5))] == [0]
    assert [r.seq for r in store.readings("cgm2")] == [2]
    assert store.readings("nobody") == []


def test_readings_sorted_by_time(store: Store) -> None:
    for seq, minutes in [(3, 15), (1, 5), (2, 10)]:
        store.add(make(seq, minutes=minutes))
    assert [r.seq for r in store.readings("cgm1")] == [1, 2, 3]


def test_readings_round_trip_every_field(store: Store) -> None:
    r = make(
        4,
        glucose_mgdl=None,
        out_of_range="low",
        trend_mgdl_min=-2.5,
        quality_pct=80.0,
        status=("sensor_warmup",),
        backfilled=True,
    )
    store.add(r)
    (back,) = store.readings("cgm1")
    assert back == r
    assert back.id == r.id


# --- prune --------------------------------------------------------------------------------------


def test_prune(db_path: Path) -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    s = Store(db_path, retention_days=1)
    try:
        old_delivered = make(1, device="a", time=now - timedelta(days=3), received=now)
        old_pending = make(2, device="a", time=now - timedelta(days=2), received=now)
        edge = make(3, device="a", time=now - timedelta(days=1), received=now)
        fresh = make(4, device="a", time=now - timedelta(hours=1), received=now)
        for r in (old_delivered, old_pending, edge, fresh):
            s.add(r)
        s.mark_delivered([s.pending(1)[0].rowid])  # old_delivered
        assert s.outbox_depth() == 3

        assert s.prune(now) == (2, 1)
        assert s.count() == 2
        assert [r.id for r in s.readings("a")] == [edge.id, fresh.id]
        assert s.outbox_depth() == 2  # the old undelivered entry left the outbox too
        assert [decode_record(p.record, p.serial).id for p in s.pending(10)] == [edge.id, fresh.id]
        assert s.prune(now) == (0, 0)
    finally:
        s.close()


def test_prune_then_add_again_does_not_collide(db_path: Path) -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    s = Store(db_path, retention_days=1)
    try:
        s.add(make(1, time=now - timedelta(days=2), received=now))
        assert s.prune(now) == (1, 1)
        s.add(make(2, time=now, received=now))
        (row,) = s.pending(10)
        assert decode_record(row.record, row.serial).seq == 2
    finally:
        s.close()


# --- durability ---------------------------------------------------------------------------------


def test_second_store_sees_writes_while_first_is_open(store: Store, db_path: Path) -> None:
    for seq in range(3):
        store.add(make(seq))
    other = Store(db_path)
    try:
        assert other.count() == 3
        assert other.outbox_depth() == 3
        assert other.add(make(1)) is False
        assert other.add(make(3)) is True
    finally:
        other.close()
    assert store.count() == 4


def test_data_survives_close_and_reopen(db_path: Path) -> None:
    s = Store(db_path)
    readings = [make(seq) for seq in range(5)]
    for r in readings:
        s.add(r)
    s.mark_delivered([s.pending(1)[0].rowid])
    s.close()
    wal = db_path.with_name(db_path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed on close

    again = Store(db_path)
    try:
        assert again.count() == 5
        assert again.outbox_depth() == 4
        assert again.readings("cgm1") == readings
        assert again.latest("cgm1") == readings[-1]
        assert again.add(readings[0]) is False
        assert [decode_record(p.record, p.serial).seq for p in again.pending(10)] == [1, 2, 3, 4]
    finally:
        again.close()


def _messages_written(store: Store) -> int:
    rows = store.query("SELECT seq FROM sqlite_sequence WHERE name = 'messages'")
    return int(rows[0][0]) if rows else 0


def test_replace_retained_writes_nothing_when_the_same_message_waits(store: Store) -> None:
    assert store.replace_retained("t/config", b"v1") is True
    written = _messages_written(store)
    assert store.replace_retained("t/config", b"v1") is False  # unchanged: nothing written
    assert _messages_written(store) == written
    assert store.replace_retained("t/config", b"v2") is True  # changed: replaces the old one
    assert [(m.topic, m.payload) for m in store.pending_messages(10)] == [("t/config", b"v2")]
    store.delete_message(store.pending_messages(1)[0].rowid)  # delivered
    assert store.replace_retained("t/config", b"v2") is True  # no longer there: queued again
    assert store.replace_retained("other", b"v2") is True
    assert len(store.pending_messages(10)) == 2


# --- the store file deleted or replaced under the running daemon (issue 10.4) -------------------


def _stored_ids(path: Path) -> list[str]:
    """Reading ids in the file at `path`, read by a separate connection (as after a restart)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [rid for (rid,) in db.execute("SELECT id FROM readings ORDER BY rowid")]


@pytest.mark.parametrize(
    ("suffixes", "found"),
    [(("",), "deleted"), (("", "-wal", "-shm"), "deleted"), (("-wal",), "wal deleted")],
    ids=["db-only", "db-wal-and-shm", "wal-only"],
)
def test_a_deleted_store_file_is_written_back_with_everything(
    store: Store, db_path: Path, suffixes: tuple[str, ...], found: str
) -> None:
    readings = [make(seq) for seq in range(10)]
    for r in readings[:6]:
        store.add(r)
    store.mark_delivered(row.rowid for row in store.pending(3))
    assert store.ensure_file() is False  # nothing happened: two stats, nothing else
    for suffix in suffixes:
        Path(f"{db_path}{suffix}").unlink()
    with capture_logs() as logs:
        for r in readings[6:]:
            store.ensure_file()
            store.add(r)
    assert [e["found"] for e in logs if e["event"] == "store_file_replaced"] == [found]
    assert [e["log_level"] for e in logs if e["event"] == "store_file_replaced"] == ["error"]
    assert _stored_ids(db_path) == [r.id for r in readings]  # the file, not only the connection
    assert store.outbox_depth() == 7
    resume = store.resume_point("cgm1")
    assert resume is not None
    assert resume.seq == 9  # the sensors backfill from here, not from nothing
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_a_replaced_store_file_is_moved_aside_and_ours_written_back(
    store: Store, db_path: Path, tmp_path: Path
) -> None:
    for seq in range(5):
        store.add(make(seq))
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE foreign_data (x)")
        db.commit()
    other.replace(db_path)  # a new inode at the store's path
    with capture_logs() as logs:
        assert store.ensure_file() is True
    (event,) = [e for e in logs if e["event"] == "store_file_replaced"]
    assert event["found"] == "replaced"
    moved = Path(event["moved_to"])
    assert moved.name.startswith("gatewayd.db.replaced-")
    with closing(sqlite3.connect(moved)) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("foreign_data",)]
    assert len(_stored_ids(db_path)) == 5
    store.add(make(5))
    assert len(_stored_ids(db_path)) == 6


def test_the_live_path_checks_the_file_at_most_every_so_often_and_close_checks_it(
    db_path: Path,
) -> None:
    store = Store(db_path)
    store.add(make(0))
    assert store.ensure_file() is False  # a check now: the next `every` one waits
    db_path.unlink()
    assert store.ensure_file(every=3600) is False  # not looked at again so soon
    store.add(make(1))
    with capture_logs() as logs:
        store.close()  # the last look: written back before the connection goes
    assert [e["found"] for e in logs if e["event"] == "store_file_replaced"] == ["deleted"]
    assert len(_stored_ids(db_path)) == 2


def test_acknowledgements_out_of_order_survive_a_restart_without_a_resend(db_path: Path) -> None:
    store = Store(db_path)
    for seq in range(4):
        store.add(make(seq))
    rows = store.pending(10)
    store.mark_delivered([rows[1].rowid, rows[3].rowid])  # PUBACKs out of order
    assert store.published_through == 0
    store.close()
    again = Store(db_path)
    try:
        assert [r.rowid for r in again.pending(10)] == [rows[0].rowid, rows[2].rowid]
        again.mark_delivered([rows[0].rowid, rows[2].rowid])
        assert again.published_through == rows[3].rowid
        assert again.outbox_depth() == 0
    finally:
        again.close()
