"""A real `gatewayd run` (simulator -> store -> the session's mosquitto) for a few seconds: the
broker password never appears in its output, and with `[log] privacy = "strict"` neither do the
sensor serial nor any glucose value. The `normal` run is the control: there the serial the
simulator logs at start does appear, so the strict run's silence is not an accident."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from mosquitto import Mosquitto
from polling import wait_until

from integration_support import DaemonProcess

HEALTH_KEYS = ("glucose", "sgv", "mgdl", "mmol")


def config_file(folder: Path, broker: Mosquitto, privacy: str) -> Path:
    folder.mkdir(parents=True)
    secret = folder / "mqtt-password"
    secret.write_text(broker.password + "\n")
    secret.chmod(0o600)
    path = folder / "config.toml"
    path.write_text(
        f'[hub]\nid = "hub-priv-{uuid.uuid4().hex[:8]}"\n[store]\npath = "store/gatewayd.db"\n'
        f'[mqtt]\nurl = "{broker.url()}"\nusername = "{broker.username}"\n'
        'password_file = "mqtt-password"\n'
        f'[log]\nformat = "json"\nlevel = "debug"\nprivacy = "{privacy}"\n'
        "[supervisor]\nbackoff_min = 0.2\nbackoff_max = 1.0\n"
        '[[devices]]\ndriver = "simulator"\nid = "sim-p"\ninterval = 60\nhistory = 3600\n'
        "speed = 1200\ndropout_rate = 0.05\ndropout_readings = 1\nwarmup = 0\n"
    )
    return path


def serials(store: Path) -> set[str]:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return {serial for (serial,) in db.execute("SELECT serial FROM readings")}
    finally:
        db.close()


def walk(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every (key, leaf value) of a parsed log line."""
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in walk(v, k)]
    if isinstance(value, list):
        return [kv for v in value for kv in walk(v, key)]
    return [(key, value)]


def stored(daemon: DaemonProcess) -> int:
    """Readings stored so far (0 while the daemon is still creating the store)."""
    try:
        return len(daemon.stored())
    except sqlite3.OperationalError:
        return 0


async def run_daemon(tmp_path: Path, broker: Mosquitto, privacy: str) -> tuple[str, set[str]]:
    daemon = DaemonProcess(config_file(tmp_path / privacy, broker, privacy), tmp_path / "log")
    daemon.start()
    try:
        await wait_until(lambda: stored(daemon) >= 20, 8, "20 stored readings")
        await wait_until(daemon.outbox_drained(), 5, "all delivered")
    finally:
        code = daemon.terminate()
    assert code == 0
    return daemon.log_path.read_text(), serials(daemon.store_path)


@pytest.mark.parametrize("privacy", ["normal", "strict"])
async def test_password_never_logged(broker: Mosquitto, tmp_path: Path, privacy: str) -> None:
    text, found = await run_daemon(tmp_path, broker, privacy)
    lines = [json.loads(line) for line in text.splitlines()]
    events = {line["event"] for line in lines}
    assert {"gateway_starting", "broker_connected", "device_connected", "gateway_stopped"} <= events
    assert broker.password not in text
    assert len(found) == 1
    (serial,) = found
    if privacy == "normal":
        assert serial in text  # the control: the simulator logs its serial at start
        return
    assert serial not in text
    for line in lines:
        for key, value in walk(line):
            if any(marker in key.lower() for marker in HEALTH_KEYS):
                assert value in ("<redacted>", None), (key, line)
    assert any(line.get("serial") == "<redacted>" for line in lines)
