"""Service extension points: config sections, the message outbox, subscriptions, listeners."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gatewayd.backoff import Backoff
from gatewayd.errors import ConfigError
from gatewayd.models import Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.ops.config import MqttConfig, parse
from gatewayd.store import Store
from mosquitto import Mosquitto
from subscriber import Subscriber

BASE = {"hub": {"id": "hub-s"}}


def test_service_tables_are_kept_raw_and_read_with_file_and_key() -> None:
    config = parse(
        {
            **BASE,
            "alerts": {"low": 65},
            "devices": [{"driver": "simulator", "id": "d1", "interval": 60, "alerts": {"low": 75}}],
        },
        Path("/etc/gw.toml"),
    )
    device = config.devices[0]
    assert dict(device.options) == {"interval": 60}  # the driver never sees `alerts`
    top = config.section("alerts")
    assert top is not None
    assert top.number("low") == 65
    per_device = config.device_section(device, "alerts")
    assert per_device is not None
    assert per_device.number("low") == 75
    assert config.section("nightscout") is None
    assert config.device_section(device, "nightscout") is None
    with pytest.raises(ConfigError) as caught:
        per_device.number("high")
    assert "/etc/gw.toml: devices[0].alerts.high: is required" in str(caught.value)


def test_a_service_table_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"alerts: must be a table"):
        parse({**BASE, "alerts": 3})


def _reading(seq: int) -> Reading:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Reading(
        device="d1",
        driver="t",
        serial="S",
        session="s",
        seq=seq,
        time=now,
        received=now,
        glucose_mgdl=100,
    )


def test_messages_outbox_is_durable_ordered_and_transactional(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.ensure_schema("CREATE TABLE IF NOT EXISTS svc (k TEXT PRIMARY KEY, v TEXT)")
    store.add_message("a/1", b"one", retain=False)
    with store.transaction() as db:
        db.execute("INSERT INTO svc VALUES ('x', 'y')")
        store.add_message("a/2", b"two", retain=True, db=db)

    def fail_inside_transaction() -> None:
        with store.transaction() as db:
            store.add_message("a/3", b"never", retain=False, db=db)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        fail_inside_transaction()
    store.close()

    reopened = Store(tmp_path / "s.db")
    pending = reopened.pending_messages(10)
    assert [(m.topic, m.payload, m.retain) for m in pending] == [
        ("a/1", b"one", False),
        ("a/2", b"two", True),
    ]
    assert reopened.query("SELECT v FROM svc WHERE k = ?", ("x",)) == [("y",)]
    reopened.delete_message(pending[0].rowid)
    assert [m.topic for m in reopened.pending_messages(10)] == ["a/2"]


async def test_publisher_drains_messages_and_dispatches_subscriptions(
    broker: Mosquitto, tmp_path: Path
) -> None:
    store = Store(tmp_path / "s.db")
    config = MqttConfig(
        host="127.0.0.1",
        port=broker.port,
        username=broker.username,
        password=broker.password,
        client_id="svc-test",
    )
    publisher = Publisher(config, "hub-s", store, backoff=Backoff(0.05, 0.2))
    got: list[tuple[str, bytes]] = []
    seen = asyncio.Event()

    def handler(topic: str, payload: bytes) -> None:
        got.append((topic, payload))
        seen.set()

    def broken(_topic: str, _payload: bytes) -> None:
        raise ValueError("a broken handler must not take the link down")

    publisher.subscribe("other/status", broken)
    publisher.subscribe("ha/#", handler)
    store.add(_reading(1))
    store.add_message("gatewayd/hub-s/d1/summary", b'{"n":1}', retain=True)
    async with Subscriber(broker, ["gatewayd/hub-s/#"]) as sub:
        task = asyncio.create_task(publisher.run())
        await publisher.connected.wait()
        await sub.wait_for(lambda ms: any(m.topic.endswith("/summary") for m in ms))
        await sub.wait_for(lambda ms: any(m.topic.endswith("/reading") for m in ms))
        async with Subscriber(broker, []) as sender:
            await sender._client.publish("other/status", b"boom", qos=1)
            await sender._client.publish("ha/status", b"online", qos=1)
            await asyncio.wait_for(seen.wait(), 10)
        assert got == [("ha/status", b"online")]
        assert publisher.connected.is_set()
        publisher.stop()
        await task
    assert store.pending_messages(10) == []
    store.close()
