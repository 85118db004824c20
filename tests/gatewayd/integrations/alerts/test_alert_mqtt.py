"""Alerts end to end on a real mosquitto: store -> alerts service -> publisher -> subscriber."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from gatewayd.backoff import Backoff
from gatewayd.integrations.alerts.service import AlertService
from gatewayd.integrations.alerts.settings import Thresholds
from gatewayd.models import Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.ops.config import MqttConfig
from gatewayd.store import Store
from gatewayd.store.codec import json_schema
from mosquitto import Mosquitto
from subscriber import Received, Subscriber

pytestmark = pytest.mark.timeout(30)

SCHEMA = json_schema("alert")
ALERT = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
ACTIVE = Draft202012Validator(
    {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/active_alerts"}, format_checker=FormatChecker()
)

#: The conftest's `make_reading` fixture.
MakeReading = Callable[..., Reading]


def alerts_of(messages: list[Received]) -> list[Received]:
    return [m for m in messages if m.topic.endswith("/alert")]


def lists_of(messages: list[Received]) -> list[list[str]]:
    return [
        [a["kind"] for a in m.json()["active"]] for m in messages if m.topic.endswith("/alerts")
    ]


async def retained_list(broker: Mosquitto, topic: str) -> list[str]:
    """What a consumer that subscribes now is handed for `topic` (the retained list)."""
    async with Subscriber(broker, [topic]) as late:
        messages = await late.wait_for(lambda ms: len(ms) >= 1)
    assert messages[0].retain
    payload = messages[0].json()
    ACTIVE.validate(payload)
    return [a["kind"] for a in payload["active"]]


async def test_alerts_reach_the_broker_with_qos_1_and_a_retained_active_list(
    broker: Mosquitto, tmp_path: Path, make_reading: MakeReading
) -> None:
    hub = f"hub-{uuid.uuid4().hex[:10]}"
    store = Store(tmp_path / "store.db")
    config = MqttConfig(
        host="127.0.0.1",
        port=broker.port,
        username=broker.username,
        password=broker.password,
        client_id=f"gatewayd-{hub}",
    )
    publisher = Publisher(config, hub, store, backoff=Backoff(0.05, 0.2))
    now = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    service = AlertService(
        {"cgm1": Thresholds()}, store, publisher, publisher.topics, clock=lambda: now
    )

    def feed(reading: Reading) -> None:
        nonlocal now
        now = reading.time + timedelta(seconds=5)
        assert store.add(reading)
        publisher.notify()
        service.on_reading(reading)

    base = f"gatewayd/{hub}/cgm1"
    async with Subscriber(broker, [f"{base}/alert", f"{base}/alerts"]) as sub:
        task = asyncio.create_task(publisher.run())
        try:
            feed(make_reading(0, 100))
            feed(make_reading(5, 64))
            # The list follows its alert: once it is here, the broker retains it.
            await sub.wait_for(lambda ms: lists_of(ms)[-1:] == [["low"]])
            assert await retained_list(broker, f"{base}/alerts") == ["low"]

            feed(make_reading(10, 66))  # still low: nothing new
            feed(make_reading(15, 90))
            await sub.wait_for(lambda ms: lists_of(ms) == [[], ["low"], []])
            assert await retained_list(broker, f"{base}/alerts") == []
        finally:
            publisher.stop()
            async with asyncio.timeout(5):
                await task

    received = alerts_of(sub.messages)
    assert [(m.json()["kind"], m.json()["event"]) for m in received] == [
        ("low", "raised"),
        ("low", "cleared"),
    ]
    for message in received:
        assert message.qos == 1
        assert not message.retain
        ALERT.validate(message.json())
    assert received[0].json()["id"] == received[1].json()["id"]
    assert store.pending_messages(10) == []  # all acknowledged
    store.close()
