"""The Daemon in-process: wiring, clean stop (stop() and SIGTERM), and what stays in the store.

Devices come from a small scripted `DriverPlugin` defined here (the real driver contract, fed
by the test), wired through a hand-built `Plan` because the entry points know no such driver.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatewayd.daemon import Daemon
from gatewayd.device_status import LinkState
from gatewayd.models import Reading
from gatewayd.ops.config import Config, parse
from gatewayd.store import Store
from mosquitto import Mosquitto, free_port
from polling import wait_until
from scripted_driver import plan_of, scripted_plugin, scripts
from subscriber import Received, Subscriber

pytestmark = pytest.mark.timeout(20)

# Recent readings: the daemon prunes history older than the retention period when it starts.
NOW = datetime.now(UTC).replace(microsecond=0)


FED = scripted_plugin("fed")


# -- helpers ---------------------------------------------------------------------------------


def make_reading(device: str, serial: str, seq: int) -> Reading:
    measured = NOW - timedelta(minutes=60 - 5 * seq)
    return Reading(
        device=device,
        driver="fed",
        serial=serial,
        session="sess-1",
        seq=seq,
        time=measured,
        received=measured + timedelta(seconds=2),
        glucose_mgdl=110.0 + seq,
    )


def make_config(tmp_path: Path, broker: Mosquitto, hub: str, *, url: str | None = None) -> Config:
    return parse(
        {
            "hub": {"id": hub},
            "store": {"path": str(tmp_path / "gatewayd.db")},
            "mqtt": {
                "url": url or broker.url(),
                "username": broker.username,
                "password": broker.password,
            },
            "supervisor": {"backoff_min": 0.05, "backoff_max": 0.2},
            "devices": [
                {"driver": "fed", "id": "cgm-a", "serial": "A"},
                {"driver": "fed", "id": "cgm-b", "serial": "B"},
            ],
        }
    )


def new_hub() -> str:
    return f"hub-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def started(daemon: Daemon) -> AsyncIterator[asyncio.Task[None]]:
    """Run the daemon until the block ends; `on_ready` must have been called by then."""
    ready = asyncio.Event()
    task = asyncio.create_task(daemon.run(on_ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield task
    finally:
        if not task.done():
            daemon.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except TimeoutError:
            task.cancel()
            raise AssertionError("the daemon did not stop within 10 s") from None


def last_on(messages: list[Received], topic: str) -> Received:
    return [m for m in messages if m.topic == topic][-1]


def assert_closed(store: Store) -> None:
    with pytest.raises(sqlite3.ProgrammingError):
        store.outbox_depth()


# -- tests -----------------------------------------------------------------------------------


async def test_runs_publishes_and_stops_cleanly(broker: Mosquitto, tmp_path: Path) -> None:
    hub = new_hub()
    plan = plan_of(make_config(tmp_path, broker, hub), FED)
    daemon = Daemon(plan, flush_timeout=5.0)
    fed = {
        device_id: [make_reading(device_id, feed.serial, seq) for seq in range(4)]
        for device_id, feed in scripts(plan).items()
    }
    async with Subscriber(broker, [f"gatewayd/{hub}/#"]) as sub:
        async with started(daemon) as task:
            for device_id, feed in scripts(plan).items():
                for reading in fed[device_id]:
                    feed.put(reading)
            await sub.wait_for(lambda m: len([x for x in m if x.topic.endswith("/reading")]) >= 8)
            daemon.stop()
            async with asyncio.timeout(10):
                assert await task is None
        messages = await sub.wait_for(
            lambda m: (
                bool(m) and m[-1].topic == f"gatewayd/{hub}/status" and m[-1].payload == b"offline"
            )
        )

    for device_id, feed in scripts(plan).items():
        published = [
            m.json()["id"] for m in messages if m.topic == f"gatewayd/{hub}/{device_id}/reading"
        ]
        assert published == [r.id for r in fed[device_id]]
        status = last_on(messages, f"gatewayd/{hub}/{device_id}/status").json()
        assert (status["state"], status["reason"]) == ("stopped", "gateway stopped")
        assert feed.closed == feed.entered == 1  # the session was closed on the way out
    # The devices' `stopped` statuses are sent before the hub says it goes offline (last).
    hub_topic = f"gatewayd/{hub}/status"
    device_statuses = [
        i for i, m in enumerate(messages) if m.topic.endswith("/status") and m.topic != hub_topic
    ]
    assert device_statuses
    assert max(device_statuses) < len(messages) - 1
    assert_closed(daemon.store)

    reopened = Store(plan.config.store.path)
    try:
        assert reopened.count() == 8
        assert reopened.outbox_depth() == 0
    finally:
        reopened.close()

    async with Subscriber(broker, [f"gatewayd/{hub}/status", f"gatewayd/{hub}/+/status"]) as late:
        retained = await late.wait_for(lambda m: len(m) >= 3)
    assert all(m.retain for m in retained)
    assert last_on(retained, f"gatewayd/{hub}/status").payload == b"offline"
    for device_id in scripts(plan):
        assert last_on(retained, f"gatewayd/{hub}/{device_id}/status").json()["state"] == (
            LinkState.STOPPED
        )


async def test_a_reading_committed_while_the_daemon_stops_is_still_published(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The device is stopped while its reading's commit is under way on the writer thread: the
    reading is stored all the same, and the publisher's last drain waits for it."""
    hub = new_hub()
    plan = plan_of(make_config(tmp_path, broker, hub), FED)
    daemon = Daemon(plan, flush_timeout=5.0)
    feed = scripts(plan)["cgm-a"]
    first, late = (make_reading("cgm-a", feed.serial, seq) for seq in range(2))
    lock = daemon.store.writer.lock
    stopped = daemon.supervisor.mark_stopped

    def mark_stopped() -> None:  # the devices are stopped: now the commit may land
        stopped()
        lock.release()

    daemon.supervisor.mark_stopped = mark_stopped  # type: ignore[method-assign]
    async with Subscriber(broker, [f"gatewayd/{hub}/cgm-a/reading"]) as sub:
        async with started(daemon) as task:
            feed.put(first)
            await sub.wait_for(lambda m: len(m) >= 1)
            lock.acquire()
            feed.put(late)
            device = next(d for d in daemon.supervisor.devices if d.id == "cgm-a")
            await wait_until(lambda: device.received == 2, what="the late reading taken")
            daemon.stop()
            async with asyncio.timeout(10):
                await task
        messages = await sub.wait_for(lambda m: len(m) >= 2)
    assert [m.json()["id"] for m in messages] == [first.id, late.id]
    reopened = Store(plan.config.store.path)
    try:
        assert reopened.outbox_depth() == 0
    finally:
        reopened.close()


