"""The Publisher against a real mosquitto: the MQTT contract, delivery guarantees, reconnects, TLS.

Volumes stay in the hundreds: mosquitto drops QoS 1 messages for a subscriber that falls more
than `max_queued_messages` (1000) behind, and our subscriber shares the publisher's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from structlog.testing import capture_logs

from gatewayd.backoff import Backoff
from gatewayd.device_status import DeviceStatus, LinkState
from gatewayd.models import Direction, Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.ops.config import MqttConfig, parse
from gatewayd.store import Store
from gatewayd.store.codec import READING_SCHEMA, json_schema
from mosquitto import Mosquitto
from mqtt_tap import Tap, tap_to
from polling import wait_until
from subscriber import Received, Subscriber

pytestmark = pytest.mark.timeout(30)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
READING_VALIDATOR = Draft202012Validator(json_schema("reading"), format_checker=FormatChecker())
STATUS_VALIDATOR = Draft202012Validator(json_schema("status"), format_checker=FormatChecker())


# -- helpers ---------------------------------------------------------------------------------


def make_reading(
    device: str, seq: int, *, minute: float | None = None, serial: str | None = None
) -> Reading:
    """A reading of `device` (its own sensor serial unless given: the id hashes the serial)."""
    measured = T0 + timedelta(minutes=5 * seq if minute is None else minute)
    return Reading(
        device=device,
        driver="testcgm",
        serial=serial or f"SN-{device}",
        session="sess-1",
        seq=seq,
        time=measured,
        received=measured + timedelta(seconds=3),
        glucose_mgdl=90.0 + seq % 50,
        trend_mgdl_min=0.4,
        direction=Direction.FLAT,
        quality_pct=98.0,
        status=("ok",),
    )


def new_hub() -> str:
    return f"hub-{uuid.uuid4().hex[:10]}"


def mqtt_config(broker: Mosquitto, hub: str, **changes: Any) -> MqttConfig:
    base = MqttConfig(
        host="127.0.0.1",
        port=broker.port,
        username=broker.username,
        password=broker.password,
        client_id=f"gatewayd-{hub}",
    )
    return replace(base, **changes)


def publisher_for(config: MqttConfig, hub: str, store: Store) -> Publisher:
    return Publisher(config, hub, store, backoff=Backoff(0.05, 0.2))


@asynccontextmanager
async def running(publisher: Publisher) -> AsyncIterator[asyncio.Task[None]]:
    """Run `publisher` for the block; stop it after and require that it returns promptly."""
    task = asyncio.create_task(publisher.run())
    try:
        yield task
    finally:
        publisher.stop()
        async with asyncio.timeout(5):
            await task


def readings_of(messages: list[Received]) -> list[Received]:
    return [m for m in messages if m.topic.endswith("/reading")]


def reading_ids(messages: list[Received]) -> list[str]:
    return [m.json()["id"] for m in readings_of(messages)]


def assert_valid_reading(payload: dict[str, Any]) -> None:
    READING_VALIDATOR.validate(payload)
    # The format checker needs an optional package for date-time; check the timestamps here.
    for key in ("time", "received"):
        assert datetime.fromisoformat(payload[key]).tzinfo is not None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = Store(tmp_path / "store.db")
    yield db
    with suppress(Exception):
        db.close()


# -- a TCP relay that watches MQTT packets go by ------------------------------------------------


@asynccontextmanager
async def acks_held(
    broker: Mosquitto, store: Store, hub: str, **changes: Any
) -> AsyncIterator[tuple[Tap, Publisher]]:
    """A publisher linked through a `Tap`, connected and its birth acknowledged; from then on
    the relay holds every PUBACK back (`Tap.release`, `Tap.pass_acks`)."""
    async with tap_to(broker) as tap:
        publisher = publisher_for(mqtt_config(broker, hub, port=tap.port, **changes), hub, store)
        async with running(publisher):
            await asyncio.wait_for(publisher.connected.wait(), 10)
            await tap.wait(lambda: tap.publishes >= 1 and tap.outstanding == 0)  # the birth
            tap.ack_budget = 0
            yield tap, publisher


# -- the MQTT contract -----------------------------------------------------------------------


@pytest.mark.parametrize("inflight", [1, 4, 32])
async def test_readings_published_in_order_qos1_not_retained_and_valid(
    broker: Mosquitto, store: Store, inflight: int
) -> None:
    hub = new_hub()
    added = [make_reading(dev, seq) for seq in range(60) for dev in ("cgm-a", "cgm-b")]
    for reading in added:
        assert store.add(reading)
    assert store.outbox_depth() == len(added)
    publisher = publisher_for(mqtt_config(broker, hub, inflight=inflight), hub, store)

    async with Subscriber(broker, [f"gatewayd/{hub}/+/reading"]) as sub, running(publisher):
        messages = await sub.wait_for(lambda m: len(m) >= len(added))
        await wait_until(lambda: store.outbox_depth() == 0, what="outbox empty")

    assert reading_ids(messages) == [r.id for r in added]  # insertion order, nothing twice
    for message, reading in zip(messages, added, strict=True):
        assert message.topic == f"gatewayd/{hub}/{reading.device}/reading"
        assert message.qos == 1
        assert not message.retain
        payload = message.json()
        assert_valid_reading(payload)
        assert payload["schema"] == READING_SCHEMA
        assert payload["hub"] == hub
        assert payload["seq"] == reading.seq
        assert payload["glucose_mgdl"] == reading.glucose_mgdl
        assert "serial" not in payload  # not published unless include_serial
    assert publisher.delivered == len(added)
    assert publisher.reconnects == 0


async def test_outbox_keeps_rows_until_the_broker_acknowledges(
    broker: Mosquitto, store: Store
) -> None:
    """With PUBACKs held back on the wire, nothing leaves the outbox; once they pass, all do."""
    hub = new_hub()
    for seq in range(10):
        store.add(make_reading("cgm1", seq))
    async with acks_held(broker, store, hub) as (tap, publisher):
        publisher.notify()
        await tap.wait(lambda: tap.publishes >= 11)  # all ten readings sent
        assert store.outbox_depth() == 10
        assert publisher.delivered == 0
        tap.pass_acks()
        await wait_until(lambda: store.outbox_depth() == 0, what="outbox empty")
    assert publisher.delivered == 10


async def test_inflight_window_bounds_unacknowledged_publishes(
    broker: Mosquitto, store: Store
) -> None:
    hub = new_hub()
    total, window = 24, 4
    added = [make_reading("cgm1", seq) for seq in range(total)]
    async with (
        Subscriber(broker, [f"gatewayd/{hub}/+/reading"]) as sub,
        acks_held(broker, store, hub, inflight=window) as (tap, publisher),
    ):
        base = tap.publishes
        for reading in added:
            store.add(reading)
        publisher.notify()
        # Release one PUBACK at a time; each lets exactly one more reading go out.
        await tap.wait(lambda: tap.outstanding == window)
        while tap.publishes - base < total:
            await tap.wait(lambda: tap.held >= 1)
            sent = tap.publishes
            tap.release(1)
            await tap.wait(lambda s=sent: tap.publishes > s)
            assert tap.outstanding <= window
        tap.pass_acks()
        messages = await sub.wait_for(lambda m: len(m) >= total)
    assert tap.max_outstanding == window
    assert reading_ids(messages) == [r.id for r in added]
    assert publisher.reconnects == 0


async def test_a_broker_that_stops_acknowledging_ends_the_session_and_the_readings_go_again(
    broker: Mosquitto, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gatewayd.mqtt.publisher._PUBLISH_TIMEOUT", 0.5)
    hub = new_hub()
    added = [make_reading("cgm1", seq) for seq in range(3)]
    async with Subscriber(broker, [f"gatewayd/{hub}/+/reading"]) as sub:
        with capture_logs() as logs:
            # the broker takes the readings and never answers
            async with acks_held(broker, store, hub) as (tap, publisher):
                for reading in added:
                    store.add(reading)
                publisher.notify()
                await wait_until(lambda: publisher.reconnects >= 1, what="the stall noticed")
                assert store.outbox_depth() == 3
                tap.pass_acks()
                await wait_until(lambda: store.outbox_depth() == 0, what="outbox empty")
        messages = await sub.wait_for(lambda m: {r.id for r in added} <= set(reading_ids(m)))
    errors = [e["error"] for e in logs if e["event"] == "broker_unavailable"]
    assert errors[:1] == ["no PUBACK from the broker within 0.5 s"]
    assert set(reading_ids(messages)) == {r.id for r in added}


async def test_a_window_that_keeps_moving_is_not_a_stall_however_long_it_takes_to_empty(
    broker: Mosquitto, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker answers slowly but steadily: 20 readings in flight, a PUBACK every 0.1 s,
    2 s in all against a 1-s limit on standing still. (A limit on each wait for the window to
    empty took that for a dead link, reconnected and sent them all again.)"""
    monkeypatch.setattr("gatewayd.mqtt.publisher._PUBLISH_TIMEOUT", 1.0)
    hub, total = new_hub(), 20
    async with acks_held(broker, store, hub) as (tap, publisher):
        for seq in range(total):
            store.add(make_reading("cgm1", seq))
        publisher.notify()
        await tap.wait(lambda: tap.held == total)
        while tap.held:
            await asyncio.sleep(0.1)  # the slow broker (not a synchronisation)
            tap.release(1)
        tap.pass_acks()  # and the retained state's that follows
        await wait_until(lambda: store.outbox_depth() == 0, what="outbox empty")
    assert publisher.reconnects == 0
    assert publisher.delivered == total


