"""The integrator side of a fleet: backends consuming many hubs with MQTT 5 shared subscriptions.

Several real gatewayd `Publisher`s (each its own hub id, client id, LWT and SQLite store) publish
to a real mosquitto. Consumers are plain aiomqtt MQTT 5 clients (clean start) in two groups:

- `$share/backend/gatewayd/+/+/reading`: three members; each reading goes to exactly one of them;
- `$share/audit/gatewayd/+/+/reading`: an independent group that also gets every reading.

mosquitto runs with `max_queued_messages 0` (its default of 1000 would silently drop QoS 1
messages for a member that falls behind) and `set_tcp_nodelay true`.

What a member that leaves loses: mosquitto 2.0 does not hand the QoS 1 messages it had already
sent to a departing member (unacknowledged or queued) to the rest of the group (the MQTT 5 spec
says SHOULD, mosquitto does not: eclipse-mosquitto/mosquitto#2662). So the guarantee asserted
for a member that just disconnects is the one the brokers give: everything published after it
has gone reaches the remaining members. A member that leaves the documented way (UNSUBSCRIBE,
take in what was already on its way, then DISCONNECT) loses nothing for the group at all.
docs/fleet.md tells integrators about both.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from gatewayd.backoff import Backoff
from gatewayd.models import Direction, Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.ops.config import MqttConfig
from gatewayd.store import Store
from mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(30)

HUBS = 4
DEVICES = 2  # per hub
READINGS = "gatewayd/+/+/reading"
BACKEND = f"$share/backend/{READINGS}"
AUDIT = f"$share/audit/{READINGS}"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WAIT_S = 15.0


# -- the consumers -------------------------------------------------------------------------------


class Tally:
    """What every consumer received, with one condition to wait on across all of them."""

    def __init__(self) -> None:
        self.changed = asyncio.Condition()

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Until `condition()` holds; TimeoutError naming `what` after `WAIT_S`."""
        try:
            async with asyncio.timeout(WAIT_S), self.changed:
                await self.changed.wait_for(condition)
        except TimeoutError:
            raise TimeoutError(f"{what}: not within {WAIT_S} s") from None


class Member:
    """One member of a shared-subscription group: an aiomqtt MQTT 5 client, clean start."""

    def __init__(self, broker: Mosquitto, name: str, topic_filter: str, tally: Tally) -> None:
        self.name = name
        self.topic_filter = topic_filter
        self.ids: list[str] = []
        self.retained = 0
        self._tally = tally
        self._client = aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=name,
            protocol=aiomqtt.ProtocolVersion.V5,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and subscribe (returns once the SUBACK is in)."""
        await self._client.__aenter__()
        await self._client.subscribe(self.topic_filter, qos=1)
        self._task = asyncio.create_task(self._collect())

    async def unsubscribe(self) -> None:
        """Leave the group (returns once the UNSUBACK is in); the connection stays up."""
        await self._client.unsubscribe(self.topic_filter)

    async def stop(self) -> None:
        """Disconnect cleanly (returns once the DISCONNECT is written and the socket closed)."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        await self._client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        async for message in self._client.messages:
            assert isinstance(message.payload, bytes)
            self.ids.append(json.loads(message.payload)["id"])
            self.retained += message.retain
            await self._tally.notify()


def union(members: list[Member]) -> set[str]:
    return {i for m in members for i in m.ids}


def covers(members: list[Member], ids: set[str]) -> Callable[[], bool]:
    """A condition: the members together have received every one of `ids`."""
    return lambda: union(members) >= ids


def received(members: list[Member]) -> int:
    return sum(len(m.ids) for m in members)


# -- the hubs ------------------------------------------------------------------------------------


