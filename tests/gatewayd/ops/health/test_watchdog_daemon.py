"""The watchdog of an in-process Daemon: pings stop when the data path wedges, resume when healed.

Devices come from the scripted `DriverPlugin` (tests/support/scripted_driver.py: the real
driver contract, fed by the test through a queue, with the optional `expected_interval` hook);
the broker is a real mosquitto; systemd is a datagram socket (`notify_socket`). Limits are shrunk
to fractions of a second through `WatchdogOptions` so each wedge shows within a test's budget.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gatewayd.daemon import Daemon, Plan
from gatewayd.models import Reading
from gatewayd.mqtt import publisher as publisher_module
from gatewayd.ops.config import parse
from gatewayd.ops.health import HealthPolicy, Notifier
from gatewayd.ops.health.watchdog import WatchdogOptions
from mosquitto import Mosquitto, free_port
from polling import wait_until
from scripted_driver import Script, plan_of, scripted_plugin

if TYPE_CHECKING:  # the fixture's type (its conftest.py is not importable by name)
    from conftest import NotifySocket

pytestmark = pytest.mark.timeout(60)

NOW = datetime.now(UTC).replace(microsecond=0)
#: Seconds between health checks (and pings while healthy) in these tests.
TICK = 0.05


# -- a scripted device -----------------------------------------------------------------------


FED = scripted_plugin("fed")
#: Sequence numbers of the fed readings (their measured times one second apart).
_SEQ = itertools.count(1)


def feed(script: Script, device: str) -> None:
    """Feed the device its next reading (recent, so the start-up prune keeps it)."""
    seq = next(_SEQ)
    measured = NOW - timedelta(minutes=60) + timedelta(seconds=seq)
    script.put(
        Reading(
            device=device,
            driver="fed",
            serial=script.serial,
            session="s1",
            seq=seq,
            time=measured,
            received=measured,
            glucose_mgdl=100.0 + seq % 50,
        )
    )


# -- rig -------------------------------------------------------------------------------------


def make_plan(tmp_path: Path, url: str, broker: Mosquitto, interval: float) -> Plan:
    config = parse(
        {
            "hub": {"id": f"hub-{uuid.uuid4().hex[:10]}"},
            "store": {"path": str(tmp_path / "gatewayd.db")},
            "mqtt": {"url": url, "username": broker.username, "password": broker.password},
            "supervisor": {"backoff_min": 0.05, "backoff_max": 0.2},
            "devices": [{"driver": "fed", "id": "cgm-a", "serial": "A", "interval": interval}],
        }
    )
    return plan_of(config, FED)


def options(
    notify: NotifySocket, *, ready_timeout: float = 10.0, **policy: float
) -> WatchdogOptions:
    """Pings every TICK to `notify`; `policy` overrides HealthPolicy (min_silence 0)."""
    return WatchdogOptions(
        policy=HealthPolicy(**{"min_silence": 0.0, **policy}),
        ready_timeout=ready_timeout,
        interval=TICK,
        notifier=Notifier(str(notify.path)),
    )


@asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(daemon.run())
    try:
        yield task
    finally:
        daemon.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), 15)
        except TimeoutError:
            task.cancel()
            raise AssertionError("the daemon did not stop within 15 s") from None


def script_of(daemon: Daemon) -> Script:
    script = daemon.supervisor.devices[0].options
    assert isinstance(script, Script)
    return script


def pings(messages: list[dict[str, str]]) -> int:
    return sum(1 for m in messages if m.get("WATCHDOG") == "1")


def statuses(messages: list[dict[str, str]]) -> list[str]:
    return [m["STATUS"] for m in messages if "STATUS" in m]


async def assert_no_pings_for(notify: NotifySocket, seconds: float) -> None:
    """Nothing is pinged during `seconds` (many ticks): the watchdog would fire."""
    mark = notify.mark()
    await asyncio.sleep(seconds)  # a window of ticks to observe, not a synchronisation delay
    assert pings(notify.since(mark)) == 0, notify.since(mark)


@contextmanager
def frozen(broker: Mosquitto) -> Iterator[None]:
    """SIGSTOP the broker: its TCP connections stay open, but nothing is acknowledged."""
    process = broker._process  # the harness keeps the Popen private; the pid is all we need
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


# -- tests -----------------------------------------------------------------------------------


async def test_a_connected_but_silent_device_stops_the_pings_until_it_delivers_again(
    broker: Mosquitto, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    # 0.3 s expected interval x grace 2: silent for 0.6 s while connected is a wedge.
    daemon = Daemon(
        make_plan(tmp_path, broker.url(), broker, interval=0.3),
        watchdog=options(notify_socket, grace=2.0),
    )
    async with running(daemon):
        await notify_socket.wait_for(lambda m: any("READY" in x for x in m), what="READY=1")
        script = script_of(daemon)
        while pings(notify_socket.poll()) < 5:  # readings flow: healthy, pinged
            feed(script, "cgm-a")
            await asyncio.sleep(TICK)
        assert not any("WEDGED" in s for s in statuses(notify_socket.poll()))

        # The device stays connected and says nothing.
        await notify_socket.wait_for(
            lambda m: any(
                s.startswith("WEDGED: cgm-a: connected, no reading") for s in statuses(m)
            ),
            what="the wedge in STATUS",
        )
        await assert_no_pings_for(notify_socket, 10 * TICK)
        assert daemon.watchdog.verdict is not None
        assert not daemon.watchdog.verdict.healthy

        # One reading heals it: pings resume with a plain status.
        mark = notify_socket.mark()
        feed(script, "cgm-a")
        await notify_socket.wait_for(lambda m: pings(m[mark:]) >= 1, what="pings to resume")
        healed = statuses(notify_socket.since(mark))
        assert healed
        assert not healed[-1].startswith("WEDGED")
        assert "1 device (1 connected); broker connected" in healed[-1]
    assert notify_socket.poll()[-1] == {
        "STOPPING": "1",
        "STATUS": "stopping: flushing the outbox",
    }


async def test_a_publisher_stuck_on_a_silent_broker_stops_the_pings_until_pubacks_flow(
    own_broker: Mosquitto,
    tmp_path: Path,
    notify_socket: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A publish that never completes (as aiomqtt does for a link that died in flight, up to its
    # timeout): without the timeout, only the watchdog can end it.
    monkeypatch.setattr(publisher_module, "_PUBLISH_TIMEOUT", 120.0)
    daemon = Daemon(
        make_plan(tmp_path, own_broker.url(), own_broker, interval=600.0),
        watchdog=options(notify_socket, publisher_stall=0.5),
    )
    async with running(daemon):
        await notify_socket.wait_for(lambda m: any("READY" in x for x in m), what="READY=1")
        script = script_of(daemon)
        feed(script, "cgm-a")
        await wait_until(lambda: daemon.publisher.delivered == 1, what="the first PUBACK")

        with frozen(own_broker):
            feed(script, "cgm-a")
            await notify_socket.wait_for(
                lambda m: any(
                    s.startswith("WEDGED: broker: connected, 1 readings owed, no PUBACK")
                    for s in statuses(m)
                ),
                what="the publisher wedge in STATUS",
            )
            assert daemon.publisher.connected.is_set()  # "online", yet delivering nothing
            await assert_no_pings_for(notify_socket, 10 * TICK)
            mark = notify_socket.mark()

        # The broker wakes up: the PUBACK arrives, the outbox drains, pings resume.
        await notify_socket.wait_for(lambda m: pings(m[mark:]) >= 1, what="pings to resume")
        assert daemon.publisher.delivered == 2
        assert not statuses(notify_socket.since(mark))[-1].startswith("WEDGED")


async def test_an_unreachable_broker_is_an_honest_retry_and_keeps_the_pings(
    own_broker: Mosquitto, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """Decision: a restart cannot make a broker reachable; readings wait in the store."""
    daemon = Daemon(
        make_plan(tmp_path, own_broker.url(), own_broker, interval=600.0),
        watchdog=options(notify_socket, publisher_stall=0.3),
    )
    async with running(daemon):
        await notify_socket.wait_for(lambda m: any("READY" in x for x in m), what="READY=1")
        script = script_of(daemon)
        own_broker.stop()
        await wait_until(lambda: not daemon.publisher.connected.is_set(), what="the link to drop")
        for _ in range(3):
            feed(script, "cgm-a")
        await notify_socket.wait_for(
            lambda m: any("broker unreachable, retrying; outbox 3" in s for s in statuses(m)),
            what="the retry in STATUS",
        )
        mark = notify_socket.mark()
        await asyncio.sleep(10 * TICK)  # ten ticks of a dead broker, well beyond the stall limit
        window = notify_socket.since(mark)
        assert pings(window) >= 3
        assert not any(s.startswith("WEDGED") for s in statuses(window))

        own_broker.start()
        await wait_until(lambda: daemon.publisher.delivered == 3, what="the outbox to drain")
        await notify_socket.wait_for(
            lambda m: "broker connected; outbox 0; delivered 3" in statuses(m)[-1],
            what="the drained status",
        )


async def test_ready_without_the_broker_after_ready_timeout(
    broker: Mosquitto, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """A hub booting while the broker is down still starts (and stores readings) in time."""
    dead = f"mqtt://127.0.0.1:{free_port()}"
    daemon = Daemon(
        make_plan(tmp_path, dead, broker, interval=600.0),
        watchdog=options(notify_socket, ready_timeout=0.5),
    )
    started = time.monotonic()
    async with running(daemon):
        await notify_socket.wait_for(lambda m: any("READY" in x for x in m), what="READY=1")
        waited = time.monotonic() - started
        ready = next(m for m in notify_socket.poll() if "READY" in m)
        assert waited >= 0.45
        assert "broker unreachable, retrying" in ready["STATUS"]
        await notify_socket.wait_for(lambda m: pings(m) >= 2, what="pings without a broker")


async def test_ready_as_soon_as_the_broker_link_is_up(
    broker: Mosquitto, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    daemon = Daemon(
        make_plan(tmp_path, broker.url(), broker, interval=600.0),
        watchdog=options(notify_socket, ready_timeout=30.0),
    )
    async with running(daemon):
        await notify_socket.wait_for(lambda m: any("READY" in x for x in m), what="READY=1")
        assert daemon.publisher.connected.is_set()
        first = notify_socket.poll()[0]
        assert first["READY"] == "1"
        assert "broker connected" in first["STATUS"]
        assert pings(notify_socket.poll()[:1]) == 0  # no ping before READY


async def test_a_blocked_event_loop_sends_nothing(
    broker: Mosquitto, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """The pings come from the daemon's own loop: a synchronous stall stops them too."""
    daemon = Daemon(
        make_plan(tmp_path, broker.url(), broker, interval=600.0),
        watchdog=options(notify_socket),
    )
    async with running(daemon):
        await notify_socket.wait_for(lambda m: pings(m) >= 2, what="pings")
        mark = notify_socket.mark()
        time.sleep(10 * TICK)  # noqa: ASYNC251 - blocks the loop as a hung synchronous call would
        assert pings(notify_socket.since(mark)) == 0
        await notify_socket.wait_for(lambda m: pings(m[mark:]) >= 1, what="pings after the stall")