async def test_state_is_the_newest_by_measured_time_and_retained(
    broker: Mosquitto, store: Store
) -> None:
    hub = new_hub()
    # Inserted out of measured-time order: the newest (minute 30) is neither first nor last.
    minutes = [10, 30, 20, 0, 25]
    added = [make_reading("cgm1", seq, minute=m) for seq, m in enumerate(minutes)]
    for reading in added:
        store.add(reading)
    newest = added[1]
    publisher = publisher_for(mqtt_config(broker, hub), hub, store)
    async with running(publisher):
        async with Subscriber(broker, [f"gatewayd/{hub}/cgm1/state"]) as live:
            await live.wait_for(lambda m: any(x.json()["id"] == newest.id for x in m))
        # A subscriber arriving later gets the retained state and the retained birth.
        async with Subscriber(
            broker, [f"gatewayd/{hub}/cgm1/state", f"gatewayd/{hub}/status"]
        ) as late:
            messages = await late.wait_for(lambda m: len(m) >= 2)
    state = next(m for m in messages if m.topic.endswith("/state"))
    assert state.retain
    assert state.qos == 1
    payload = state.json()
    assert_valid_reading(payload)
    assert payload["id"] == newest.id
    assert payload["time"] == "2024-05-01T12:30:00.000Z"
    birth = next(m for m in messages if m.topic == f"gatewayd/{hub}/status")
    assert (birth.payload, birth.retain) == (b"online", True)