class Hub:
    """One simulated hub: its own store, Publisher (client id, LWT) and sensors."""

    def __init__(self, broker: Mosquitto, folder: Path, index: int) -> None:
        self.id = f"fleet-hub-{index:02d}"
        self.store = Store(folder / f"{self.id}.db")
        config = MqttConfig(
            host="127.0.0.1",
            port=broker.port,
            username=broker.username,
            password=broker.password,
            client_id=f"gatewayd-{self.id}",
        )
        self.publisher = Publisher(config, self.id, self.store, backoff=Backoff(0.05, 0.2))
        self.task: asyncio.Task[None] | None = None
        self._seq = 0

    def add_round(self) -> list[str]:
        """One new reading per device, stored and handed to the publisher; their ids."""
        ids = []
        for d in range(DEVICES):
            measured = T0 + timedelta(minutes=5 * self._seq)
            reading = Reading(
                device=f"cgm-{d}",
                driver="testcgm",
                serial=f"SN-{self.id}-{d}",  # the id hashes the serial: unique per hub
                session="sess-1",
                seq=self._seq,
                time=measured,
                received=measured + timedelta(seconds=2),
                glucose_mgdl=100.0 + self._seq % 40,
                trend_mgdl_min=0.5,
                direction=Direction.FLAT,
            )
            assert self.store.add(reading)
            ids.append(reading.id)
        self._seq += 1
        self.publisher.notify()
        return ids


class Fleet:
    """The hubs, the two consumer groups and every id handed to a publisher, in order."""

    def __init__(self, broker: Mosquitto, folder: Path) -> None:
        self.broker = broker
        self.tally = Tally()
        self.hubs = [Hub(broker, folder, i) for i in range(HUBS)]
        self.backend = [Member(broker, f"backend-{i}", BACKEND, self.tally) for i in range(3)]
        self.audit = [Member(broker, f"audit-{i}", AUDIT, self.tally) for i in range(2)]
        self.rounds: list[list[str]] = []  # ids of every round, in the order they were added

    def add_round(self) -> list[str]:
        ids = [i for hub in self.hubs for i in hub.add_round()]
        self.rounds.append(ids)
        return ids

    def ids(self, start: int = 0) -> set[str]:
        return {i for r in self.rounds[start:] for i in r}

    def reconnects(self) -> int:
        return sum(hub.publisher.reconnects for hub in self.hubs)

    async def start_consumers(self) -> None:
        for member in [*self.backend, *self.audit]:
            await member.start()

    def start_hubs(self) -> None:
        for hub in self.hubs:
            hub.task = asyncio.create_task(hub.publisher.run())

    async def close(self) -> None:
        for hub in self.hubs:
            hub.publisher.stop()
        try:
            async with asyncio.timeout(10):
                await asyncio.gather(*(h.task for h in self.hubs if h.task is not None))
        finally:
            for hub in self.hubs:
                hub.store.close()
            for member in [*self.backend, *self.audit]:
                await member.stop()


@pytest.fixture
def fleet_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test: never drops QoS 1 messages queued for a slow member."""
    server = Mosquitto(
        tmp_path / "mosquitto", extra_config=("max_queued_messages 0", "set_tcp_nodelay true")
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def fleet(fleet_broker: Mosquitto, tmp_path: Path) -> AsyncIterator[Fleet]:
    """Consumers subscribed first (nothing is retained on `reading`), then the hubs started."""
    made = Fleet(fleet_broker, tmp_path / "hubs")
    async with AsyncExitStack() as stack:
        stack.push_async_callback(made.close)
        await made.start_consumers()
        made.start_hubs()
        yield made


def assert_no_duplicates(fleet: Fleet, members: list[Member]) -> None:
    """No id reached two members (nor one twice) unless a hub republished after a reconnect."""
    if fleet.reconnects():
        return  # a resend after a reconnect is a new message: a duplicate is allowed then
    every = [i for m in members for i in m.ids]
    assert len(every) == len(set(every)), {m.name: len(m.ids) for m in members}


# -- the tests -----------------------------------------------------------------------------------


async def test_each_reading_reaches_exactly_one_member_of_every_group(fleet: Fleet) -> None:
    # A backlog (readings stored while the hubs connect) followed by a live stream.
    for _ in range(10):
        fleet.add_round()
    await fleet.tally.wait_for(lambda: union(fleet.backend) >= fleet.ids(), "backlog to backend")
    for _ in range(10):
        fleet.add_round()
    expected = fleet.ids()
    assert len(expected) == 20 * HUBS * DEVICES

    await fleet.tally.wait_for(
        lambda: union(fleet.backend) >= expected and union(fleet.audit) >= expected,
        "every reading to both groups",
    )
    # The union is exactly what the hubs published, and no id went to two members.
    assert union(fleet.backend) == expected
    assert union(fleet.audit) == expected
    assert_no_duplicates(fleet, fleet.backend)
    assert_no_duplicates(fleet, fleet.audit)
    # The load is spread over every member of each group.
    shares = {m.name: len(m.ids) for m in [*fleet.backend, *fleet.audit]}
    assert all(count > 0 for count in shares.values()), shares
    assert all(m.retained == 0 for m in fleet.backend)  # `reading` is never retained


class Stream:
    """A continuous stream of rounds: a new one as soon as the audit group has the one before
    last (at most two rounds in flight), so that members leave while messages are moving."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Stream:
        self._task = asyncio.create_task(self._feed())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _feed(self) -> None:
        fleet = self.fleet
        while not self._stop.is_set():
            fleet.add_round()
            if len(fleet.rounds) >= 2:
                await fleet.tally.wait_for(
                    covers(fleet.audit, set(fleet.rounds[-2])), "audit keeps up"
                )
            else:
                await asyncio.sleep(0)  # yield to the publishers once; not a synchronisation

    async def rounds_after(self, start: int, count: int) -> None:
        """Until `count` rounds were added after round `start`, then stop feeding."""
        assert self._task is not None
        assert not self._task.done(), self._task
        await self.fleet.tally.wait_for(
            lambda: len(self.fleet.rounds) >= start + count, f"{count} more rounds"
        )
        self._stop.set()
        await asyncio.wait_for(self._task, WAIT_S)


