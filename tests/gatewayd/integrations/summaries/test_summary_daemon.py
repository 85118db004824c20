"""The real daemon with the simulator: a backfill brings a fresh retained summary, on its own."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from gatewayd.daemon import Daemon, plan
from gatewayd.ops.config import parse
from gatewayd.store.codec import json_schema
from mosquitto import Mosquitto
from subscriber import Received, Subscriber

pytestmark = pytest.mark.timeout(40)

VALIDATOR = Draft202012Validator(json_schema("summary"), format_checker=FormatChecker())


def day_counts(messages: list[Received]) -> list[int]:
    return [m.json()["windows"][0]["n"] for m in messages if m.topic.endswith("/summary")]


async def test_daemon_publishes_a_summary_after_backfill(broker: Mosquitto, tmp_path: Path) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    data: dict[str, Any] = {
        "hub": {"id": hub},
        "store": {"path": str(tmp_path / "gw.db")},
        "mqtt": {"url": broker.url(), "username": broker.username, "password": broker.password},
        "log": {"level": "warning"},
        # Only a backfill can bring a second summary within the test: the schedule is hourly.
        "summaries": {"every_minutes": 60, "backfill_delay_seconds": 0.2},
        "devices": [
            {
                "driver": "simulator",
                "id": "cgm-1",
                "interval": 60,
                "speed": 600,
                "history": 86400,
                "warmup": 0,  # no 2 h silent window that depends on the day the test runs
                "missed_rate": 0.2,  # lost notifications, backfilled before the next reading
                "seed": 5,
            }
        ],
    }
    daemon = Daemon(plan(parse(data)), flush_timeout=5.0)
    async with Subscriber(broker, [f"gatewayd/{hub}/cgm-1/summary"]) as sub:
        ready = asyncio.Event()
        task = asyncio.create_task(daemon.run(on_ready=ready.set))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await sub.wait_for(lambda ms: any(n >= 10 for n in day_counts(ms)), timeout=30)
        finally:
            daemon.stop()
            await asyncio.wait_for(task, 15)
    payloads = [m.json() for m in sub.messages]
    for payload in payloads:
        VALIDATOR.validate(payload)
    counts = day_counts(sub.messages)
    assert counts[0] < counts[-1]  # the first at start, a later one after a backfill
    assert counts == sorted(counts)
    assert payloads[-1]["windows"][0]["mean_mgdl"] is not None
