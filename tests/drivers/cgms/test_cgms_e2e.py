"""End to end, as a user runs it: `gatewayd simulate --device cgms` in one process, `gatewayd run`
(`[ble] stack = "bumble"`, `hci = "tcp-client:..."`) in another, a real mosquitto, a subscriber.

The emulated sensor holds two hours of records and makes one every 0.1 s; SIGUSR1 drops the link
and keeps the sensor away 0.5 s. Nothing is missing and nothing is stored twice.
"""

from __future__ import annotations

import signal
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from drivers.cgms.emulator.kit import FAST_SETTINGS, sibling_emulator
from mosquitto import Mosquitto
from subscriber import Received, Subscriber

from integration_support import DaemonProcess, contiguous_gaps, duplicate_keys

pytestmark = pytest.mark.timeout(60)

HUB = "hub-cgms"


def write_config(folder: Path, broker: Mosquitto, hci: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "mqtt-password"
    secret.write_text(broker.password + "\n")
    secret.chmod(0o600)
    config = folder / "config.toml"
    config.write_text(
        f'[hub]\nid = "{HUB}"\n\n[store]\npath = "store/gatewayd.db"\n\n'
        f'[mqtt]\nurl = "{broker.url()}"\nusername = "{broker.username}"\n'
        'password_file = "mqtt-password"\n\n[log]\nformat = "json"\nlevel = "info"\n\n'
        "[supervisor]\nbackoff_min = 0.2\nbackoff_max = 1.0\n\n"
        f'[ble]\nstack = "bumble"\nhci = "{hci}"\n\n'
        '[[devices]]\nid = "cgm"\ndriver = "cgms"\n'
    )
    return config


def readings(messages: list[Received]) -> list[dict[str, object]]:
    return [m.json() for m in messages if m.topic.endswith("/reading")]


def live(messages: list[Received]) -> int:
    return sum(not r["backfilled"] for r in readings(messages))


async def test_simulated_sensor_to_the_broker_through_a_link_drop(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with sibling_emulator(FAST_SETTINGS) as (emulator, hci):
        daemon = DaemonProcess(write_config(tmp_path / "etc", broker, hci), tmp_path / "d.log")
        try:
            async with Subscriber(broker, [f"gatewayd/{HUB}/+/reading"]) as sub:
                daemon.start()
                # the sensor's memory first (two hours of records), then live records
                await sub.wait_for(lambda ms: live(ms) >= 5, timeout=30)
                before = len(readings(sub.messages))
                emulator.send_signal(signal.SIGUSR1)  # out of range for 0.5 s
                await sub.wait_for(
                    lambda ms: (
                        any(r["backfilled"] for r in readings(ms)[before:])
                        and live(ms[before:]) >= 5
                    ),
                    timeout=30,
                )
                assert daemon.terminate() == 0
                stored = daemon.stored()
                ids = {row[0] for row in stored}
                await sub.wait_for(lambda ms: ids <= {r["id"] for r in readings(ms)}, timeout=10)
                received = readings(sub.messages)
        finally:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.kill()
    assert contiguous_gaps(stored) == []
    assert duplicate_keys(stored) == []
    assert [row[3] for row in stored] == list(range(len(stored)))  # from offset 0, each once
    assert {r["id"] for r in received} == ids
    first = received[0]
    assert first["device"] == "cgm"
    assert first["seq"] == 0
    assert first["backfilled"] is True
    log = (tmp_path / "d.log").read_text()
    assert "cgms_backfill_done" in log
    assert "device_link_lost" in log


def status_of(messages: list[Received]) -> dict[str, object]:
    """The newest device status payload."""
    return next(m.json() for m in reversed(messages) if m.topic.endswith("/cgm/status"))


async def test_issue_9_one_record_damaged_in_memory_and_a_calendar_an_hour_ahead(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """227 records (0..1130 every 5 min), the one at 500 with a wrong E2E-CRC on every read,
    the sensor's calendar an hour ahead: 226 readings reach the broker, dated by the hub."""
    settings = ("interval=5", "age=1130", "damaged=[500]", "clock_skew=3600")
    async with sibling_emulator(settings) as (_emulator, hci):
        daemon = DaemonProcess(write_config(tmp_path / "etc", broker, hci), tmp_path / "d.log")
        topics = [f"gatewayd/{HUB}/+/reading", f"gatewayd/{HUB}/+/status"]
        try:
            async with Subscriber(broker, topics) as sub:
                daemon.start()
                await sub.wait_for(lambda ms: len(readings(ms)) >= 226, timeout=30)
                await sub.wait_for(
                    lambda ms: status_of(ms).get("records_unreadable") == 1, timeout=10
                )
                status = status_of(sub.messages)
                received = readings(sub.messages)
                assert daemon.terminate() == 0
        finally:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.kill()
    assert sorted(r["seq"] for r in received) == [s for s in range(0, 1131, 5) if s != 500]
    assert len({r["id"] for r in received}) == 226
    offset = status["clock_offset_s"]
    assert isinstance(offset, float)
    assert abs(offset - 3600) <= 60
    # the hub's start: the newest record (offset 1130) was made a moment before now
    newest = max(received, key=lambda r: int(str(r["seq"])))
    lag = datetime.fromisoformat(str(newest["received"])) - datetime.fromisoformat(
        str(newest["time"])
    )
    assert timedelta(0) <= lag <= timedelta(seconds=90)
    log = (tmp_path / "d.log").read_text()
    assert log.count('"record_unreadable"') == 1
    assert "records keep arriving damaged" not in log