async def test_state_follows_a_newer_reading(broker: Mosquitto, store: Store) -> None:
    hub = new_hub()
    store.add(make_reading("cgm1", 0))
    publisher = publisher_for(mqtt_config(broker, hub), hub, store)
    async with (
        Subscriber(broker, [f"gatewayd/{hub}/cgm1/state"]) as sub,
        running(publisher),
    ):
        await sub.wait_for(lambda m: len(m) >= 1)
        newer = make_reading("cgm1", 1)
        older = make_reading("cgm1", 2, minute=-60)  # backfilled, measured before the others
        store.add(newer)
        store.add(older)
        publisher.notify()
        messages = await sub.wait_for(lambda m: any(x.json()["id"] == newer.id for x in m))
        await wait_until(lambda: store.outbox_depth() == 0)
    assert older.id not in [m.json()["id"] for m in messages]


async def test_a_burst_updates_the_state_once_per_interval_and_ends_with_the_newest(
    broker: Mosquitto, store: Store
) -> None:
    hub = new_hub()
    store.add(make_reading("cgm1", 0))
    config = mqtt_config(broker, hub, state_interval=0.5)
    publisher = publisher_for(config, hub, store)
    async with (
        Subscriber(broker, [f"gatewayd/{hub}/cgm1/state"]) as sub,
        running(publisher),
    ):
        await sub.wait_for(lambda m: len(m) >= 1)  # the first state goes at once
        burst = [make_reading("cgm1", seq) for seq in range(1, 21)]
        for reading in burst:  # one drain each: the state is due at most every 0.5 s
            store.add(reading)
            publisher.notify()
            await wait_until(lambda r=reading: publisher.published["cgm1"] >= r.seq + 1)
        messages = await sub.wait_for(lambda m: m[-1].json()["id"] == burst[-1].id, timeout=5)
    states = [m.json()["id"] for m in messages]
    assert len(states) < 1 + len(burst) / 2  # not one per reading
    assert states[-1] == burst[-1].id


async def test_a_reading_committed_while_the_stop_waits_for_the_window_still_goes_out(
    broker: Mosquitto, store: Store
) -> None:
    """At stop, the last drain waits for the window to empty; a reading committed meanwhile
    is published before the session ends (it stayed in the outbox until the next start)."""
    hub = new_hub()
    first, late = make_reading("cgm1", 0), make_reading("cgm1", 1)
    async with Subscriber(broker, [f"gatewayd/{hub}/+/reading"]) as sub:
        async with acks_held(broker, store, hub) as (tap, publisher):
            store.add(first)
            publisher.notify()
            await tap.wait(lambda: tap.held == 1)  # in flight, its PUBACK held back
            publisher.stop()
            store.add(late)
            tap.pass_acks()
        messages = await sub.wait_for(lambda m: len(m) >= 2)
    assert reading_ids(messages) == [first.id, late.id]
    assert store.outbox_depth() == 0


async def test_birth_online_and_explicit_offline_on_stop(broker: Mosquitto, store: Store) -> None:
    hub = new_hub()
    publisher = publisher_for(mqtt_config(broker, hub), hub, store)
    async with Subscriber(broker, [f"gatewayd/{hub}/status"]) as sub:
        async with running(publisher):
            await sub.wait_for(lambda m: [x.payload for x in m] == [b"online"])
        # running() has returned: stop() made run() return after saying offline.
        messages = await sub.wait_for(lambda m: len(m) >= 2)
    assert [m.payload for m in messages] == [b"online", b"offline"]
    async with Subscriber(broker, [f"gatewayd/{hub}/status"]) as late:
        retained = await late.wait_for(lambda m: len(m) >= 1)
    assert (retained[0].payload, retained[0].retain) == (b"offline", True)