async def test_sigterm_stops_the_daemon_cleanly(broker: Mosquitto, tmp_path: Path) -> None:
    hub = new_hub()
    plan = plan_of(make_config(tmp_path, broker, hub), FED)
    daemon = Daemon(plan, flush_timeout=5.0)
    async with Subscriber(broker, [f"gatewayd/{hub}/status"]) as sub:
        async with started(daemon) as task:
            await sub.wait_for(lambda m: [x.payload for x in m] == [b"online"])
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the daemon's loop signal handler
            async with asyncio.timeout(10):
                await task
        messages = await sub.wait_for(lambda m: len(m) >= 2)
    assert [m.payload for m in messages] == [b"online", b"offline"]
    assert all(f.closed == f.entered for f in scripts(plan).values())
    assert_closed(daemon.store)


async def test_undelivered_readings_stay_in_the_store_for_the_next_run(
    broker: Mosquitto, tmp_path: Path
) -> None:
    hub = new_hub()
    dead = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens: the broker is unavailable
    plan = plan_of(make_config(tmp_path, broker, hub, url=dead), FED)
    daemon = Daemon(plan, flush_timeout=5.0)
    fed = [make_reading("cgm-a", "A", seq) for seq in range(3)]
    async with started(daemon) as task:
        for reading in fed:
            scripts(plan)["cgm-a"].put(reading)
        await wait_until(lambda: daemon.store.count() == 3, what="readings stored")
        await wait_until(lambda: daemon.publisher.reconnects >= 1, what="broker attempts")
        started_stop = time.monotonic()
        daemon.stop()
        async with asyncio.timeout(10):
            await task
        assert time.monotonic() - started_stop < 2.0  # nothing to flush to: no waiting
    assert daemon.publisher.delivered == 0
    assert_closed(daemon.store)
    store = Store(plan.config.store.path)
    try:
        assert store.outbox_depth() == 3
    finally:
        store.close()

    # The next run, with the broker back, delivers them (oldest first).
    plan = plan_of(make_config(tmp_path, broker, hub), FED)
    second = Daemon(plan, flush_timeout=5.0)
    async with Subscriber(broker, [f"gatewayd/{hub}/+/reading"]) as sub, started(second):
        messages = await sub.wait_for(lambda m: len(m) >= 3)
        await wait_until(lambda: second.store.outbox_depth() == 0, what="outbox drained")
    assert [m.json()["id"] for m in messages] == [r.id for r in fed]
    store = Store(plan.config.store.path)
    try:
        assert store.outbox_depth() == 0
    finally:
        store.close()


