"""The Supervisor with a scripted driver plugin: storage, statuses, resume, parking, backoff.

`scripted` (tests/support/scripted_driver.py) is a real `DriverPlugin` (the same contract
third-party drivers implement) whose sessions yield what the test puts in a queue; it stands in
for a device, not for a library.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gatewayd.backoff import Backoff
from gatewayd.device_status import DeviceStatus, LinkState
from gatewayd.driver import ResumePoint
from gatewayd.errors import DeviceRefused, LinkLost
from gatewayd.models import Direction, Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.ops.config import MqttConfig, SupervisorConfig
from gatewayd.store import Store
from gatewayd.supervisor import Device, Supervisor
from mosquitto import Mosquitto
from polling import wait_until
from scripted_driver import END, Drop, Script, scripted_plugin
from subscriber import Subscriber

pytestmark = pytest.mark.timeout(20)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


SCRIPTED = scripted_plugin()


# -- helpers ---------------------------------------------------------------------------------


def make_reading(
    device: str, seq: int, *, minute: float | None = None, serial: str = "SN1"
) -> Reading:
    measured = T0 + timedelta(minutes=5 * seq if minute is None else minute)
    return Reading(
        device=device,
        driver="scripted",
        serial=serial,
        session="sess-1",
        seq=seq,
        time=measured,
        received=measured + timedelta(seconds=2),
        glucose_mgdl=100.0 + seq,
        direction=Direction.FLAT,
    )


def device(device_id: str, script: Script | None = None) -> Device:
    return Device(device_id, SCRIPTED, script if script is not None else Script())


def script_of(dev: Device) -> Script:
    script: Script = dev.options
    return script


def new_hub() -> str:
    return f"hub-{uuid.uuid4().hex[:10]}"


def publisher_for(broker: Mosquitto, hub: str, store: Store) -> Publisher:
    config = MqttConfig(
        host="127.0.0.1",
        port=broker.port,
        username=broker.username,
        password=broker.password,
        client_id=f"gatewayd-{hub}",
    )
    return Publisher(config, hub, store, backoff=Backoff(0.05, 0.2))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = Store(tmp_path / "store.db")
    yield db
    with suppress(Exception):
        db.close()


@pytest.fixture
def publisher(broker: Mosquitto, store: Store) -> Publisher:
    """A real publisher that is not running: statuses and notifications just accumulate."""
    return publisher_for(broker, new_hub(), store)


@asynccontextmanager
async def supervising(supervisor: Supervisor) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(supervisor.run())
    try:
        yield task
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await task


def state_of(dev: Device) -> LinkState | None:
    return dev.status.state if dev.status is not None else None


@asynccontextmanager
async def status_history(dev: Device) -> AsyncIterator[list[DeviceStatus]]:
    """Every status the device passes through that lasts across an event-loop turn.

    A backoff status always does (the loop sleeps right after reporting it)."""
    seen: list[DeviceStatus] = []

    async def watch() -> None:
        while True:
            if dev.status is not None and (not seen or seen[-1] is not dev.status):
                seen.append(dev.status)
            await asyncio.sleep(0)

    task = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


# -- tests -----------------------------------------------------------------------------------


async def test_readings_are_stored_and_published(broker: Mosquitto, store: Store) -> None:
    hub = new_hub()
    publisher = publisher_for(broker, hub, store)
    devices = [device("cgm-a", Script(serial="A")), device("cgm-b", Script(serial="B"))]
    supervisor = Supervisor(devices, store, publisher, SupervisorConfig(0.05, 0.2))
    fed = {
        dev.id: [make_reading(dev.id, seq, serial=script_of(dev).serial) for seq in range(5)]
        for dev in devices
    }
    publishing = asyncio.create_task(publisher.run())
    try:
        async with (
            Subscriber(broker, [f"gatewayd/{hub}/#"]) as sub,
            supervising(supervisor),
        ):
            for dev in devices:
                for reading in fed[dev.id]:
                    script_of(dev).put(reading)
            messages = await sub.wait_for(
                lambda m: len([x for x in m if x.topic.endswith("/reading")]) >= 10
            )
            await sub.wait_for(
                lambda m: (
                    {
                        x.topic
                        for x in m
                        if x.topic.endswith("/status") and b'"connected"' in x.payload
                    }
                    == {f"gatewayd/{hub}/cgm-a/status", f"gatewayd/{hub}/cgm-b/status"}
                )
            )
            assert store.count() == 10
    finally:
        publisher.stop()
        await asyncio.wait_for(publishing, 5)
    for dev in devices:
        assert dev.received == dev.stored == 5
        assert [r.id for r in store.readings(dev.id)] == [r.id for r in fed[dev.id]]
        published = [
            m.json()["id"] for m in messages if m.topic == f"gatewayd/{hub}/{dev.id}/reading"
        ]
        assert published == [r.id for r in fed[dev.id]]
    assert store.outbox_depth() == 0


async def test_status_goes_connecting_connected_then_backoff(
    store: Store, publisher: Publisher
) -> None:
    gate = asyncio.Event()
    dev = device("cgm1", Script(gate=gate))
    # Long backoff so the backoff state stays put while we look at it.
    supervisor = Supervisor([dev], store, publisher, SupervisorConfig(4.0, 4.0))
    async with supervising(supervisor):
        await wait_until(lambda: len(script_of(dev).contexts) == 1, what="open() called")
        assert dev.status is not None
        assert dev.status.state is LinkState.CONNECTING
        assert dev.status.retry_in_s is None
        assert dev.status.driver == "scripted"

        gate.set()
        await wait_until(lambda: state_of(dev) is LinkState.CONNECTED, what="connected")
        assert dev.status.reason is None

        script_of(dev).put(END)
        await wait_until(lambda: state_of(dev) is LinkState.BACKOFF, what="backoff")
        backoff = dev.status
        assert backoff.reason == "link closed by the device"
        assert backoff.retry_in_s is not None
        assert 2.0 <= backoff.retry_in_s <= 4.0  # jittered into [d/2, d]
        assert script_of(dev).closed == 1
        assert len(script_of(dev).contexts) == 1  # not reopened before the delay


async def test_reconnect_resumes_from_the_newest_stored_reading(
    store: Store, publisher: Publisher
) -> None:
    earlier_run = make_reading("cgm1", 0, minute=-30)
    store.add(earlier_run)  # stored by a previous run of the daemon
    dev = device("cgm1")
    supervisor = Supervisor([dev], store, publisher, SupervisorConfig(0.01, 0.02))
    script = script_of(dev)
    # Measured times out of order: the newest by time (seq 2, minute 15) is not the last fed.
    minutes = {1: 5.0, 2: 15.0, 3: 10.0}
    for seq, minute in minutes.items():
        script.put(make_reading("cgm1", seq, minute=minute))
    script.put(END)
    async with supervising(supervisor):
        await wait_until(lambda: len(script.contexts) >= 2, what="reconnect")
    first, second = script.contexts[:2]
    assert first.resume == ResumePoint("SN1", "sess-1", 0, T0 - timedelta(minutes=30))
    assert second.resume == ResumePoint("SN1", "sess-1", 2, T0 + timedelta(minutes=15))
    assert second.device_id == "cgm1"
    assert second.options is script


async def test_refused_device_is_parked_and_left_alone(store: Store, publisher: Publisher) -> None:
    refused = device("cgm-refused", Script(open_error=lambda: DeviceRefused("bonding refused")))
    flaky = device("cgm-flaky", Script(open_error=lambda: LinkLost("not in range")))
    supervisor = Supervisor([refused, flaky], store, publisher, SupervisorConfig(0.01, 0.02))
    with capture_logs() as logs:
        async with supervising(supervisor):
            # The flaky device's retries are the clock: many backoff periods pass.
            await wait_until(lambda: len(script_of(flaky).contexts) >= 8, what="flaky retries")
            assert state_of(refused) is LinkState.PARKED
    assert len(script_of(refused).contexts) == 1
    assert refused.status is not None
    assert refused.status.reason == "bonding refused"
    assert refused.status.retry_in_s is None
    assert any(
        e["event"] == "device_parked" and e["device"] == "cgm-refused" and e["log_level"] == "error"
        for e in logs
    )


async def test_driver_bug_backs_off_and_retries_while_others_deliver(
    store: Store, publisher: Publisher
) -> None:
    broken = device("cgm-broken", Script(fail=lambda: ZeroDivisionError("division by zero")))
    healthy = device("cgm-ok", Script(serial="OK"))
    supervisor = Supervisor([broken, healthy], store, publisher, SupervisorConfig(0.01, 0.02))
    fed = [make_reading("cgm-ok", seq, serial="OK") for seq in range(20)]
    with capture_logs() as logs:
        async with supervising(supervisor) as task:
            async with status_history(broken) as history:
                for reading in fed:
                    script_of(healthy).put(reading)
                await wait_until(lambda: healthy.stored == 20, what="healthy device stored")
                await wait_until(lambda: len(script_of(broken).contexts) >= 3, what="retries")
            assert not task.done()  # the bug did not take the supervisor down
    assert [r.id for r in store.readings("cgm-ok")] == [r.id for r in fed]
    backoffs = [s for s in history if s.state is LinkState.BACKOFF]
    assert backoffs
    assert all(
        s.reason == "driver error: ZeroDivisionError: division by zero" and s.retry_in_s
        for s in backoffs
    )
    assert script_of(broken).closed == script_of(broken).entered  # sessions were closed
    assert any(
        e["event"] == "driver_failed" and e.get("exc_info") and e["device"] == "cgm-broken"
        for e in logs
    )
    assert state_of(healthy) is LinkState.CONNECTED


async def test_duplicate_readings_are_stored_once(store: Store, publisher: Publisher) -> None:
    dev = device("cgm1")
    script = script_of(dev)
    r0, r1 = make_reading("cgm1", 0), make_reading("cgm1", 1)
    script.put(r0, r0, r1, END, r1, r0)  # then a backfill overlapping what is stored
    supervisor = Supervisor([dev], store, publisher, SupervisorConfig(0.01, 0.02))
    with capture_logs() as logs:
        async with supervising(supervisor):
            await wait_until(
                lambda: sum(e["event"] == "reading_duplicate" for e in logs) == 3,
                what="all five received and stored or found there",
            )
    assert dev.received == 5
    assert [e["seq"] for e in logs if e["event"] == "reading_duplicate"] == [0, 1, 0]
    assert dev.stored == 2
    assert store.count() == 2
    assert store.outbox_depth() == 2
    assert [r.id for r in store.readings("cgm1")] == [r0.id, r1.id]


async def test_drop_packet_counts_and_logs_hex(store: Store, publisher: Publisher) -> None:
    dev = device("cgm1")
    script = script_of(dev)
    script.put(Drop(b"\x01\xab\xff"), make_reading("cgm1", 0), Drop(bytes(range(3))))
    script.put(make_reading("cgm1", 1))
    supervisor = Supervisor([dev], store, publisher, SupervisorConfig(0.01, 0.02))
    with capture_logs() as logs:
        async with supervising(supervisor):
            await wait_until(lambda: dev.stored == 2, what="readings around the bad packets")
    assert dev.dropped == {"bad crc": 2}
    dropped = [e for e in logs if e["event"] == "packet_dropped"]
    assert [(e["hex"], e["length"], e["dropped_total"]) for e in dropped] == [
        ("01abff", 3, 1),
        ("000102", 3, 2),
    ]
    assert all(e["device"] == "cgm1" and e["driver"] == "scripted" for e in dropped)
    assert all(e["reason"] == "bad crc" and e["log_level"] == "warning" for e in dropped)
    assert state_of(dev) is LinkState.CONNECTED  # a bad packet does not end the session


async def test_findings_are_republished_on_the_device_status(
    store: Store, publisher: Publisher
) -> None:
    dev = device("cgm-1")
    supervisor = Supervisor([dev], store, publisher, SupervisorConfig(0.05, 0.2))
    async with supervising(supervisor):
        await wait_until(lambda: state_of(dev) is LinkState.CONNECTED, what="connected")
        connected = dev.status
        ctx = script_of(dev).contexts[-1]
        ctx.set_clock_offset(-18_144_000.0)  # seven months slow
        while ctx.record_damaged(3, b"\xde\xad", position="record 3", reason="bad crc"):
            pass
        assert dev.status is not None
        assert dev.status.state is LinkState.CONNECTED
        assert connected is not None
        assert dev.status.since == connected.since  # same state: not a new "since"
        payload = dev.status.payload("hub")
        assert payload["records_unreadable"] == 1
        assert payload["clock_offset_s"] == -18_144_000.0
        # the counts survive a reconnect (they are the device's, not the connection's)
        script_of(dev).put(END)
        await wait_until(lambda: len(script_of(dev).contexts) == 2, what="reconnected")
        await wait_until(lambda: state_of(dev) is LinkState.CONNECTED, what="connected again")
        assert dev.status.payload("hub")["records_unreadable"] == 1
        assert script_of(dev).contexts[-1].findings is dev.findings


async def test_backoff_resets_after_a_session_that_stored_something(
    store: Store, publisher: Publisher
) -> None:
    dev = device("cgm1")
    script = script_of(dev)
    # Four sessions that end at once, one that stores a reading, then one more empty one.
    script.put(END, END, END, END, make_reading("cgm1", 0), END, END)
    supervisor = Supervisor([dev], store, publisher, SupervisorConfig(0.01, 10.0))
    async with status_history(dev) as history, supervising(supervisor):
        await wait_until(
            lambda: sum(s.state is LinkState.BACKOFF for s in history) >= 6, what="six backoffs"
        )
    delays = [s.retry_in_s for s in history if s.state is LinkState.BACKOFF][:6]
    assert all(d is not None for d in delays)
    d = [float(x) for x in delays if x is not None]
    # Doubling ceilings 0.01, 0.02, 0.04, 0.08, each jittered into [ceiling/2, ceiling] ...
    for attempt in range(4):
        ceiling = 0.01 * 2**attempt
        assert ceiling / 2 <= d[attempt] <= ceiling
    # ... then the session that stored a reading starts the sequence over.
    assert 0.005 <= d[4] <= 0.01
    assert 0.01 <= d[5] <= 0.02
    assert dev.stored == 1


async def test_reading_for_another_device_is_refused(store: Store, publisher: Publisher) -> None:
    dev = device("cgm1")
    script = script_of(dev)
    script.put(make_reading("someone-else", 0))
    supervisor = Supervisor([dev], store, publisher, SupervisorConfig(0.01, 0.02))
    with capture_logs() as logs:
        async with status_history(dev) as history, supervising(supervisor):
            await wait_until(lambda: len(script.contexts) >= 2, what="retry after refusal")
    assert store.count() == 0
    assert dev.received == 1
    assert dev.stored == 0
    backoff = next(s for s in history if s.state is LinkState.BACKOFF)
    assert backoff.reason == "driver produced a reading for 'someone-else'"
    assert script.closed >= 1
    assert any(e["event"] == "device_link_lost" and e["error"] == "DeviceError" for e in logs)


async def test_cancelling_closes_sessions_and_mark_stopped_reports_every_device(
    store: Store, publisher: Publisher
) -> None:
    devices = [device("cgm-a"), device("cgm-b", Script(open_error=lambda: DeviceRefused("no")))]
    supervisor = Supervisor(devices, store, publisher, SupervisorConfig(0.01, 0.02))
    async with supervising(supervisor) as task:
        await wait_until(
            lambda: (
                state_of(devices[0]) is LinkState.CONNECTED
                and state_of(devices[1]) is LinkState.PARKED
            ),
            what="one connected, one parked",
        )
    assert task.cancelled()
    assert script_of(devices[0]).closed == script_of(devices[0]).entered == 1
    supervisor.mark_stopped()
    for dev in devices:
        assert dev.status is not None
        assert (dev.status.state, dev.status.reason) == (LinkState.STOPPED, "gateway stopped")


async def test_listeners_hear_each_new_reading_once_and_a_failing_one_is_contained(
    store: Store, publisher: Publisher
) -> None:
    dev = device("cgm1")
    script = script_of(dev)
    r0, r1 = make_reading("cgm1", 0), make_reading("cgm1", 1)
    script.put(r0, r0, r1)
    heard: list[int] = []

    def broken(_reading: Reading) -> None:
        raise ValueError("a listener bug")

    supervisor = Supervisor([dev], store, publisher, SupervisorConfig(0.01, 0.02))
    supervisor.listeners.extend([broken, lambda r: heard.append(r.seq)])
    with capture_logs() as logs:
        async with supervising(supervisor):
            await wait_until(
                lambda: dev.received == 3 and dev.stored == 2, what="all three received, stored"
            )
    assert heard == [0, 1]
    assert sum(e["event"] == "reading_listener_failed" for e in logs) == 2
    assert state_of(dev) is LinkState.CONNECTED
