"""End to end: `gatewayd run` (its own process, the installed entry point) reads the emulated
receiver through its pty symlink and publishes to a real mosquitto; the receiver is unplugged
for six readings and plugged back in. The subscriber must see every record once: 0 gaps,
0 duplicate ids, the outage backfilled."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from drivers.dexcom_receiver.emulator import ManualClock, ReceiverEmulator
from gatewayd.store.codec import json_schema
from mosquitto import Mosquitto
from subscriber import Received, Subscriber

from integration_support import DaemonProcess

pytestmark = pytest.mark.timeout(60)

OUTAGE = 6


def write_config(folder: Path, broker: Mosquitto, hub: str, path: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "mqtt-password"
    secret.write_text(broker.password + "\n")
    secret.chmod(0o600)
    config = folder / "config.toml"
    config.write_text(
        f'[hub]\nid = "{hub}"\n\n[store]\npath = "store/gatewayd.db"\n\n'
        f'[mqtt]\nurl = "{broker.url()}"\nusername = "{broker.username}"\n'
        'password_file = "mqtt-password"\n\n[log]\nformat = "json"\nlevel = "info"\n\n'
        "[supervisor]\nbackoff_min = 0.1\nbackoff_max = 0.5\n\n"
        f'[[devices]]\ndriver = "dexcom_receiver"\nid = "rx1"\npath = "{path}"\n'
        "poll_interval = 0.1\nbackfill_hours = 1\ntimeout = 0.5\n"
    )
    return config


def readings(messages: list[Received]) -> list[Received]:
    return [m for m in messages if m.topic.endswith("/rx1/reading")]


async def test_backfill_after_an_outage_has_no_gaps_and_no_duplicates(
    broker: Mosquitto, tmp_path: Path, receiver: ReceiverEmulator, clock: ManualClock
) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    daemon = DaemonProcess(
        write_config(tmp_path / "etc", broker, hub, receiver.link), tmp_path / "daemon.log"
    )
    db = receiver.database
    first = db.newest(clock.now()) - 11  # the one-hour first-contact window: 12 records
    validator = jsonschema.Draft202012Validator(
        json_schema("reading"), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    try:
        async with Subscriber(broker, [f"gatewayd/{hub}/rx1/#"]) as sub:
            daemon.start()
            await sub.wait_for(lambda ms: len(readings(ms)) == 12, timeout=20)
            for count in (13, 14, 15):  # three live readings
                clock.advance(300)
                await sub.wait_for(lambda ms, n=count: len(readings(ms)) == n, timeout=10)

            receiver.unplug()
            await sub.wait_for(
                lambda ms: any(
                    m.topic.endswith("/status") and m.json()["state"] == "backoff" for m in ms
                ),
                timeout=10,
            )
            clock.advance(OUTAGE * 300)
            await asyncio.sleep(0.3)  # reconnect attempts keep failing while unplugged
            receiver.replug()
            await sub.wait_for(lambda ms: len(readings(ms)) == 15 + OUTAGE, timeout=15)
            clock.advance(300)
            messages = await sub.wait_for(lambda ms: len(readings(ms)) == 16 + OUTAGE, timeout=10)
        assert daemon.terminate() == 0
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(timeout=10)

    payloads = [m.json() for m in readings(messages)]
    for payload in payloads:
        validator.validate(payload)
    seqs = [p["seq"] for p in payloads]
    assert sorted(seqs) == [db.time(i) for i in range(first, first + 16 + OUTAGE)]  # 0 gaps
    assert not [i for i, n in Counter(p["id"] for p in payloads).items() if n > 1]  # 0 dupes
    outage = [p for p in payloads if p["seq"] > db.time(first + 14)][:OUTAGE]
    assert [p["backfilled"] for p in outage] == [True] * OUTAGE
    assert {p["driver"] for p in payloads} == {"dexcom_receiver"}
    stored = daemon.stored()
    assert len(stored) == len({rid for rid, *_ in stored}) == 16 + OUTAGE