async def test_stop_is_bounded_by_flush_timeout_when_the_broker_hangs(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A broker that accepts TCP and never answers: stop() gives up after flush_timeout."""
    accepted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        accepted.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hub = new_hub()
    plan = plan_of(make_config(tmp_path, broker, hub, url=f"mqtt://127.0.0.1:{port}"), FED)
    daemon = Daemon(plan, flush_timeout=0.5)
    try:
        async with started(daemon) as task:
            scripts(plan)["cgm-b"].put(make_reading("cgm-b", "B", 0))
            await wait_until(lambda: daemon.store.count() == 1, what="reading stored")
            await asyncio.wait_for(accepted.wait(), 10)  # the publisher hangs in its CONNECT
            began = time.monotonic()
            daemon.stop()
            async with asyncio.timeout(5):
                await task
            assert time.monotonic() - began < 3.0  # not the client's 10 s timeout
    finally:
        server.close()
        for writer in writers:
            writer.close()
    assert not daemon.publisher.connected.is_set()
    assert_closed(daemon.store)
    store = Store(plan.config.store.path)
    try:
        assert store.outbox_depth() == 1
    finally:
        store.close()


async def test_hub_is_offline_after_a_stop_cut_short_by_flush_timeout(
    own_broker: Mosquitto, tmp_path: Path
) -> None:
    """The broker freezes (SIGSTOP) while the daemon stops: the flush is cut short, and the hub
    must still end up `offline` (the retained birth must not outlive the daemon)."""
    hub = new_hub()
    plan = plan_of(make_config(tmp_path, own_broker, hub, url=own_broker.url()), FED)
    daemon = Daemon(plan, flush_timeout=0.5)
    assert own_broker._process is not None
    pid = own_broker._process.pid
    async with Subscriber(own_broker, [f"gatewayd/{hub}/status"]) as sub, started(daemon) as task:
        await sub.wait_for(lambda m: [x.payload for x in m] == [b"online"])
        os.kill(pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            daemon.stop()
            async with asyncio.timeout(10):
                await task
            assert time.monotonic() - began < 3.0
        finally:
            os.kill(pid, signal.SIGCONT)
    assert_closed(daemon.store)
    async with Subscriber(own_broker, [f"gatewayd/{hub}/status"]) as late:
        retained = await late.wait_for(lambda m: len(m) >= 1)
    assert retained[0].payload == b"offline"
