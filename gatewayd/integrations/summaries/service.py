"""The summaries service: recomputes each device's summary and queues it, retained, for MQTT.

At start and every `every` after, for every device; and `backfill_delay` after the last
backfilled reading of a device (a burst of backfill is waited out, but never for more than a
minute), for that device. The payload goes through the store's durable message outbox; a
summary still waiting there for the broker is replaced by the newer one (only the latest of a
retained topic matters). The metrics are computed in a worker thread over a read-only
connection of their own (decoding 14 days of readings takes a Raspberry Pi a noticeable
fraction of a second), so the event loop never waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import structlog

from gatewayd.errors import GatewayError
from gatewayd.integrations.summaries.metrics import Summary
from gatewayd.integrations.summaries.options import SummaryOptions
from gatewayd.integrations.summaries.payload import device_summaries, summary_payload
from gatewayd.models import Reading
from gatewayd.services import ServiceContext
from gatewayd.store.view import StoreView

#: A burst of backfilled readings delays its summary by at most this long (seconds).
_MAX_DEFER_S = 60.0


def _now() -> datetime:
    return datetime.now(UTC)


class SummaryService:
    """Publishes `<root>/<hub>/<device>/summary` (retained)."""

    def __init__(
        self,
        options: SummaryOptions,
        context: ServiceContext,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.options = options
        self.context = context
        self.clock = clock
        self.published = 0
        self.log = structlog.get_logger().bind(component="summaries")
        self._dirty: set[str] = set()
        self._first_dirty: float | None = None
        self._due: float | None = None
        self._wake = asyncio.Event()
        self._reader: StoreView | None = None

    def on_reading(self, reading: Reading) -> None:
        """A backfilled reading schedules its device's summary (debounced)."""
        if not reading.backfilled or reading.device not in self.context.devices:
            return
        now = time.monotonic()
        if self._first_dirty is None:
            self._first_dirty = now
        delay = self.options.backfill_delay.total_seconds()
        scheduled = self._due is not None
        self._due = min(now + delay, self._first_dirty + max(delay, _MAX_DEFER_S))
        self._dirty.add(reading.device)
        if not scheduled:  # else the loop wakes at the earlier due time and finds this one
            self._wake.set()

    async def run(self) -> None:
        """Publish at start, on the schedule and after backfills, until cancelled."""
        try:
            await self._loop()
        finally:
            self.close()

    async def _loop(self) -> None:
        every = self.options.every.total_seconds()
        next_all = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_all:
                self._take_dirty()
                await self.publish(self.context.devices)
                next_all = now + every
            elif self._due is not None and now >= self._due:
                await self.publish(sorted(self._take_dirty()))
            self._wake.clear()
            deadline = next_all if self._due is None else min(next_all, self._due)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._wake.wait()

    def _take_dirty(self) -> set[str]:
        dirty, self._dirty = self._dirty, set()
        self._due = self._first_dirty = None
        return dirty

    async def publish(self, devices: Iterable[str]) -> None:
        """Compute and queue the summary of each device now."""
        ctx = self.context
        end = self.clock()
        queued = False
        for device in devices:
            try:
                summaries = await asyncio.to_thread(self._compute, device, end)
                payload = summary_payload(ctx.config.hub.id, device, summaries)
                body = json.dumps(payload, separators=(",", ":")).encode()
                topic = ctx.topics.device(device, "summary")
                ctx.store.replace_retained(topic, body)
            except GatewayError as exc:
                self.log.warning("summary_failed", device=device, error=str(exc))
                continue
            queued = True
            self.published += 1
            self.log.debug("summary_queued", device=device, n=summaries[-1].n)
        if queued:
            ctx.publisher.notify()

    def _compute(self, device: str, end: datetime) -> list[Summary]:
        """In a worker thread: the device's summaries, read over our own connection."""
        if self._reader is None:
            self._reader = StoreView(self.context.store.path)
        return device_summaries(self._reader, device, end, interval=self.options.interval)

    def close(self) -> None:
        """Close the read-only connection (the daemon's store stays open)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