_LWT_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
import structlog
from gatewayd.backoff import Backoff
from gatewayd.ops.config import BrokerAddress, MqttConfig
from gatewayd.mqtt.publisher import Publisher
from gatewayd.store import Store

async def main(args):
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    alternates = tuple(BrokerAddress(**a) for a in args["mqtt"].pop("alternates", []))
    config = MqttConfig(**args["mqtt"], alternates=alternates)
    store = Store(Path(args["store"]))
    publisher = Publisher(config, args["hub"], store, backoff=Backoff(0.05, 0.2))
    task = asyncio.create_task(publisher.run())
    await publisher.connected.wait()
    print("connected", flush=True)
    await task

asyncio.run(main(json.loads(sys.argv[1])))
"""


async def test_last_will_says_offline_when_the_process_dies(
    broker: Mosquitto, tmp_path: Path
) -> None:
    await _last_will_after_kill(broker, tmp_path)


async def test_last_will_on_the_second_url_when_the_first_is_down(
    own_broker: Mosquitto, second_broker: Mosquitto, tmp_path: Path
) -> None:
    """`[mqtt] url` lists two nodes and the first is stopped: the birth and the LWT live on the
    node the hub reached (issue 10.6)."""
    own_broker.stop()
    await _last_will_after_kill(second_broker, tmp_path, down_first=own_broker)


async def _last_will_after_kill(
    broker: Mosquitto, tmp_path: Path, *, down_first: Mosquitto | None = None
) -> None:
    """A child process publishes to `broker` (the second URL after `down_first`, if given) and
    is killed: `broker` must say `online`, then the retained `offline` of its will."""
    hub = new_hub()
    nodes = [{"host": "127.0.0.1", "port": b.port} for b in (down_first, broker) if b is not None]
    args = {
        "hub": hub,
        "store": str(tmp_path / "child.db"),
        "mqtt": {
            **nodes[0],
            "alternates": nodes[1:],
            "username": broker.username,
            "password": broker.password,
            "client_id": f"gatewayd-{hub}",
        },
    }
    async with Subscriber(broker, [f"gatewayd/{hub}/status"]) as sub:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _LWT_SCRIPT,
            json.dumps(args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 15)
            assert line == b"connected\n"
            await sub.wait_for(lambda m: [x.payload for x in m] == [b"online"])
            os.kill(child.pid, signal.SIGKILL)  # no DISCONNECT: only the broker can speak now
            assert await asyncio.wait_for(child.wait(), 10) == -signal.SIGKILL
            messages = await sub.wait_for(lambda m: len(m) >= 2)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    assert [m.payload for m in messages] == [b"online", b"offline"]
    async with Subscriber(broker, [f"gatewayd/{hub}/status"]) as late:
        retained = await late.wait_for(lambda m: len(m) >= 1)
    assert (retained[0].payload, retained[0].retain) == (b"offline", True)


async def test_device_status_is_retained_valid_json(broker: Mosquitto, store: Store) -> None:
    hub = new_hub()
    publisher = publisher_for(mqtt_config(broker, hub), hub, store)
    since = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    async with Subscriber(broker, [f"gatewayd/{hub}/cgm1/status"]) as sub, running(publisher):
        await asyncio.wait_for(publisher.connected.wait(), 10)
        publisher.set_status(DeviceStatus("cgm1", "testcgm", LinkState.CONNECTING, since))
        await sub.wait_for(lambda m: len(m) >= 1)
        publisher.set_status(
            DeviceStatus("cgm1", "testcgm", LinkState.BACKOFF, since, "link lost", 1.23456)
        )
        live = await sub.wait_for(lambda m: len(m) >= 2)
        async with Subscriber(broker, [f"gatewayd/{hub}/cgm1/status"]) as late:
            retained = await late.wait_for(lambda m: len(m) >= 1)
    for message in (*live, *retained):
        STATUS_VALIDATOR.validate(message.json())
        assert message.qos == 1
    assert [m.json()["state"] for m in live] == ["connecting", "backoff"]
    assert retained[0].retain
    assert retained[0].json() == {
        "schema": "gatewayd/status/1",
        "hub": hub,
        "device": "cgm1",
        "driver": "testcgm",
        "state": "backoff",
        "reason": "link lost",
        "since": "2024-05-01T12:00:00.123Z",
        "retry_in_s": 1.235,
        "records_unreadable": 0,
        "clock_offset_s": None,
    }


async def test_status_set_before_connecting_is_sent_once_connected(
    broker: Mosquitto, store: Store
) -> None:
    hub = new_hub()
    publisher = publisher_for(mqtt_config(broker, hub), hub, store)
    publisher.set_status(DeviceStatus("cgm1", "testcgm", LinkState.PARKED, T0, "bond refused"))
    async with Subscriber(broker, [f"gatewayd/{hub}/cgm1/status"]) as sub, running(publisher):
        messages = await sub.wait_for(lambda m: len(m) >= 1)
    assert messages[0].json()["state"] == "parked"
    assert messages[0].json()["reason"] == "bond refused"


async def test_include_serial_and_custom_topic_root(broker: Mosquitto, store: Store) -> None:
    hub = new_hub()
    config = parse(
        {
            "hub": {"id": hub},
            "mqtt": {
                "url": broker.url(),
                "username": broker.username,
                "password": broker.password,
                "topic_root": "site-7/glucose",
                "include_serial": True,
            },
        }
    ).mqtt
    store.add(make_reading("cgm1", 0, serial="ABC123"))
    publisher = publisher_for(config, hub, store)
    async with Subscriber(broker, [f"site-7/glucose/{hub}/#"]) as sub, running(publisher):
        messages = await sub.wait_for(
            lambda m: (
                {x.topic for x in m}
                >= {f"site-7/glucose/{hub}/cgm1/reading", f"site-7/glucose/{hub}/cgm1/state"}
            )
        )
    reading = next(m for m in messages if m.topic.endswith("/reading")).json()
    assert_valid_reading(reading)
    assert reading["serial"] == "ABC123"
    assert next(m for m in messages if m.topic.endswith("/state")).json()["serial"] == "ABC123"
    assert any(m.topic == f"site-7/glucose/{hub}/status" for m in messages)


# -- outages and restarts --------------------------------------------------------------------


@pytest.mark.timeout(45)
async def test_broker_killed_mid_drain_then_everything_arrives(
    own_broker: Mosquitto, store: Store
) -> None:
    hub = new_hub()
    window = 8
    first = [make_reading("cgm1", seq) for seq in range(200)]
    later = [make_reading("cgm1", seq) for seq in range(200, 250)]
    for reading in first:
        store.add(reading)
    received: list[Received] = []
    # The publisher reaches the broker through a relay: it lets exactly 20 readings be
    # acknowledged (so the kill lands mid-drain with a full window in flight), and it keeps
    # the publisher from reconnecting before the second subscriber listens (a restarted broker
    # keeps no subscriptions).
    async with tap_to(own_broker) as tap:
        config = mqtt_config(own_broker, hub, port=tap.port, inflight=window)
        publisher = publisher_for(config, hub, store)
        async with running(publisher):
            async with Subscriber(own_broker, [f"gatewayd/{hub}/+/reading"]) as before:
                await asyncio.wait_for(publisher.connected.wait(), 10)
                await tap.wait(lambda: tap.publishes >= 1 and tap.outstanding == 0)  # birth
                tap.ack_budget = 20
                publisher.notify()
                await wait_until(
                    lambda: publisher.delivered == 20 and tap.outstanding == window,
                    what="20 acknowledged and a full window in flight",
                )
                await before.wait_for(lambda m: len(m) >= 20)
                tap.refuse()
                own_broker.stop(kill=True)
                received += before.messages

            for reading in later:  # arrive while the broker is away
                store.add(reading)
            publisher.notify()
            # The loss is noticed at once, not when the in-flight publishes time out (10 s).
            await wait_until(lambda: publisher.reconnects >= 1, timeout=5, what="link loss seen")
            assert not publisher.connected.is_set()
            # Exactly the acknowledged rows leave the outbox (committed by the store's writer
            # thread on the link loss, not on the event loop).
            await wait_until(
                lambda: store.outbox_depth() == len(first) + len(later) - 20,
                timeout=5,
                what="the acknowledged rows deleted",
            )

            own_broker.start()
            async with Subscriber(own_broker, [f"gatewayd/{hub}/+/reading"]) as after:
                tap.ack_budget = None
                await tap.listen()
                want = {r.id for r in first + later}
                await after.wait_for(
                    lambda m: {*reading_ids(received), *reading_ids(m)} >= want, timeout=20
                )
                await wait_until(lambda: store.outbox_depth() == 0, what="outbox empty")
                received += after.messages

    ids = reading_ids(received)
    assert set(ids) == want  # none missing, nothing foreign: duplicates only of real readings
    assert len(ids) >= len(want)
    assert publisher.reconnects >= 1
    # After the reconnect, publishing resumed from the oldest unacknowledged row, in order.
    resumed = reading_ids(after.messages)
    assert resumed == [r.id for r in first[20:] + later]


@pytest.mark.timeout(20)
async def test_broker_dying_during_the_birth_is_noticed_at_once(
    own_broker: Mosquitto, store: Store
) -> None:
    """A node that dies right after accepting the connection, before acknowledging the birth:
    the loss is noticed at once, not after the 10 s publish timeout (which made the hub come
    back up to 10 s late after an outage)."""
    hub = new_hub()
    async with tap_to(own_broker) as tap:
        tap.ack_budget = 0  # hold the birth's PUBACK
        publisher = publisher_for(mqtt_config(own_broker, hub, port=tap.port), hub, store)
        async with running(publisher):
            await tap.wait(lambda: tap.publishes >= 1 and tap.held >= 1)
            tap.refuse()
            own_broker.stop(kill=True)
            killed = time.monotonic()
            await wait_until(lambda: publisher.reconnects >= 1, timeout=8, what="link loss seen")
            noticed_s = time.monotonic() - killed
    assert noticed_s < 2.0


@pytest.mark.timeout(20)
async def test_broker_restart_while_idle_is_noticed_without_new_readings(
    own_broker: Mosquitto, store: Store
) -> None:
    hub = new_hub()
    publisher = publisher_for(mqtt_config(own_broker, hub), hub, store)
    async with running(publisher):
        async with Subscriber(own_broker, [f"gatewayd/{hub}/status"]) as sub:
            await sub.wait_for(lambda m: len(m) >= 1)
        own_broker.stop(kill=True)
        # Idle (nothing to publish), yet the dead link is noticed: not after a publish timeout.
        await wait_until(lambda: publisher.reconnects >= 1, timeout=5, what="link loss seen")
        assert not publisher.connected.is_set()
        own_broker.start()
        # A restarted broker lost the retained birth; a live publisher must say `online` again
        # (reconnected already or about to be: the retained message reaches us either way).
        async with Subscriber(own_broker, [f"gatewayd/{hub}/status"]) as sub:
            messages = await sub.wait_for(lambda m: len(m) >= 1, timeout=5)
    assert messages[0].payload == b"online"


async def test_readings_added_while_the_broker_is_unreachable_wait_in_the_outbox(
    broker: Mosquitto, store: Store
) -> None:
    hub = new_hub()
    async with tap_to(broker) as tap:
        tap.refuse()  # nothing listens: every attempt is refused
        publisher = publisher_for(mqtt_config(broker, hub, port=tap.port), hub, store)
        async with (
            Subscriber(broker, [f"gatewayd/{hub}/+/reading"]) as sub,
            running(publisher),
        ):
            added = [make_reading("cgm1", seq) for seq in range(5)]
            for reading in added:
                store.add(reading)
                publisher.notify()
            await wait_until(lambda: publisher.reconnects >= 3, what="retries")
            assert store.outbox_depth() == 5
            assert publisher.delivered == 0
            await tap.listen()
            messages = await sub.wait_for(lambda m: len(m) >= 5)
            await wait_until(lambda: store.outbox_depth() == 0, what="outbox empty")
    assert reading_ids(messages) == [r.id for r in added]


async def test_new_publisher_on_the_same_store_resumes_from_the_oldest_undelivered(
    broker: Mosquitto, tmp_path: Path
) -> None:
    hub = new_hub()
    path = tmp_path / "hub.db"
    config = mqtt_config(broker, hub)
    delivered = [make_reading("cgm1", seq) for seq in range(10)]
    pending = [make_reading("cgm1", seq) for seq in range(10, 25)]

    async with Subscriber(broker, [f"gatewayd/{hub}/+/reading"]) as sub:
        first_store = Store(path)
        for reading in delivered:
            first_store.add(reading)
        first = publisher_for(config, hub, first_store)
        async with running(first):
            await sub.wait_for(lambda m: len(m) >= 10)
            await wait_until(lambda: first_store.outbox_depth() == 0)
        for reading in pending:  # stored after the publisher stopped (broker link down)
            first_store.add(reading)
        first_store.close()

        second_store = Store(path)  # as after a process restart
        assert second_store.outbox_depth() == len(pending)
        second = publisher_for(config, hub, second_store)
        async with running(second):
            messages = await sub.wait_for(lambda m: len(m) >= 25)
            await wait_until(lambda: second_store.outbox_depth() == 0)
        second_store.close()
    assert reading_ids(messages) == [r.id for r in delivered + pending]
    assert second.delivered == len(pending)


async def test_wrong_password_keeps_retrying_without_raising(
    broker: Mosquitto, store: Store
) -> None:
    hub = new_hub()
    store.add(make_reading("cgm1", 0))
    with capture_logs() as logs:
        publisher = publisher_for(mqtt_config(broker, hub, password="wrong"), hub, store)
        ever_connected = asyncio.ensure_future(publisher.connected.wait())
        task = asyncio.create_task(publisher.run())
        try:
            await wait_until(lambda: publisher.reconnects >= 3, what="three failed attempts")
            assert not ever_connected.done()
            assert not task.done()
            assert store.outbox_depth() == 1
        finally:
            publisher.stop()
            async with asyncio.timeout(2):
                await task  # returns (no exception) promptly
            ever_connected.cancel()
    assert publisher.delivered == 0
    failures = [e for e in logs if e["event"] == "broker_unavailable"]
    assert len(failures) == publisher.reconnects
    assert all("not authorized" in e["error"].lower() for e in failures)
    assert all(broker.password not in str(e) and "wrong" not in str(e) for e in logs)


async def _delivers_over(config: MqttConfig, broker: Mosquitto, hub: str, store: Store) -> None:
    reading = make_reading("cgm1", 0)
    store.add(reading)
    publisher = publisher_for(config, hub, store)
    async with Subscriber(broker, [f"gatewayd/{hub}/+/reading"]) as sub, running(publisher):
        messages = await sub.wait_for(lambda m: len(m) >= 1)
        await wait_until(lambda: store.outbox_depth() == 0)
    assert messages[0].json()["id"] == reading.id
    assert publisher.reconnects == 0


async def test_mqtt_311(broker: Mosquitto, store: Store) -> None:
    hub = new_hub()
    config = parse(
        {
            "hub": {"id": hub},
            "mqtt": {
                "url": broker.url(),
                "username": broker.username,
                "password": broker.password,
                "protocol": "3.1.1",
            },
        }
    ).mqtt
    await _delivers_over(config, broker, hub, store)


async def test_tls_with_ca_file_and_password(broker: Mosquitto, store: Store) -> None:
    assert broker.pki is not None
    hub = new_hub()
    config = parse(
        {
            "hub": {"id": hub},
            "mqtt": {
                "url": broker.url(tls=True),
                "username": broker.username,
                "password": broker.password,
                "ca_file": str(broker.pki.ca_cert),
            },
        }
    ).mqtt
    assert config.tls
    await _delivers_over(config, broker, hub, store)


async def test_mutual_tls_with_client_certificate(broker: Mosquitto, store: Store) -> None:
    assert broker.pki is not None
    hub = new_hub()
    config = parse(
        {
            "hub": {"id": hub},
            "mqtt": {
                "url": broker.url(mtls=True),
                "ca_file": str(broker.pki.ca_cert),
                "cert_file": str(broker.pki.client_cert),
                "key_file": str(broker.pki.client_key),
            },
        }
    ).mqtt
    assert config.username is None
    await _delivers_over(config, broker, hub, store)


async def test_tls_without_ca_file_fails_verification_and_retries(
    broker: Mosquitto, store: Store
) -> None:
    hub = new_hub()
    config = parse(
        {
            "hub": {"id": hub},
            "mqtt": {
                "url": broker.url(tls=True),
                "username": broker.username,
                "password": broker.password,
            },
        }
    ).mqtt
    with capture_logs() as logs:
        publisher = publisher_for(config, hub, store)
        ever_connected = asyncio.ensure_future(publisher.connected.wait())
        async with running(publisher) as task:
            await wait_until(lambda: publisher.reconnects >= 2, what="failed TLS attempts")
            assert not ever_connected.done()
            assert not task.done()
        ever_connected.cancel()
    failures = [e for e in logs if e["event"] == "broker_unavailable"]
    assert failures
    assert all("certificate verify failed" in e["error"] for e in failures)


@pytest.mark.timeout(30)
async def test_tls_key_replaced_by_garbage_at_run_time_is_retried_not_fatal(
    own_broker: Mosquitto, store: Store, tmp_path: Path
) -> None:
    """A botched certificate rotation: the key becomes garbage while the daemon runs. The next
    reconnect must not kill the publisher; it reports why and retries, and picks up the
    repaired file (issue 10, item 1)."""
    assert own_broker.pki is not None
    hub = new_hub()
    key = tmp_path / "client.key"
    key.write_bytes(own_broker.pki.client_key.read_bytes())
    key.chmod(0o600)
    config = parse(
        {
            "hub": {"id": hub},
            "mqtt": {
                "url": own_broker.url(mtls=True),
                "ca_file": str(own_broker.pki.ca_cert),
                "cert_file": str(own_broker.pki.client_cert),
                "key_file": str(key),
            },
        }
    ).mqtt
    first, second = make_reading("cgm1", 0), make_reading("cgm1", 1)
    store.add(first)
    with capture_logs() as logs:
        publisher = publisher_for(config, hub, store)
        async with running(publisher) as task:
            await wait_until(lambda: store.outbox_depth() == 0, what="first reading delivered")
            key.write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
            own_broker.stop(kill=True)
            own_broker.start()
            await wait_until(lambda: publisher.reconnects >= 3, what="three failed attempts")
            store.add(second)  # the sensors go on: readings are stored meanwhile
            publisher.notify()
            assert not task.done()
            assert not publisher.connected.is_set()
            assert store.outbox_depth() == 1
            async with Subscriber(own_broker, [f"gatewayd/{hub}/+/reading"]) as sub:
                key.write_bytes(own_broker.pki.client_key.read_bytes())  # the rotation fixed
                messages = await sub.wait_for(lambda m: len(m) >= 1)
            await wait_until(lambda: store.outbox_depth() == 0, what="outbox empty")
    assert reading_ids(messages) == [second.id]
    failures = [e for e in logs if e["event"] == "broker_unavailable"]
    tls_failures = [e for e in failures if "not a PEM private key" in e["error"]]
    assert len(tls_failures) >= 2
    assert all(f"key_file {key}" in e["error"] for e in tls_failures)


# -- several broker URLs, backoff ------------------------------------------------------------


@pytest.fixture
def second_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Another broker of this test alone: the second node of a two-URL `[mqtt] url`."""
    server = Mosquitto(tmp_path / "second")
    server.start()
    yield server
    server.stop()


