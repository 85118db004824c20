"""`gatewayd status`: the store read-only, with and without a daemon holding it; `--broker`."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatewayd.cli import status as status_command
from gatewayd.cli.status import age_text, run_status
from gatewayd.models import Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.ops.config import load
from gatewayd.store import Store
from mosquitto import Mosquitto, free_port
from polling import wait_until

from integration_support import DaemonProcess, write_config

GATEWAYD = str(Path(sys.executable).parent / "gatewayd")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SERIAL = "SIMBEEF0042"


@pytest.fixture
def daemon_factory_ops(broker: Mosquitto, tmp_path: Path) -> Iterator[DaemonProcess]:
    """A `gatewayd run` for one simulated CGM replaying an hour in ~3 s; killed after the test."""
    config = write_config(
        tmp_path / "hub",
        broker,
        {"sim-a": "interval = 60\nhistory = 3600\nspeed = 1200"},
        hub=f"hub-status-{uuid.uuid4().hex[:8]}",
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    yield daemon
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.process.kill()
        daemon.process.wait(timeout=10)


def make_config(folder: Path, *, url: str = "mqtt://127.0.0.1:1", privacy: str = "normal") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(
        '[hub]\nid = "hub-st"\n[store]\npath = "gatewayd.db"\n'
        f'[mqtt]\nurl = "{url}"\n[log]\nprivacy = "{privacy}"\n'
        '[[devices]]\ndriver = "simulator"\nid = "cgm-1"\n'
        '[[devices]]\ndriver = "simulator"\nid = "cgm-2"\n'
        '[[devices]]\ndriver = "simulator"\nid = "old"\nenabled = false\n'
    )
    return path


def reading(device: str, seq: int, at: datetime, mgdl: float | None = 120.0) -> Reading:
    return Reading(
        device,
        "simulator",
        SERIAL,
        device,
        seq,
        at,
        at + timedelta(seconds=2),
        mgdl,
        out_of_range=None if mgdl is not None else "low",
    )


def fill(path: Path) -> Store:
    """cgm-1: 30 h of readings every 10 min, newest 7 min before NOW, the last 4 undelivered;
    `gone`: one reading of a device no longer configured, out of range."""
    store = Store(path)
    for seq in range(180):
        store.add(reading("cgm-1", seq, NOW - timedelta(minutes=7 + 10 * (179 - seq)), 100 + seq))
    store.mark_delivered(r.rowid for r in store.pending(176))
    store.add(reading("gone", 0, NOW - timedelta(days=2), None))
    store.mark_delivered(r.rowid for r in store.pending(10) if r.device == "gone")
    return store


def status(path: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    fmt = "json" if "json" in args else "text"
    code = run_status(path, fmt=fmt, broker="broker" in args, timeout=2.0, out=out, now=lambda: NOW)
    return code, out.getvalue()


def test_text_with_no_daemon(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    fill(tmp_path / "gatewayd.db").close()
    code, text = status(path)
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == f"hub hub-st  store {tmp_path / 'gatewayd.db'}  181 readings"
    assert lines[1] == "outbox: 4 readings, 0 messages, oldest received 36 min ago"
    header, cgm1, cgm2, old, gone = lines[2:]
    assert header.split() == [
        "DEVICE",
        "LAST",
        "READING",
        "(UTC)",
        "AGE",
        "GLUCOSE",
        "24H",
        "OUTBOX",
    ]
    assert cgm1.split() == [
        "cgm-1",
        "2026-03-01",
        "11:53:00Z",
        "7",
        "min",
        "279",
        "mg/dL",
        "144",
        "4",
    ]
    assert cgm2.split() == ["cgm-2", "—", "—", "—", "0", "0"]
    assert old.split() == ["old", "(disabled)", "—", "—", "—", "0", "0"]
    assert gone.startswith("gone (not configured)")
    assert gone.split()[3:] == ["2026-02-27", "12:00:00Z", "2", "d", "0", "h", "LOW", "0", "0"]
    assert SERIAL not in text


def test_json_and_strict_privacy(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    fill(tmp_path / "gatewayd.db").close()
    _, text = status(path, "json")
    document = json.loads(text)
    first = document["devices"][0]
    assert first == {
        "device": "cgm-1",
        "driver": "simulator",
        "configured": True,
        "enabled": True,
        "last_time": "2026-03-01T11:53:00.000Z",
        "last_received": "2026-03-01T11:53:02.000Z",
        "age_s": 420.0,
        "readings_24h": 144,
        "outbox": 4,
        "glucose_mgdl": 279,
        "glucose_mmoll": 15.5,
        "out_of_range": None,
    }
    assert document["outbox"] == {
        "readings": 4,
        "messages": 0,
        "oldest_received": "2026-03-01T11:23:02.000Z",
    }
    assert document["broker"] is None
    strict = make_config(tmp_path, privacy="strict")
    _, text = status(strict, "json")
    document = json.loads(text)
    assert document["privacy"] == "strict"
    assert all("glucose_mgdl" not in d and "out_of_range" not in d for d in document["devices"])
    _, text = status(strict)
    row = next(line for line in text.splitlines() if line.startswith("cgm-1 "))
    assert "279" not in row.split()  # (the store's path may hold any number: only the row counts)
    assert "hidden" in row.split()
    assert SERIAL not in text


def test_while_a_writer_holds_the_store(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    store = fill(tmp_path / "gatewayd.db")
    try:
        with store.transaction() as db:  # a write in progress (BEGIN IMMEDIATE held)
            db.execute(  # the daemon's published mark passing every reading
                "UPDATE meta SET value = (SELECT max(rowid) FROM readings) "
                "WHERE key = 'published_through'"
            )
            code, text = status(path)  # sees the last committed state, does not wait
        assert code == 0
        assert "outbox: 4 readings" in text
        code, text = status(path)
        assert "outbox: 0 readings" in text
    finally:
        store.close()


def test_missing_store_is_one_line_exit_1(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
    done = subprocess.run(
        [GATEWAYD, "status", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"gatewayd: store {tmp_path / 'gatewayd.db'} does not exist yet")
    assert not (tmp_path / "gatewayd.db").exists()  # status never creates it


def test_broker_unreachable_exit_1_table_still_printed(tmp_path: Path) -> None:
    path = make_config(tmp_path, url=f"mqtt://127.0.0.1:{free_port()}")
    fill(tmp_path / "gatewayd.db").close()
    code, text = status(path, "broker")
    assert code == 1
    assert "broker: mqtt://127.0.0.1:" in text
    assert "refused the connection" in text
    assert "cgm-1" in text


async def test_real_daemon_running_then_stopped(
    broker: Mosquitto, tmp_path: Path, daemon_factory_ops: DaemonProcess
) -> None:
    daemon = daemon_factory_ops
    daemon.start()
    await wait_until(lambda: _stored(daemon) >= 5, 8, "readings in the store")
    done = _cli(daemon.config, "--broker", "--format", "json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["broker"]["hub"] == "online"
    assert document["broker"]["error"] is None
    first = document["devices"][0]
    assert first["device"] == "sim-a"
    assert first["link"]["state"] == "connected"
    assert first["link"]["records_unreadable"] == 0
    assert first["link"]["clock_offset_s"] is None  # the simulator's clock is the hub's
    assert first["readings_24h"] >= 5
    text = _cli(daemon.config, "--broker").stdout
    assert text.splitlines()[2] == f"broker {broker.url()}: hub online"
    assert daemon.terminate() == 0
    after = _cli(daemon.config, "--broker")
    assert after.returncode == 0
    assert f"broker {broker.url()}: hub offline" in after.stdout
    assert "stopped: gateway stopped" in after.stdout


def _stored(daemon: DaemonProcess) -> int:
    try:
        return len(daemon.stored())
    except sqlite3.OperationalError:  # the daemon is still creating the store
        return 0


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEWAYD, "status", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_link_column_shows_the_device_clock_and_unreadable_records() -> None:
    link = {"state": "connected", "reason": None, "clock_offset_s": -3600.0}
    assert status_command._link(link) == "connected; device clock -3600 s"
    link |= {"records_unreadable": 2}
    assert status_command._link(link) == "connected; device clock -3600 s; 2 records unreadable"
    assert status_command._link({"state": "connected", "records_unreadable": 0}) == "connected"


def test_age_text() -> None:
    assert [age_text(s) for s in (-3, 0, 59, 60, 3599, 3600, 7500, 86400, 200000)] == [
        "0 s",
        "0 s",
        "59 s",
        "1 min",
        "59 min",
        "1 h 0 min",
        "2 h 5 min",
        "1 d 0 h",
        "2 d 7 h",
    ]


async def test_broker_link_shows_the_reason_and_the_next_attempt(tmp_path: Path) -> None:
    """While the broker is away the daemon leaves its view beside the store: `gatewayd status`
    shows why the link is down and when (and to which URL) the next attempt goes (issue 10.7)."""
    port = free_port()  # nothing listens: every attempt is refused
    path = make_config(tmp_path, url=f"mqtt://127.0.0.1:{port}")
    cfg = load(path)
    mqtt = dataclasses.replace(cfg.mqtt, backoff_min=20.0, backoff_max=25.0)
    store = Store(cfg.store.path)
    publisher = Publisher(mqtt, cfg.hub.id, store)
    task = asyncio.create_task(publisher.run())
    try:
        await wait_until(lambda: publisher.reconnects >= 1, 5, "a failed attempt")
        await wait_until(lambda: "next attempt" in _status_now(path)[1], 5, "the state file")
        before = datetime.now(UTC)
        code, text = _status_now(path)
        assert code == 0
        (line,) = [x for x in text.splitlines() if x.startswith("broker link: ")]
        assert line.startswith("broker link: unavailable since ")
        assert "refused" in line.lower()
        assert line.endswith(f"to mqtt://127.0.0.1:{port}")
        assert "(in " in line
        document = json.loads(_status_now(path, "json")[1])["broker_link"]
        assert document["state"] == "unavailable"
        due = datetime.fromisoformat(document["next_attempt"])
        # The first retry waits backoff_min jittered into [min/2, min].
        assert before - timedelta(seconds=1) < due < before + timedelta(seconds=21)
    finally:
        publisher.stop()
        async with asyncio.timeout(5):
            await task
        store.close()
    code, text = _status_now(path)
    assert "broker link: stopped at " in text


def _status_now(path: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    fmt = "json" if "json" in args else "text"
    code = run_status(path, fmt=fmt, broker="broker" in args, timeout=2.0, out=out)
    return code, out.getvalue()


async def test_broker_view_reads_the_node_the_daemon_reached(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Two URLs, the first down: `--broker` asks the node the daemon is connected to."""
    down = f"mqtt://127.0.0.1:{free_port()}"
    path = make_config(tmp_path, url=down)
    secret = tmp_path / "pw"
    secret.write_text(broker.password + "\n")
    secret.chmod(0o600)
    path.write_text(
        path.read_text().replace(
            f'url = "{down}"',
            f'url = ["{down}", "{broker.url()}"]\nusername = "{broker.username}"\n'
            'password_file = "pw"',
        )
    )
    cfg = load(path)
    store = Store(cfg.store.path)
    publisher = Publisher(dataclasses.replace(cfg.mqtt, backoff_min=0.05), cfg.hub.id, store)
    task = asyncio.create_task(publisher.run())
    try:
        await asyncio.wait_for(publisher.connected.wait(), 10)
        code, text = await asyncio.to_thread(_status_now, path, "broker")
    finally:
        publisher.stop()
        async with asyncio.timeout(5):
            await task
        store.close()
    assert code == 0, text
    assert f"broker {broker.url()}: hub online" in text
    assert f"broker link: connected to {broker.url()} since " in text
