"""An MQTT subscriber for tests: collects every message and waits for conditions on them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiomqtt

from mosquitto import Mosquitto


@dataclass(frozen=True, slots=True)
class Received:
    """One message as it arrived."""

    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


class Subscriber:
    """Subscribes to `topics` on a test broker and keeps every message in arrival order."""

    def __init__(
        self,
        broker: Mosquitto,
        topics: list[str],
        *,
        client_id: str | None = None,
        persistent: bool = False,
        protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V311,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.messages: list[Received] = []
        self._client = aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=client_id,
            clean_session=not persistent if protocol != aiomqtt.ProtocolVersion.V5 else None,
            protocol=protocol,
        )
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self._client.__aenter__()
        for topic in self.topics:
            await self._client.subscribe(topic, qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._client.__aexit__(exc_type, exc, tb)

    async def _collect(self) -> None:
        async for message in self._client.messages:
            payload = (
                message.payload
                if isinstance(message.payload, bytes)
                else (str(message.payload).encode())
            )
            self.messages.append(Received(str(message.topic), payload, message.retain, message.qos))
            async with self._changed:
                self._changed.notify_all()

    def on(self, suffix: str) -> list[Received]:
        """Messages whose topic ends with `suffix`."""
        return [m for m in self.messages if m.topic.endswith(suffix)]

    async def wait_for(
        self,
        condition: Callable[[list[Received]], bool],
        timeout: float = 15.0,
    ) -> list[Received]:
        """Wait until `condition(messages)` holds; TimeoutError (with what arrived) otherwise."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: condition(self.messages))
        except TimeoutError:
            topics = sorted({m.topic for m in self.messages})
            raise TimeoutError(
                f"condition not met in {timeout}s; {len(self.messages)} messages on {topics}"
            ) from None
        return self.messages