def two_node_config(first: Mosquitto, second: Mosquitto, hub: str) -> MqttConfig:
    """`[mqtt] url = [first, second]` with the production backoff defaults."""
    return parse(
        {
            "hub": {"id": hub},
            "mqtt": {
                "url": [first.url(), second.url()],
                "username": first.username,
                "password": first.password,
            },
        }
    ).mqtt


async def test_second_url_is_used_when_the_first_broker_is_stopped(
    own_broker: Mosquitto, second_broker: Mosquitto, store: Store
) -> None:
    """The first node is down at start: the hub's birth and readings go to the second."""
    hub = new_hub()
    own_broker.stop()
    readings = [make_reading("cgm1", seq) for seq in range(5)]
    for reading in readings:
        store.add(reading)
    publisher = Publisher(two_node_config(own_broker, second_broker, hub), hub, store)
    async with (
        Subscriber(second_broker, [f"gatewayd/{hub}/#"]) as sub,
        running(publisher),
    ):
        messages = await sub.wait_for(lambda m: len(reading_ids(m)) >= 5, timeout=10)
        await wait_until(lambda: store.outbox_depth() == 0, what="outbox empty")
        assert publisher.url == second_broker.url()
    assert next(m.payload for m in messages if m.topic == f"gatewayd/{hub}/status") == b"online"
    assert reading_ids(messages) == [r.id for r in readings]