async def test_a_member_leaving_mid_stream_loses_nothing_published_after(fleet: Fleet) -> None:
    backend, audit = fleet.backend, fleet.audit
    leaver, stayers = backend[0], backend[1:]
    async with Stream(fleet) as stream:
        # Mid-stream: once the group has consumed a good part of the stream, one member leaves.
        await fleet.tally.wait_for(lambda: received(backend) >= 20 * HUBS * DEVICES, "stream")
        await leaver.stop()
        # Every round added from here on was stored after the leaver's DISCONNECT was on the
        # wire; the broker reads it before any PUBLISH those readings cause.
        boundary = len(fleet.rounds)
        await stream.rounds_after(boundary, 15)

    published_after = fleet.ids(boundary)
    assert len(published_after) >= 15 * HUBS * DEVICES
    await fleet.tally.wait_for(
        lambda: union(stayers) >= published_after and union(audit) >= fleet.ids(),
        "the stayers get everything published after the leaver went",
    )
    # Nothing published after the leaver went reached it; the stayers shared all of it.
    assert not published_after & set(leaver.ids)
    assert union(stayers) >= published_after
    assert all(published_after & set(m.ids) for m in stayers), [len(m.ids) for m in stayers]
    assert_no_duplicates(fleet, backend)
    # The other group never noticed: it has every reading of the whole run.
    assert union(audit) == fleet.ids()
    assert_no_duplicates(fleet, audit)
    # Before the boundary the group (leaver included) may miss only what mosquitto had
    # already sent or queued to the leaver when it went (a few readings), never many rounds.
    missing_before = fleet.ids() - published_after - union(backend)
    assert len(missing_before) < HUBS * DEVICES * 3, len(missing_before)


async def test_a_member_that_unsubscribes_before_leaving_loses_nothing(fleet: Fleet) -> None:
    """The graceful way out (docs/fleet.md): UNSUBSCRIBE, take in what was already on its way,
    then DISCONNECT. Nothing is lost for the group, even mid-stream."""
    backend, audit = fleet.backend, fleet.audit
    leaver, stayers = backend[0], backend[1:]
    async with Stream(fleet) as stream:
        await fleet.tally.wait_for(lambda: received(backend) >= 20 * HUBS * DEVICES, "stream")
        await leaver.unsubscribe()
        # The UNSUBACK is in: the broker routes nothing more to the leaver. What it had already
        # sent or queued for the leaver still arrives; wait for every earlier round to be in.
        boundary = len(fleet.rounds)
        earlier = fleet.ids(0) - fleet.ids(boundary)
        await fleet.tally.wait_for(lambda: union(backend) >= earlier, "the leaver's last share")
        await leaver.stop()
        await stream.rounds_after(boundary, 15)

    await fleet.tally.wait_for(
        lambda: union(backend) >= fleet.ids() and union(audit) >= fleet.ids(),
        "every reading to both groups",
    )
    assert union(backend) == fleet.ids()  # nothing lost, before or after the leaver went
    assert not fleet.ids(boundary) & set(leaver.ids)
    assert all(fleet.ids(boundary) & set(m.ids) for m in stayers)
    assert_no_duplicates(fleet, backend)
    assert union(audit) == fleet.ids()
