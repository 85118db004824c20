"""gatewayd.store.schema: migrations of real stores, the version check, the query plans."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from tests.gatewayd.cli.test_cli import HUB, SCRIPT, one_line_error, run
from tests.gatewayd.store.test_store import T0, make

from gatewayd.errors import StoreError, StoreVersionError
from gatewayd.store import Hold, Store
from gatewayd.store.codec import READING_SCHEMA, reading_payload_json, to_record
from gatewayd.store.schema import VERSION
from gatewayd.store.view import StoreView

#: The schema of version 1, verbatim (gatewayd 0.x before the store floor).
V1_DDL = """
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


def _v1_record(seq: int, device: str = "cgm1") -> tuple[str, str, int, str]:
    reading = make(seq, device=device)
    record = json.dumps(to_record(reading), separators=(",", ":"))  # `serial` last, as in v1
    return reading.id, device, int(reading.time.timestamp() * 1000), record


def build_v1(path: Path) -> dict[str, list[int]]:
    """A v1 store as a running v1 daemon leaves it: 10 readings (rowids 1..10, 11 and 12 were
    given out and deleted), delivered 1..3 and 5 (out of order), 7 never to be published
    (`readings_time_unknown` took it out of the outbox), 9 and 10 held for the clock; two
    messages."""
    with closing(sqlite3.connect(path)) as db:
        db.executescript(V1_DDL)
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        db.execute("INSERT INTO meta VALUES ('identity/cgm1', 'kept')")
        for seq in range(12):
            db.execute(
                "INSERT INTO readings (id, device, time_ms, record) VALUES (?, ?, ?, ?)",
                _v1_record(seq, "cgm2" if seq % 4 == 3 else "cgm1"),
            )
            db.execute("INSERT INTO outbox (rowid) VALUES (?)", (seq + 1,))
        db.execute("DELETE FROM readings WHERE rowid > 10")
        db.execute("DELETE FROM outbox WHERE rowid IN (1, 2, 3, 5, 7, 11, 12)")
        db.executemany("INSERT INTO clock_hold VALUES (?, 'boot-a', ?)", [(9, 100.0), (10, 101.0)])
        db.executemany(
            "INSERT INTO messages (topic, payload, retain) VALUES (?, ?, ?)",
            [("a/alert", b"x", 0), ("a/config", b"y", 1)],
        )
        db.commit()
    return {"waiting": [4, 6, 8], "held": [9, 10]}


def test_a_v1_store_is_migrated_with_nothing_lost_and_the_outbox_order_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gatewayd.db"
    expected = build_v1(path)
    with closing(sqlite3.connect(path)) as db:
        v1_rows = db.execute("SELECT rowid, id, record FROM readings ORDER BY rowid").fetchall()
    store = Store(path)
    try:
        assert store.count() == 10
        pending = store.pending(100)
        assert [row.rowid for row in pending] == expected["waiting"]  # 7 stays unpublished
        assert store.outbox_depth() == 3
        assert [row.rowid for row in store.held()] == expected["held"]
        assert store.held()[0].hold == Hold("boot-a", 100.0)
        assert [m.topic for m in store.pending_messages(10)] == ["a/alert", "a/config"]
        assert store.meta("identity/cgm1") == "kept"
        # Every record kept; the payload on the wire is byte for byte the v1 one.
        by_rowid = {rowid: (id_, record) for rowid, id_, record in v1_rows}
        for row in pending:
            v1 = json.loads(by_rowid[row.rowid][1])
            assert row.serial == v1["serial"]
            wire = reading_payload_json(row.record, row.serial, "h", include_serial=True)
            assert (
                wire
                == json.dumps(
                    {"schema": READING_SCHEMA, "hub": "h", **v1}, separators=(",", ":")
                ).encode()
            )
        # Rowids keep growing above every one given out (11 and 12 were, by AUTOINCREMENT).
        store.release_held([(h.rowid, h.reading) for h in store.held()], [])
        assert store.add(make(50)) is True
        assert [row.rowid for row in store.pending(100)] == [4, 6, 8, 9, 10, 13]
    finally:
        store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(VERSION),
        )
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert "outbox" not in names
        assert "readings_time" not in names
        assert "sqlite_autoindex_meta_1" not in names  # v3: meta without a rowid
        assert db.execute(
            "SELECT count(*) FROM sqlite_sequence WHERE name = 'readings'"
        ).fetchone() == (0,)
        ids = [id_ for (id_,) in db.execute("SELECT id FROM readings ORDER BY rowid")]
    assert ids[:10] == [id_ for _, id_, _ in v1_rows]