@pytest.mark.timeout(30)
async def test_failover_to_the_second_broker_when_the_first_stops(
    own_broker: Mosquitto, second_broker: Mosquitto, store: Store
) -> None:
    """Connected to the first node, which stops: the hub moves to the second within about one
    `backoff_min` (default 1 s), says `online` there, and its LWT lives there now."""
    hub = new_hub()
    publisher = Publisher(two_node_config(own_broker, second_broker, hub), hub, store)
    async with (
        Subscriber(second_broker, [f"gatewayd/{hub}/#"]) as sub,
        running(publisher),
    ):
        await asyncio.wait_for(publisher.connected.wait(), 10)
        assert publisher.url == own_broker.url()
        stopped = time.monotonic()
        own_broker.stop()
        reading = make_reading("cgm1", 0)
        store.add(reading)  # arrives during the failover
        publisher.notify()
        messages = await sub.wait_for(lambda m: reading.id in reading_ids(m), timeout=10)
        failover_s = time.monotonic() - stopped
        print(f"failover between two brokers: {failover_s:.2f} s")  # the closing note
        assert publisher.url == second_broker.url()
        assert failover_s < 3.0  # one backoff_min (1 s, jittered) plus the connection
        assert b"online" in [m.payload for m in messages if m.topic == f"gatewayd/{hub}/status"]
    assert publisher.reconnects == 1


