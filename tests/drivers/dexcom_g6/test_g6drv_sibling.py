"""`gatewayd simulate --device dexcom-g6` in its own process, read by the Daemon over HCI/TCP.

The emulator replays two hours at 600x (a wake-up every 0.5 s of real time) and announces the
HCI transport; the Daemon in this process reads it with `[ble] stack = "bumble"` and publishes
to the real mosquitto. SIGUSR2 makes the transmitter sleep through four wake-ups (the hub is out
of range while it measures on): the next wake-up backfills them. The hub runs on real time
while the transmitter replays, so reading times are compressed (see `drivers.dexcom_g6.serve`);
ids and completeness are what this checks: consecutive values 299-301 s apart (no measurement
missing), none twice.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from drivers.dexcom_g6 import plugin
from drivers.dexcom_g6.kit import TXID
from gatewayd.daemon import Daemon, plan
from gatewayd.ops.config import parse
from gatewayd.plugin.kit import Target, run_gateway
from gatewayd.transport.ble import BleConfig
from mosquitto import Mosquitto
from subscriber import Received, Subscriber

pytestmark = pytest.mark.timeout(40)

GATEWAYD = str(Path(sys.executable).parent / "gatewayd")  # the installed command of this venv
SETTINGS = [f"transmitter_id={TXID}", "history=7200", "speed=600", "window=5", "outage=4"]


@asynccontextmanager
async def simulate(*extra: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """The emulator process (`SETTINGS` + `extra`) and the ``tcp-client:...`` transport it
    announced."""
    args = [GATEWAYD, "simulate", "--device", "dexcom-g6", "--hci", "tcp-server:127.0.0.1:0"]
    for setting in [*SETTINGS, *extra]:
        args += ["--set", setting]
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        # tracing every allocation makes the emulator's start-up take seconds
        env={k: v for k, v in os.environ.items() if k != "PYTHONTRACEMALLOC"},
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(15):
            while not (line := (await process.stdout.readline()).decode()).startswith("HCI "):
                assert line, "the emulator exited before serving"
        yield process, line.split()[1]
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


def readings(messages: list[Received]) -> list[dict[str, Any]]:
    return [m.json() for m in messages]


async def test_gatewayd_simulate_in_a_sibling_process_backfills_a_missed_stretch(
    broker: Mosquitto, tmp_path: Path
) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    async with simulate() as (process, hci):
        cfg = parse(
            {
                "hub": {"id": hub},
                "store": {"path": str(tmp_path / "gatewayd.db")},
                "mqtt": {
                    "url": broker.url(),
                    "username": broker.username,
                    "password": broker.password,
                },
                "supervisor": {"backoff_min": 0.05, "backoff_max": 0.2},
                "ble": {"stack": "bumble", "hci": hci},
                "devices": [
                    {
                        "driver": "dexcom_g6",
                        "id": "g6",
                        "transmitter_id": TXID,
                        "history": 1500,
                        "scan_timeout": 10,
                    }
                ],
            }
        )
        daemon = Daemon(plan(cfg), flush_timeout=5.0)
        ready = asyncio.Event()
        task = asyncio.create_task(daemon.run(on_ready=ready.set))
        try:
            async with Subscriber(broker, [f"gatewayd/{hub}/g6/reading"]) as sub:
                await asyncio.wait_for(ready.wait(), 10)
                first = await sub.wait_for(lambda m: len(m) >= 7)  # history + live, one more
                process.send_signal(signal.SIGUSR2)  # the next four wake-ups are missed
                seen = len(first)
                await sub.wait_for(
                    lambda m: any(p["backfilled"] for p in readings(m[seen:])), timeout=15
                )
                await sub.wait_for(lambda m: not readings(m)[-1]["backfilled"], timeout=15)
        finally:
            daemon.stop()
            async with asyncio.timeout(10):
                await task

    published = readings(sub.messages)
    assert not [i for i, n in Counter(p["id"] for p in published).items() if n > 1]
    seqs = sorted(p["seq"] for p in published)
    assert {b - a for a, b in itertools.pairwise(seqs)} <= {299, 300, 301}  # 0 gaps
    assert {p["session"] for p in published} == {published[0]["session"]}
    after = [p for p in published[seen:] if p["backfilled"]]
    assert len(after) >= 4  # the missed stretch came from the transmitter's memory


async def test_gatewayd_simulate_with_a_damaged_record_and_disordered_backfills() -> None:
    """``--set damaged=middle --set disorder=3``: the first contact backfills the day; the
    record damaged in memory is passed over (counted once), every other one stored once."""
    async with simulate("damaged=middle", "disorder=3") as (_process, hci):
        target = Target(
            options={"transmitter_id": TXID, "scan_timeout": 10},
            ble=BleConfig(stack="bumble", hci=hci),
        )
        async with run_gateway(plugin, target, backoff=(0.05, 0.2)) as gateway:
            findings = gateway.device.findings
            await gateway.wait_until(lambda: findings.unreadable >= 1, "the damaged one", 20)
            await gateway.wait_for(gateway.count(live=True) + 2, 20, live=True)
    keys = gateway.keys()
    assert findings.unreadable == 1
    assert len(keys) == len(set(keys)) > 200  # a day's backfill (less warm-up and the bad one)
    seqs = [seq for _, seq in keys]
    assert seqs == sorted(seqs)
    gaps = sorted(b - a for a, b in itertools.pairwise(seqs))
    assert gaps[-1] in range(598, 603)  # one measurement missing: the damaged one
    assert gaps[-2] <= 301
