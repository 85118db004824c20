"""The alerts service on a real store: what it queues, and what a restart does to it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from structlog.testing import capture_logs

from gatewayd.integrations.alerts.service import AlertService
from gatewayd.integrations.alerts.settings import Thresholds
from gatewayd.models import Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.mqtt.topics import Topics
from gatewayd.ops.config import MqttConfig
from gatewayd.store import Store
from gatewayd.store.codec import json_schema

pytestmark = pytest.mark.timeout(20)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)  # the conftest's T0
TOPICS = Topics("gatewayd", "hub1")
SCHEMA = json_schema("alert")
ALERT = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
ACTIVE = Draft202012Validator(
    {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/active_alerts"}, format_checker=FormatChecker()
)

#: The conftest's `make_reading` fixture.
MakeReading = Callable[..., Reading]


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Hub:
    """A store file, and the alerts service of each (re)start on it."""

    def __init__(self, path: Path, clock: Clock, thresholds: Thresholds | None = None) -> None:
        self.path = path
        self.clock = clock
        self.thresholds = thresholds or Thresholds()
        self.store: Store | None = None
        self.service: AlertService | None = None

    def start(self) -> AlertService:
        self.stop()
        self.store = Store(self.path)
        publisher = Publisher(MqttConfig(), "hub1", self.store)
        self.service = AlertService(
            {"cgm1": self.thresholds}, self.store, publisher, TOPICS, clock=self.clock
        )
        return self.service

    def stop(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def feed(self, reading: Reading, *, notify: bool = True) -> None:
        """What the supervisor does: store the reading, then tell the listeners."""
        assert self.store is not None
        assert self.service is not None
        self.clock.now = max(self.clock.now, reading.time + timedelta(seconds=5))
        if self.store.add(reading) and notify:
            self.service.on_reading(reading)

    def messages(self) -> list[tuple[str, dict[str, Any], bool]]:
        assert self.store is not None
        return [
            (m.topic, json.loads(m.payload), m.retain) for m in self.store.pending_messages(1000)
        ]

    def events(self) -> list[tuple[str, str]]:
        return [(p["kind"], p["event"]) for t, p, _ in self.messages() if t.endswith("/alert")]

    def lists(self) -> list[list[str]]:
        return [
            [a["kind"] for a in p["active"]] for t, p, _ in self.messages() if t.endswith("/alerts")
        ]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    made = Hub(tmp_path / "store.db", Clock(at(0)))
    yield made
    made.stop()


def test_a_low_queues_one_alert_and_the_retained_list(hub: Hub, make_reading: MakeReading) -> None:
    hub.start()
    hub.feed(make_reading(0, 100))
    hub.feed(make_reading(5, 65, -0.5))
    messages = hub.messages()
    assert [(topic, retain) for topic, _, retain in messages] == [
        ("gatewayd/hub1/cgm1/alerts", True),  # at start: the (empty) list, for a fresh broker
        ("gatewayd/hub1/cgm1/alert", False),
        ("gatewayd/hub1/cgm1/alerts", True),
    ]
    for topic, payload, _ in messages:
        (ALERT if topic.endswith("/alert") else ACTIVE).validate(payload)
    _, alert, _ = messages[1]
    assert alert["schema"] == "gatewayd/alert/1"
    assert alert["hub"] == "hub1"
    assert alert["device"] == "cgm1"
    assert (alert["kind"], alert["event"], alert["severity"]) == ("low", "raised", "warning")
    assert (alert["glucose_mgdl"], alert["glucose_mmoll"], alert["threshold"]) == (65, 3.6, 70)
    assert alert["time"] == alert["raised_at"] == "2026-03-01T08:05:00.000Z"
    assert alert["reading_id"] == make_reading(5, 65).id
    assert alert["message"] == "Low: 65 mg/dL (below 70 mg/dL)"
    assert hub.lists() == [[], ["low"]]
    assert messages[2][1]["active"][0]["id"] == alert["id"]


def test_restart_mid_alert_neither_repeats_the_raise_nor_loses_the_clear(
    hub: Hub, make_reading: MakeReading
) -> None:
    hub.start()
    for minute, value in ((0, 100), (5, 65), (10, 62)):
        hub.feed(make_reading(minute, value))
    hub.stop()

    restarted = hub.start()
    assert [a.kind.value for a in restarted.state("cgm1").active] == ["low"]
    for minute, value in ((15, 60), (20, 72), (25, 80), (30, 90)):
        hub.feed(make_reading(minute, value))
    assert hub.events() == [("low", "raised"), ("low", "cleared")]
    ids = {p["id"] for t, p, _ in hub.messages() if t.endswith("/alert")}
    assert len(ids) == 1
    # start, raise, restart (the list again, still active), clear
    assert hub.lists() == [[], ["low"], ["low"], []]


def test_a_reading_stored_just_before_a_crash_is_judged_once_after_it(
    hub: Hub, make_reading: MakeReading
) -> None:
    hub.start()
    hub.feed(make_reading(0, 100))
    hub.feed(make_reading(5, 62), notify=False)  # stored, then the process died
    hub.stop()
    hub.start()
    assert hub.events() == [("low", "raised")]
    hub.stop()
    hub.start()
    assert hub.events() == [("low", "raised")]


def test_old_history_raises_nothing_when_alerts_are_turned_on(
    hub: Hub, make_reading: MakeReading
) -> None:
    hub.store = Store(hub.path)
    for minute in range(0, 60, 5):
        hub.store.add(make_reading(minute, 45))  # an hour of lows, two hours ago
    hub.clock.now = at(175)
    service = hub.start()
    assert hub.events() == []
    service.tick()
    assert hub.events() == [("signal_loss", "raised")]
    payload = hub.messages()[-2][1]
    assert payload["time"] == "2026-03-01T09:15:00.000Z"  # the newest reading (08:55) + 20 min
    assert payload["message"] == "No readings: none for 20 min"


def test_readings_stored_while_alerts_were_off_raise_no_old_alerts(
    hub: Hub, make_reading: MakeReading
) -> None:
    hub.start()
    hub.feed(make_reading(0, 100))
    hub.stop()
    store = Store(hub.path)  # the daemon ran for hours without the alerts service
    for minute in range(5, 300, 5):
        store.add(make_reading(minute, 45 if minute < 200 else 110))
    store.close()
    hub.clock.now = at(301)
    service = hub.start()
    assert hub.events() == []
    latest = service.state("cgm1").latest
    assert latest is not None
    assert latest.time == at(295)


def test_backfilled_old_lows_after_live_data_raise_nothing(
    hub: Hub, make_reading: MakeReading
) -> None:
    hub.start()
    for minute in range(60, 125, 5):
        hub.feed(make_reading(minute, 110))
    for minute in range(0, 60, 5):
        hub.feed(make_reading(minute, 48, backfilled=True))
    assert hub.events() == []


def test_readings_of_other_devices_are_ignored(hub: Hub, make_reading: MakeReading) -> None:
    hub.start()
    hub.feed(make_reading(0, 40, device="other"))
    assert hub.events() == []


def test_reminders_are_queued_by_the_clock(hub: Hub, make_reading: MakeReading) -> None:
    hub.thresholds = Thresholds(signal_loss_minutes=600)
    service = hub.start()
    hub.feed(make_reading(0, 50))
    hub.feed(make_reading(5, 50))
    hub.clock.now = at(29)
    service.tick()
    hub.clock.now = at(30.5)
    service.tick()
    hub.clock.now = at(31)
    service.tick()
    assert hub.events() == [
        ("urgent_low", "raised"),
        ("low", "raised"),
        ("urgent_low", "reminder"),
        ("low", "reminder"),
    ]
    reminder = [p for t, p, _ in hub.messages() if t.endswith("/alert")][2]
    ALERT.validate(reminder)
    assert reminder["message"] == "Urgent low (still on): 50 mg/dL (below 54 mg/dL)"
    assert reminder["raised_at"] == "2026-03-01T08:00:00.000Z"
    assert hub.lists() == [[], ["urgent_low", "low"]]  # reminders do not change the list


async def test_run_ticks_until_cancelled(hub: Hub, make_reading: MakeReading) -> None:
    service = hub.start()
    service.tick_seconds = 0.01
    hub.feed(make_reading(0, 100))
    hub.clock.now = at(25)
    task = asyncio.create_task(service.run())
    deadline = time.monotonic() + 10
    while ("signal_loss", "raised") not in hub.events():
        assert time.monotonic() < deadline, "no tick raised signal loss"
        await asyncio.sleep(0.005)  # polling a condition with a deadline
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hub.events() == [("signal_loss", "raised")]


def test_an_unreadable_saved_state_is_logged_and_rebuilt(
    hub: Hub, make_reading: MakeReading
) -> None:
    hub.start()
    hub.feed(make_reading(0, 60))
    assert hub.store is not None
    with hub.store.transaction() as db:
        db.execute("UPDATE alert_state SET state = '{\"version\": 99}'")
    hub.stop()
    hub.clock.now = at(2)
    with capture_logs() as logs:
        service = hub.start()
    assert any(e["event"] == "alert_state_unreadable" for e in logs)
    assert [a.kind.value for a in service.state("cgm1").active] == ["low"]