@pytest.mark.timeout(40)
async def test_back_within_backoff_max_after_an_outage(own_broker: Mosquitto, store: Store) -> None:
    """`[mqtt] backoff_max` caps the wait: after an outage longer than the backoff windows, the
    hub is back within backoff_max (+ the connection) of the broker's return (issue 10.7)."""
    hub = new_hub()
    config = mqtt_config(own_broker, hub, backoff_min=0.5, backoff_max=2.0)
    publisher = Publisher(config, hub, store)
    async with running(publisher):
        await asyncio.wait_for(publisher.connected.wait(), 10)
        own_broker.stop()
        await wait_until(lambda: publisher.reconnects >= 5, timeout=15, what="retries at the cap")
        reading = make_reading("cgm1", 0)
        store.add(reading)
        own_broker.start()
        back = time.monotonic()
        async with Subscriber(own_broker, [f"gatewayd/{hub}/+/reading"]) as sub:
            await sub.wait_for(lambda m: reading.id in reading_ids(m), timeout=10)
        recovery_s = time.monotonic() - back
    print(f"recovery after the broker returned: {recovery_s:.2f} s (backoff_max 2 s)")
    assert recovery_s < 2.0 + 1.0


async def test_publish_refused_by_the_broker_stays_in_the_outbox(
    acl_broker: Mosquitto, store: Store
) -> None:
    hub = new_hub()
    for seq in range(3):
        store.add(make_reading("cgm1", seq))
    publisher = publisher_for(mqtt_config(acl_broker, hub), hub, store)
    async with running(publisher):
        await wait_until(
            lambda: publisher.reconnects >= 1 or store.outbox_depth() == 0,
            what="the refusal handled one way or the other",
        )
    assert store.outbox_depth() == 3
    assert publisher.delivered == 0
