"""gatewayd.mqtt.client.Client against a real mosquitto: `publish_now` and its PUBACKs."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import aiomqtt
import pytest

from gatewayd.mqtt.client import Client
from mosquitto import Mosquitto
from mqtt_tap import tap_to
from polling import wait_until
from subscriber import Subscriber

pytestmark = pytest.mark.timeout(30)


async def test_messages_the_socket_cannot_take_at_once_go_out_when_it_has_room(
    broker: Mosquitto,
) -> None:
    """`publish_now` writes in the event loop's next turn; when the link backs up (the broker
    stops reading, small socket buffers), the rest waits for room and all arrive, in order."""
    hub, total, acked = new_hub(), 400, list[bool]()
    async with tap_to(broker, receive_buffer=4096) as tap:
        client = client_for(
            broker,
            hub,
            port=tap.port,
            max_inflight_messages=total,
            socket_options=((socket.SOL_SOCKET, socket.SO_SNDBUF, 4096),),
        )
        async with client, Subscriber(broker, [f"test/{hub}/#"]) as sub:
            tap.stop_reading()
            for n in range(total):
                client.publish_now(f"test/{hub}/{n}", b"x" * 400, retain=False, acked=acked.append)
            await wait_until(lambda: tap.unread() >= 2048, what="the relay's buffer full")
            assert not acked
            tap.read_again()
            await wait_until(lambda: len(acked) == total, what="every PUBACK")
            messages = await sub.wait_for(lambda m: len(m) >= total)
    assert acked == [True] * total
    assert [m.topic for m in messages] == [f"test/{hub}/{n}" for n in range(total)]
    assert tap.publishes == total


async def test_a_publish_the_broker_refuses_is_acknowledged_as_not_delivered(
    acl_broker: Mosquitto,
) -> None:
    """MQTT 5: a PUBACK with a failure reason code (the ACL denies `reading` topics) reaches
    `acked` as False, in the order the PUBACKs came; the allowed ones as True."""
    hub, acked = new_hub(), list[tuple[str, bool]]()
    topics = [f"gatewayd/{hub}/cgm1/{leaf}" for leaf in ("reading", "state", "reading", "state")]
    client = client_for(acl_broker, hub, protocol=aiomqtt.ProtocolVersion.V5)
    async with client, Subscriber(acl_broker, [f"gatewayd/{hub}/#"]) as sub:
        for topic in topics:
            client.publish_now(
                topic, b"{}", retain=False, acked=lambda ok, t=topic: acked.append((t, ok))
            )
        await wait_until(lambda: len(acked) == len(topics), what="every PUBACK")
        messages = await sub.wait_for(lambda m: len(m) >= 2)
    assert acked == [(topic, topic.endswith("/state")) for topic in topics]
    assert [m.topic for m in messages] == [f"gatewayd/{hub}/cgm1/state"] * 2


def new_hub() -> str:
    return f"hub-{uuid.uuid4().hex[:10]}"


def client_for(broker: Mosquitto, hub: str, *, port: int | None = None, **options: Any) -> Client:
    """A client of the test broker (through `port`, a relay, when given) as the hub's gateway."""
    return Client(
        "127.0.0.1",
        broker.port if port is None else port,
        username=broker.username,
        password=broker.password,
        identifier=f"gatewayd-{hub}",
        **options,
    )
