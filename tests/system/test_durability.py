"""Nothing that reached the hub is lost: not across a broker outage, not across `kill -9`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from mosquitto import Mosquitto
from polling import wait_until
from subscriber import Received, Subscriber

from integration_support import DaemonProcess, contiguous_gaps, duplicate_keys, write_config

pytestmark = pytest.mark.timeout(150)

# Real time, four readings a second per device, with lost notifications and dropouts.
STEADY = "interval = 0.25\nmissed_rate = 0.02\ndropout_rate = 0.01\ndropout_readings = 2\n"
HUB = "hub-durable"
DEVICES = ("cgm-a", "cgm-b")
SUBSCRIBER = "durability-check"


def _first_arrivals(messages: list[Received]) -> dict[str, list[tuple[str, int]]]:
    """Per device, (session, seq) of each reading id in the order it first arrived."""
    seen: set[str] = set()
    order: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for message in messages:
        if not message.topic.endswith("/reading"):
            continue
        payload = message.json()
        if payload["id"] in seen:
            continue
        seen.add(payload["id"])
        order[payload["device"]].append((payload["session"], payload["seq"]))
    return order


async def test_broker_outage_then_daemon_kill_loses_nothing(
    tmp_path: Path, daemon_factory: Callable[[Path], DaemonProcess]
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", persistence=True)
    broker.start()
    try:
        config = write_config(
            tmp_path / "etc",
            broker,
            {d: STEADY + f"seed = {i}" for i, d in enumerate(DEVICES)},
            hub=HUB,
        )
        daemon = daemon_factory(config)
        topics = [f"gatewayd/{HUB}/+/reading"]
        received: list[Received] = []

        # 1. Normal running; the subscriber keeps a persistent session across the broker restart.
        async with Subscriber(broker, topics, client_id=SUBSCRIBER, persistent=True) as sub:
            daemon.start()
            await sub.wait_for(lambda ms: len(ms) >= 20)
            received += sub.messages

        # 2. The broker goes away while the sensors keep producing: readings pile up on the hub.
        broker.stop()
        before = len(daemon.stored())
        await wait_until(lambda: len(daemon.stored()) >= before + 40, 30, "readings during outage")
        assert daemon.outbox_depth() >= 30

        # 3. The broker returns; the hub replays, then is killed and restarted mid-stream.
        broker.start()
        async with Subscriber(broker, topics, client_id=SUBSCRIBER, persistent=True) as sub:
            await wait_until(daemon.outbox_drained(), 30, "outbox drained after outage")
            daemon.kill()
            after_kill = len(daemon.stored())
            daemon.start()
            await wait_until(lambda: len(daemon.stored()) >= after_kill + 20, 30, "new readings")
            await wait_until(daemon.outbox_drained(), 30, "outbox drained after kill")
            assert daemon.terminate() == 0
            stored = daemon.stored()
            stored_ids = {row[0] for row in stored}
            await sub.wait_for(
                lambda ms: stored_ids <= {m.json()["id"] for m in [*received, *ms]}, timeout=20
            )
            received += sub.messages
    finally:
        broker.stop()

    # Every stored reading arrived; the sensor sessions have no hole; no reading has two ids.
    assert contiguous_gaps(stored) == []
    assert duplicate_keys(stored) == []
    payloads = [m.json() for m in received]
    assert {p["id"] for p in payloads} == stored_ids
    # Duplicates on the wire are the same reading (same id, same content) re-sent.
    by_id: dict[str, dict[str, object]] = {}
    for payload in payloads:
        assert by_id.setdefault(payload["id"], payload)["seq"] == payload["seq"]
    # In order per device: first arrivals never go back in (session, seq).
    for device, order in _first_arrivals(received).items():
        assert order == sorted(order), f"{device} readings arrived out of order"
    assert any(p["backfilled"] for p in payloads)
