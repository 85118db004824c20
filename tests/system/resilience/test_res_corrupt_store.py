"""A corrupt store at start: moved aside with a clear log line, a fresh store, never a crash loop.

Unit tests on `Store(recover_corrupt=True)` (what the daemon opens), then the real thing: a
`gatewayd run` process started on a store file full of garbage, against the real mosquitto.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gatewayd.errors import CorruptStore, StoreError
from gatewayd.models import Reading
from gatewayd.store import Store
from gatewayd.store.file import is_corrupt
from mosquitto import Mosquitto
from subscriber import Subscriber

from integration_support import DaemonProcess, write_config

GARBAGE = b"this is not a database, it is what a failing SD card gave back\n" * 200
NOW = datetime.now(UTC)


def reading(seq: int) -> Reading:
    return Reading(
        device="cgm-1",
        driver="fed",
        serial="SN1",
        session="s1",
        seq=seq,
        time=NOW,
        received=NOW,
        glucose_mgdl=100.0,
    )


def corrupt_files(folder: Path) -> list[Path]:
    """The moved-aside stores (without their -wal / -shm companions)."""
    found = folder.glob("gatewayd.db.corrupt-*")
    return sorted(p for p in found if not p.name.endswith(("-wal", "-shm")))


def test_garbage_is_moved_aside_for_a_fresh_store(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    path.write_bytes(GARBAGE)
    Path(f"{path}-wal").write_bytes(b"garbage wal")
    with capture_logs() as logs:
        store = Store(path, recover_corrupt=True)
    try:
        assert store.add(reading(0))
        assert store.count() == 1
    finally:
        store.close()
    moved = corrupt_files(tmp_path)
    assert len(moved) == 1, moved
    assert moved[0].read_bytes() == GARBAGE  # kept as it was, for `sqlite3 .recover`
    assert Path(f"{moved[0]}-wal").read_bytes() == b"garbage wal"  # its WAL goes with it
    (event,) = [e for e in logs if e["event"] == "store_corrupt_moved_aside"]
    assert event["log_level"] == "error"
    assert event["moved_to"] == str(moved[0])
    assert "not a database" in event["error"]


def test_damaged_pages_are_found_by_quick_check(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    store = Store(path, synchronous="off")  # fast to fill; durability is not the point here
    for seq in range(2000):
        store.add(reading(seq))
    store.close()
    data = bytearray(path.read_bytes())
    data[5 * 4096 : 5 * 4096 + 2000] = b"\x5a" * 2000  # a torn write inside the tables
    path.write_bytes(bytes(data))
    store = Store(path, recover_corrupt=True)
    try:
        assert store.count() == 0
    finally:
        store.close()
    assert len(corrupt_files(tmp_path)) == 1


def test_without_recovery_a_corrupt_store_is_an_error_and_left_alone(tmp_path: Path) -> None:
    # What every command but the daemon opens: it must never move the daemon's file.
    path = tmp_path / "gatewayd.db"
    path.write_bytes(GARBAGE)
    with pytest.raises(StoreError, match="not a database"):
        Store(path)
    assert path.read_bytes() == GARBAGE
    assert corrupt_files(tmp_path) == []


def test_a_healthy_store_is_opened_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    store = Store(path)
    store.add(reading(0))
    store.close()
    store = Store(path, recover_corrupt=True)
    try:
        assert store.count() == 1
    finally:
        store.close()
    assert corrupt_files(tmp_path) == []


def _error(cls: type[sqlite3.Error], message: str, code: int) -> sqlite3.Error:
    exc = cls(message)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    ("exc", "corrupt"),
    [
        (_error(sqlite3.DatabaseError, "file is not a database", sqlite3.SQLITE_NOTADB), True),
        (_error(sqlite3.DatabaseError, "malformed", sqlite3.SQLITE_CORRUPT), True),
        (CorruptStore("quick_check: row 3 missing from index"), True),
        (_error(sqlite3.OperationalError, "database is locked", sqlite3.SQLITE_BUSY), False),
        (_error(sqlite3.OperationalError, "database or disk is full", sqlite3.SQLITE_FULL), False),
        (_error(sqlite3.OperationalError, "unable to open", sqlite3.SQLITE_CANTOPEN), False),
        (_error(sqlite3.OperationalError, "readonly", sqlite3.SQLITE_READONLY), False),
        (_error(sqlite3.OperationalError, "disk I/O error", sqlite3.SQLITE_IOERR), False),
    ],
)
def test_only_a_damaged_file_counts_as_corrupt(exc: sqlite3.Error, *, corrupt: bool) -> None:
    assert is_corrupt(exc) is corrupt


@pytest.mark.timeout(60)
async def test_the_daemon_starts_on_a_corrupt_store_and_publishes(
    broker: Mosquitto, tmp_path: Path
) -> None:
    hub = f"hub-res-{tmp_path.name[-8:]}"
    config = write_config(tmp_path / "etc", broker, {"cgm-1": "interval = 0.2\nseed = 7"}, hub=hub)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    store = daemon.store_path
    store.parent.mkdir(mode=0o700, parents=True)
    store.write_bytes(GARBAGE)
    try:
        for run in (1, 2):
            async with Subscriber(broker, [f"gatewayd/{hub}/+/reading"]) as sub:
                daemon.start()
                await sub.wait_for(lambda ms: len(ms) >= 3, timeout=20)
            assert daemon.process is not None
            assert daemon.process.poll() is None
            assert daemon.terminate() == 0
            moved = corrupt_files(store.parent)
            assert len(moved) == 1, f"run {run}: {moved}"  # the second start moves nothing
            assert moved[0].read_bytes() == GARBAGE
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.kill()
    events = [json.loads(line) for line in daemon.log_path.read_text().splitlines() if "{" in line]
    moves = [e for e in events if e.get("event") == "store_corrupt_moved_aside"]
    assert len(moves) == 1
    assert moves[0]["level"] == "error"
    assert moves[0]["moved_to"] == str(corrupt_files(store.parent)[0])
