"""A gateway reading the emulated meter in a sibling process, publishing to the real mosquitto.

The meter runs as `gatewayd simulate --device glucose` (its own process and radio, HCI over TCP);
the in-process `Daemon` loads the `glucose` driver through its entry point like `gatewayd run`
does, with `[ble] stack = "bumble"` pointing at the emulator's HCI socket. Test commands go to
the emulator on its stdin, one line each, answered with one line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gatewayd.daemon import Daemon, plan
from gatewayd.ops.config import parse
from mosquitto import Mosquitto
from subscriber import Received, Subscriber

pytestmark = pytest.mark.timeout(45)

SCHEMA = Path(__file__).parents[3] / "gatewayd" / "schemas" / "reading.schema.json"


class Emulator:
    """The meter process: its HCI transport and its command line."""

    def __init__(self, process: asyncio.subprocess.Process, hci: str) -> None:
        self.process = process
        self.hci = hci

    async def do(self, line: str) -> str:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()
        async with asyncio.timeout(5):
            return await answer_line(self.process.stdout)


async def answer_line(stdout: asyncio.StreamReader) -> str:
    """The next line of the emulator's protocol (anything else it may print is skipped)."""
    while line := (await stdout.readline()).decode():
        if line.startswith(("HCI ", "ok", "error")):
            return line.strip()
    raise AssertionError("the emulator exited")


@asynccontextmanager
async def meter_process(*settings: str) -> AsyncIterator[Emulator]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatewayd",
        "simulate",
        "--device",
        "glucose",
        "--hci",
        "tcp-server:127.0.0.1:0",
        "--set",
        "commands=true",
        *(f"--set={setting}" for setting in settings),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        # tracing every allocation makes start-up take ~10 s instead of ~0.4 s
        env={k: v for k, v in os.environ.items() if k != "PYTHONTRACEMALLOC"},
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(15):
            line = await answer_line(process.stdout)
        assert line.startswith("HCI "), f"the emulator did not start: {line!r}"
        yield Emulator(process, line.split()[1])
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


def daemon(tmp_path: Path, broker: Mosquitto, hub: str, hci: str) -> Daemon:
    config = parse(
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
                {"driver": "glucose", "id": "meter", "tz": "UTC", "scan_timeout": 5, "linger": 0}
            ],
        },
        tmp_path / "gatewayd.toml",
    )
    return Daemon(plan(config), flush_timeout=5.0)


@asynccontextmanager
async def running(gateway: Daemon) -> AsyncIterator[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(gateway.run(on_ready=ready.set))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield
    finally:
        gateway.stop()
        async with asyncio.timeout(15):
            await task


def readings(messages: list[Received]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic.endswith("/meter/reading")]


async def test_readings_reach_mqtt_across_link_drops_without_gaps_or_duplicates(
    tmp_path: Path, broker: Mosquitto
) -> None:
    hub = f"hub-{uuid.uuid4().hex[:10]}"
    schema = jsonschema.Draft202012Validator(
        json.loads(SCHEMA.read_text()),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    async with (
        meter_process("records=30", "close_after=0.2") as meter,
        Subscriber(broker, [f"gatewayd/{hub}/+/reading"]) as sub,
    ):
        assert await meter.do("drop-after 8") == "ok"  # the first connection breaks mid-transfer
        gateway = daemon(tmp_path, broker, hub, meter.hci)
        async with running(gateway):
            await sub.wait_for(lambda m: len(readings(m)) >= 30, timeout=30)
            # a new fingerstick result: the meter advertises, the gateway reconnects
            assert await meter.do("add 142") == "ok 31"
            assert await meter.do("high") == "ok 32"
            await sub.wait_for(lambda m: len(readings(m)) >= 32, timeout=30)
            connections = int((await meter.do("count")).split()[2])
        published = readings(sub.messages)

    assert [p["seq"] for p in published] == list(range(1, 33))  # 0 gaps, in order
    assert len({p["id"] for p in published}) == 32  # 0 duplicates by id
    assert connections >= 3  # the broken one, the rest, and the one for the new results
    for payload in published:
        schema.validate(payload)
    assert {p["driver"] for p in published} == {"glucose"}
    assert {p["session"] for p in published} == {"gls"}
    new, high = published[-2:]
    assert (new["glucose_mgdl"], new["out_of_range"]) == (142, None)
    assert (high["glucose_mgdl"], high["glucose_mmoll"], high["out_of_range"]) == (
        None,
        None,
        "high",
    )
    sample_high = published[3]  # seq 4 of the sample memory is HI
    assert sample_high["out_of_range"] == "high"
    assert sample_high["glucose_mgdl"] is None
    with_context = published[0]  # seq 1 of the sample memory: preprandial, by the person
    assert with_context["status"][:2] == ["meal_preprandial", "tester_self"]


async def test_a_meter_calendar_an_hour_ahead_is_anchored_and_a_damaged_record_passed_over(
    tmp_path: Path, broker: Mosquitto
) -> None:
    hub = f"hub-{uuid.uuid4().hex[:10]}"
    settings = ("records=12", "close_after=0.2", "current_time=true", "clock=3600", "damaged=5")
    async with (
        meter_process(*settings) as meter,
        Subscriber(broker, [f"gatewayd/{hub}/+/reading"]) as sub,
    ):
        started = datetime.now(UTC)
        gateway = daemon(tmp_path, broker, hub, meter.hci)
        async with running(gateway):
            await sub.wait_for(lambda m: len(readings(m)) >= 11, timeout=30)
            assert await meter.do("add 150") == "ok 13"
            await sub.wait_for(lambda m: len(readings(m)) >= 12, timeout=30)
            offset = gateway.supervisor.devices[0].findings.clock_offset_s
        published = readings(sub.messages)

    # seq 5 stays damaged: asked for again twice, then passed over; the rest flows in order
    assert [p["seq"] for p in published] == [1, 2, 3, 4, *range(6, 14)]
    # the meter's calendar reads an hour ahead: measured, and every record dated by the hub
    assert offset is not None
    assert abs(offset - 3600) <= 2
    newest_sample = datetime.fromisoformat(published[10]["time"])  # seq 12: taken at start
    assert abs(newest_sample - started) < timedelta(seconds=60)
    assert abs(datetime.fromisoformat(published[-1]["time"]) - datetime.now(UTC)) < timedelta(
        seconds=60
    )
    assert not [p for p in published if "device_clock_unverified" in p["status"]]


async def test_the_meter_process_obeys_signals_and_stops_on_sigterm() -> None:
    async with meter_process("records=3") as meter:
        assert await meter.do("count") == "ok 3 0"
        meter.process.send_signal(signal.SIGUSR1)  # a new result
        async with asyncio.timeout(5):
            while await meter.do("count") != "ok 4 0":
                pass
        assert (await meter.do("bogus")).startswith("error"), "unknown commands are refused"
        meter.process.terminate()
        async with asyncio.timeout(5):
            assert await meter.process.wait() == 0
