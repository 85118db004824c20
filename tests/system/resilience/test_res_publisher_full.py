"""The publisher on a full disk: acknowledged rows it cannot delete do not stop it or repeat.

A store whose deletes are refused with `StoreFull` (as SQLite refuses them when the WAL cannot
grow) for a while, a real publisher and the real mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gatewayd.backoff import Backoff
from gatewayd.models import Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.ops.config import MqttConfig
from gatewayd.store import Store, StoreFull
from mosquitto import Mosquitto
from polling import wait_until
from subscriber import Subscriber

pytestmark = pytest.mark.timeout(20)


def refused() -> asyncio.Future[None]:
    """What the writer thread answers when SQLite refuses the commit with SQLITE_FULL."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(StoreFull("store: database or disk is full"))
    return future


class FullStore(Store):
    """Refuses deletes (outbox acknowledgements, sent messages) while `full` is set."""

    full = True

    def mark_delivered(self, rowids: Iterable[int]) -> None:
        if self.full:
            raise StoreFull("store: database or disk is full")
        super().mark_delivered(rowids)

    def mark_delivered_soon(self, rowids: list[int], *, lazy: bool = True) -> asyncio.Future[None]:
        if self.full:
            return refused()
        return super().mark_delivered_soon(rowids, lazy=lazy)

    def delete_message(self, rowid: int) -> None:
        if self.full:
            raise StoreFull("store: database or disk is full")
        super().delete_message(rowid)

    def delete_message_soon(self, rowid: int) -> asyncio.Future[None]:
        if self.full:
            return refused()
        return super().delete_message_soon(rowid)


async def test_publisher_keeps_going_and_catches_up_when_space_returns(
    broker: Mosquitto, tmp_path: Path
) -> None:
    hub = f"hub-res-{uuid.uuid4().hex[:8]}"
    store = FullStore(tmp_path / "gatewayd.db")
    now = datetime.now(UTC)
    for seq in range(3):
        store.add(
            Reading(
                device="cgm-1",
                driver="fed",
                serial="SN1",
                session="s1",
                seq=seq,
                time=now,
                received=now,
                glucose_mgdl=100.0,
            )
        )
    store.add_message(f"gatewayd/{hub}/cgm-1/alert", b"low", retain=False)
    store.add_message(f"gatewayd/{hub}/cgm-1/alert", b"high", retain=False)
    config = MqttConfig(
        host="127.0.0.1",
        port=broker.port,
        username=broker.username,
        password=broker.password,
        client_id=f"gatewayd-{hub}",
    )
    publisher = Publisher(config, hub, store, backoff=Backoff(0.05, 0.2))
    async with Subscriber(broker, [f"gatewayd/{hub}/#"]) as sub:
        task = asyncio.create_task(publisher.run())
        try:
            await sub.wait_for(lambda ms: len([m for m in ms if "/alert" in m.topic]) == 2)
            await sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/reading")]) == 3)
            publisher.notify()  # another round of the drain loop: nothing is sent twice
            await wait_until(lambda: publisher.delivered == 3, 5, "three PUBACKs")
            assert store.outbox_depth() == 3  # not deleted yet: a restart would send them again
            store.full = False
            publisher.notify()
            await wait_until(lambda: store.outbox_depth() == 0, 5, "acknowledgements written")
            await wait_until(lambda: not store.pending_messages(10), 5, "messages deleted")
            assert not task.done()
        finally:
            publisher.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(task, 5)
    assert [m.payload for m in sub.on("/alert")] == [b"low", b"high"]
    assert len(sub.on("/reading")) == 3
    store.close()
