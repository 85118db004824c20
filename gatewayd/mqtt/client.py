"""The aiomqtt client of the broker link: readings handed to paho at once, written in the event
loop's next turn, and a refused PUBACK never counted as delivered (see `Client`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

import aiomqtt
from paho.mqtt.client import MQTT_ERR_SUCCESS, CallbackOnPublish_v2
from paho.mqtt.client import Client as PahoClient
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


class Client(aiomqtt.Client):
    """aiomqtt 2.x ignores the PUBACK reason code; a refused publish must not count as delivered.

    The reason code reaches paho's public `on_publish` callback (callback API version 2, the one
    aiomqtt asks for), where aiomqtt has put its own to wake the `publish()` awaiting that PUBACK.
    This client puts a callback in front of it that notes a failure, then hands every PUBACK on
    as it came. aiomqtt 2.x has no public accessor for its paho client: it is read once, here,
    from the attribute aiomqtt's own code uses; an aiomqtt that moved it fails the broker link
    loudly at its first attempt instead of losing the check.

    The readings themselves go out through `publish_now`: handed to paho at once, their PUBACK
    handled by a callback, without the task, event and timer aiomqtt's `publish()` makes for
    each message (the live path's largest cost per reading after the commit).

    A message queued on the event loop is written in the loop's next turn (`_flush`), with
    everything else queued meanwhile: aiomqtt would wake the loop through its self-pipe to add
    a writer, wait for the socket to be writable and remove the writer, two system calls and a
    turn more per message. Only when the socket cannot take it all (or paho queues from
    aiomqtt's connect thread) does aiomqtt's writer take over.

    MQTT 3.1.1 has no way to refuse a publish in its PUBACK, so there a broker ACL that denies
    our topics silently drops the messages: use MQTT 5 (the default) with such brokers.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused: list[str] = []
        paho: PahoClient = self._client
        self._paho = paho
        wake = paho.on_publish
        if wake is None:
            raise TypeError("aiomqtt set no on_publish callback on its paho client")
        self._wake_publisher = cast("CallbackOnPublish_v2", wake)
        #: PUBACK callbacks of the messages `publish_now` sent, by message id.
        self._acks: dict[int, Callable[[bool], None]] = {}
        paho.on_publish = self._on_puback
        self._event_loop = asyncio.get_running_loop()  # where aiomqtt made and runs its client
        register = paho.on_socket_register_write
        if register is None:
            raise TypeError("aiomqtt set no on_socket_register_write callback on its paho client")
        self._register_writer = register
        paho.on_socket_register_write = self._on_register_write

    def publish_now(
        self, topic: str, payload: bytes, *, retain: bool, acked: Callable[[bool], None]
    ) -> None:
        """Hand a QoS 1 message to paho; `acked(ok)` is called with its PUBACK (not `ok`: the
        broker refused it). Raises `MqttCodeError` when paho cannot take it (link down)."""
        info = self._paho.publish(topic, payload, 1, retain)
        if info.rc != MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        self._acks[info.mid] = acked

    def _on_register_write(self, client: PahoClient, userdata: Any, sock: Any) -> None:
        """paho has bytes to send: on the event loop, written in its next turn (`_flush`)."""
        try:
            here = asyncio.get_running_loop() is self._event_loop
        except RuntimeError:  # aiomqtt's connect thread
            here = False
        if here:
            self._event_loop.call_soon(self._flush, userdata, sock)
        else:
            self._register_writer(client, userdata, sock)

    def _flush(self, userdata: Any, sock: Any) -> None:
        paho = self._paho
        current = paho.socket()
        if not paho.want_write() or current is None or current is not sock:
            return  # sent already, or the link was replaced
        with contextlib.suppress(Exception):  # aiomqtt's writer below meets it again, reports it
            paho.loop_write()
        if paho.want_write():  # the socket is full (or failed): aiomqtt's writer waits for room
            self._register_writer(paho, userdata, current)

    def _on_puback(
        self,
        client: PahoClient,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        if reason_code.is_failure:
            self.refused.append(str(reason_code))
        acked = self._acks.pop(mid, None)
        if acked is not None:
            acked(not reason_code.is_failure)
            return
        self._wake_publisher(client, userdata, mid, reason_code, properties)
