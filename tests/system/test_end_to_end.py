"""End to end: `gatewayd run` with two simulated CGMs -> a real mosquitto -> a real subscriber."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from gatewayd.store.codec import json_schema
from mosquitto import Mosquitto
from subscriber import Received, Subscriber

from integration_support import DaemonProcess, contiguous_gaps, write_config

pytestmark = pytest.mark.timeout(90)

# One simulated day replayed at 600x: a reading every 0.1 s per device, with lost notifications
# and link dropouts often enough that backfill runs several times in every test run.
FAST = (
    "interval = 60\nspeed = 600\nhistory = 86400\n"
    "missed_rate = 0.05\ndropout_rate = 0.03\ndropout_readings = 2\n"
)
HUB = f"hub-e2e-{uuid.uuid4().hex[:8]}"  # own retained topics on the shared broker


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        json_schema(name), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def _readings_per_device(messages: list[Received]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for message in messages:
        if message.topic.endswith("/reading"):
            counts[message.topic.split("/")[2]] += 1
    return counts


async def test_two_simulators_publish_valid_readings_state_status_and_lwt(
    broker: Mosquitto, tmp_path: Path, daemon_factory: Callable[[Path], DaemonProcess]
) -> None:
    config = write_config(
        tmp_path / "etc",
        broker,
        {"cgm-a": FAST + "seed = 11", "cgm-b": FAST + "seed = 22"},
        hub=HUB,
    )
    daemon = daemon_factory(config)
    readings = _validator("reading")
    statuses = _validator("status")

    async with Subscriber(broker, [f"gatewayd/{HUB}/#"]) as live:
        daemon.start()
        await live.wait_for(
            lambda ms: min(_readings_per_device(ms).get(d, 0) for d in ("cgm-a", "cgm-b")) >= 60,
            timeout=60,
        )
        assert next(m.payload for m in live.on(f"{HUB}/status")) == b"online"
        reading_messages = live.on("/reading")
        for message in reading_messages:
            readings.validate(message.json())
            assert message.qos == 1
            assert not message.retain
        payloads = [m.json() for m in reading_messages]
        assert {p["hub"] for p in payloads} == {HUB}
        assert {p["driver"] for p in payloads} == {"simulator"}
        assert "serial" not in payloads[0]  # not published unless the config asks
        assert any(p["backfilled"] for p in payloads), "no gap was backfilled"

        # A subscriber arriving now is handed the retained hub status, states and statuses.
        async with Subscriber(broker, [f"gatewayd/{HUB}/#"]) as late:
            await late.wait_for(
                lambda ms: (
                    {m.topic for m in ms if m.retain}
                    >= {
                        f"gatewayd/{HUB}/status",
                        *(
                            f"gatewayd/{HUB}/{d}/{leaf}"
                            for d in ("cgm-a", "cgm-b")
                            for leaf in ("state", "status")
                        ),
                    }
                )
            )
            retained = {m.topic: m for m in late.messages if m.retain}
        assert retained[f"gatewayd/{HUB}/status"].payload == b"online"
        for device in ("cgm-a", "cgm-b"):
            state = retained[f"gatewayd/{HUB}/{device}/state"].json()
            readings.validate(state)
            assert state["device"] == device
            status = retained[f"gatewayd/{HUB}/{device}/status"].json()
            statuses.validate(status)
            assert status["device"] == device

        daemon.kill()
        await live.wait_for(
            lambda ms: ms[-1].topic == f"gatewayd/{HUB}/status" and ms[-1].payload == b"offline",
            timeout=10,
        )

    stored = daemon.stored()
    assert contiguous_gaps(stored) == []
    received = {p["id"] for p in payloads}
    assert received <= {row[0] for row in stored}