def test_a_v2_store_keeps_its_meta_in_a_table_without_rowid(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    with closing(Store(path)) as store:
        for seq in range(4):
            store.add(make(seq))
        store.mark_delivered([1, 2])
    with closing(sqlite3.connect(path)) as db:  # as a v2 daemon left it: meta with a rowid
        db.execute("CREATE TABLE meta_v2 (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta_v2 SELECT key, value FROM meta")
        db.execute("DROP TABLE meta")
        db.execute("ALTER TABLE meta_v2 RENAME TO meta")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        db.commit()
        before = dict(db.execute("SELECT key, value FROM meta WHERE key != 'schema_version'"))
    with closing(Store(path)) as store:
        assert [row.rowid for row in store.pending(10)] == [3, 4]
        assert store.published_through == 2
    with closing(sqlite3.connect(path)) as db:
        after = dict(db.execute("SELECT key, value FROM meta"))
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'meta'").fetchone()
    assert after.pop("schema_version") == str(VERSION) == "3"
    assert after == before
    assert "WITHOUT ROWID" in sql


def test_a_migration_that_fails_leaves_the_v1_store_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    build_v1(path)
    with closing(sqlite3.connect(path)) as db:  # a record the migration cannot read
        db.execute("UPDATE readings SET record = 'not json' WHERE rowid = 6")
        db.commit()
    with pytest.raises(StoreError):
        Store(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "1",
        )
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (5,)
        assert db.execute("SELECT count(*) FROM readings").fetchone() == (10,)


def test_a_store_newer_than_the_code_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    Store(path).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(VERSION + 1),))
        db.commit()
    with pytest.raises(StoreVersionError) as caught:
        Store(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert f"schema version {VERSION + 1} is newer than this gatewayd's {VERSION}" in message
    with closing(sqlite3.connect(path)) as db:  # left as it was
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(VERSION + 1),
        )
    with pytest.raises(StoreError, match="schema version"):
        StoreView(path)


def test_the_daemon_refuses_a_newer_store_on_one_line_with_exit_2(tmp_path: Path) -> None:
    store_path = tmp_path / "gatewayd.db"
    Store(store_path).close()
    with closing(sqlite3.connect(store_path)) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        db.commit()
    config = tmp_path / "gatewayd.toml"
    config.write_text(
        f'{HUB}[store]\npath = "{store_path}"\n[mqtt]\nurl = "mqtt://127.0.0.1:1"\n',
        encoding="utf-8",
    )
    line = one_line_error(run((str(SCRIPT),), "run", "--config", str(config), cwd=tmp_path))
    assert str(store_path) in line
    assert f"schema version 99 is newer than this gatewayd's {VERSION}" in line


def test_rowids_never_fall_back_after_the_newest_readings_are_pruned(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    store = Store(path, retention_days=1)
    try:
        store.add(make(0))
        old = make(1, minutes=-3 * 24 * 60)  # a backfilled reading older than the retention
        store.add(old)
        top = store.pending(10)[-1].rowid
        assert store.prune(T0) == (1, 1)
    finally:
        store.close()
    store = Store(path, retention_days=1)
    try:
        store.add(make(2))
        assert store.pending(10)[-1].rowid == top + 1
    finally:
        store.close()


def test_rowids_stay_above_the_published_mark_when_everything_was_deleted(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    store = Store(path, retention_days=1)
    try:
        for seq in range(3):
            store.add(make(seq))
        rows = store.pending(10)
        store.mark_delivered(row.rowid for row in rows)
        assert store.prune(T0 + timedelta(days=5)) == (3, 0)
        store.add(make(3))
        (row,) = store.pending(10)
        assert row.rowid == rows[-1].rowid + 1
    finally:
        store.close()


def _plans(db: sqlite3.Connection, statements: list[str]) -> dict[str, str]:
    plans = {}
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "DELETE", "UPDATE")):
            continue
        rows = db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
        plans[sql] = " | ".join(str(r[-1]) for r in rows)
    return plans


def test_no_query_of_the_live_path_or_the_commands_reads_every_reading(tmp_path: Path) -> None:
    """With a year of data, a full scan of `readings` costs seconds on a Pi: every statement
    the store and the view run (but `count()`) goes through an index or a rowid range."""
    path = tmp_path / "gatewayd.db"
    store = Store(path, retention_days=90)
    statements: list[str] = []
    try:
        for seq in range(40):
            store.add(make(seq, device=f"cgm{seq % 3}"))
        store.add(make(99, device="cgm1"), hold=Hold("boot", 1.0))
        store._db.set_trace_callback(statements.append)
        rows = store.pending(10)
        store.mark_delivered([rows[0].rowid, rows[2].rowid])
        store.outbox_depth()
        store.latest("cgm1")
        store.latest("cgm1", publishable=True)
        store.latest_row("cgm1")
        store.readings("cgm1", T0, T0 + timedelta(hours=1))
        store.readings_after(0, ["cgm1", "cgm2"], 0, 10)
        store.count_after(0, ["cgm1"], 0)
        store.newest_time_ms()
        store.delete_delivered(0, 10)
        store.prune(T0 + timedelta(days=30))
        store.held()
        plans = _plans(store._db, statements)
    finally:
        store.close()
    with StoreView(path) as view:
        view._db.set_trace_callback(statements.append)
        view.waiting_by_device()
        view.oldest_waiting()
        view.devices()
        view.newest("cgm1")
        view.count_since("cgm1", T0)
        view.readings("cgm1", T0)
        plans.update(_plans(view._db, statements))
    scans = {sql: plan for sql, plan in plans.items() if "SCAN readings" in plan}
    assert scans == {}
    assert any("readings_device_time" in plan for plan in plans.values())
