"""The alerts service: runs the engine on every stored reading and on a clock, durably.

Each evaluation that changes something commits, in one store transaction, the device's new
engine state (`alert_state`) and the messages it queues: one `alert` per event and, when the
set of active alerts changed, the retained `alerts` list. A crash therefore loses or repeats
nothing: after a restart the saved state is loaded and the readings stored since it (by measured
time) are replayed through the engine before anything else is evaluated.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from gatewayd.errors import StoreError
from gatewayd.integrations.alerts import persist
from gatewayd.integrations.alerts.engine import TICK, Tick, evaluate
from gatewayd.integrations.alerts.kinds import Event
from gatewayd.integrations.alerts.payloads import active_payload, alert_payload
from gatewayd.integrations.alerts.settings import AlertsOptions, Thresholds
from gatewayd.integrations.alerts.state import AlertEvent, DeviceState
from gatewayd.models import Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.mqtt.topics import Topics
from gatewayd.services import ServiceContext
from gatewayd.store import Store

#: How often signal loss and reminders are checked (seconds).
TICK_SECONDS = 30.0
#: At start, readings stored since the saved state are replayed, but none measured longer than
#: `stale_minutes` + this ago (enough for the rate of the oldest current one); with none in that
#: window, the newest stored reading alone (for signal loss and for clearing).
_LOOKBACK = timedelta(minutes=15)
_LOG_EVENTS = {
    Event.RAISED: "alert_raised",
    Event.REMINDER: "alert_reminder",
    Event.CLEARED: "alert_cleared",
}


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class AlertService:
    """Alerts of the configured devices; `on_reading` and `tick` must run on one thread."""

    def __init__(
        self,
        thresholds: Mapping[str, Thresholds],
        store: Store,
        publisher: Publisher,
        topics: Topics,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tick_seconds: float = TICK_SECONDS,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.thresholds = dict(thresholds)
        self.store = store
        self.publisher = publisher
        self.topics = topics
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.log = log or structlog.get_logger().bind(component="alerts")
        self._states: dict[str, DeviceState] = {}
        store.ensure_schema(persist.DDL)
        for device in self.thresholds:
            self._restore(device)

    def state(self, device: str) -> DeviceState:
        """The engine state of a device (for status displays and tests)."""
        return self._states[device]

    # -- inputs ---------------------------------------------------------------------------

    def on_reading(self, reading: Reading) -> None:
        """Judge a newly stored reading."""
        if reading.device in self.thresholds:
            self._apply(reading.device, reading)

    def tick(self) -> None:
        """Check every device for signal loss and due reminders."""
        for device in self.thresholds:
            self._apply(device, TICK)

    async def run(self) -> None:
        """Tick every `tick_seconds` until cancelled (a store failure stops the daemon)."""
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                self.tick()
            except StoreError:
                raise
            except Exception:
                # A fault here must not take the data path down with it.
                self.log.exception("alert_tick_failed")

    # -- the work -------------------------------------------------------------------------

    def _restore(self, device: str) -> None:
        """Load the saved state and replay the readings stored after it."""
        thresholds = self.thresholds[device]
        now = self.clock()
        try:
            state = persist.load(self.store, device)
        except ValueError as exc:
            self.log.exception("alert_state_unreadable", device=device, error=str(exc))
            state = None
        state = state or DeviceState(device)
        # Older readings can raise nothing; the engine skips any it has already seen.
        since = now - timedelta(minutes=thresholds.stale_minutes) - _LOOKBACK
        if state.latest is not None:
            since = max(since, state.latest.time)
        backlog = self.store.readings(device, start=since)
        if not backlog:
            newest = self.store.latest(device)
            backlog = [newest] if newest is not None else []
        events: list[AlertEvent] = []
        for reading in backlog:
            state, found = evaluate(state, reading, thresholds, now)
            events.extend(found)
        self._commit(DeviceState(device), state, events, now, republish=True)
        self.log.info(
            "alerts_restored",
            device=device,
            replayed=len(backlog),
            active=[a.kind.value for a in state.active],
        )

    def _apply(self, device: str, observation: Reading | Tick) -> None:
        before = self._states[device]
        now = self.clock()
        after, events = evaluate(before, observation, self.thresholds[device], now)
        if after != before or events:
            self._commit(before, after, events, now)

    def _commit(
        self,
        before: DeviceState,
        after: DeviceState,
        events: list[AlertEvent],
        now: datetime,
        *,
        republish: bool = False,
    ) -> None:
        """Save the state and queue its messages in one transaction, then wake the publisher.

        `republish` queues the retained list even if unchanged (at start: a broker that lost
        its retained messages gets it back).
        """
        device, hub = after.device, self.topics.hub
        changed = [a.id for a in before.active] != [a.id for a in after.active]
        with self.store.transaction() as db:
            persist.save(db, after)
            for event in events:
                payload = _json(alert_payload(event, hub))
                self.store.add_message(
                    self.topics.device(device, "alert"), payload, retain=False, db=db
                )
            if changed or republish:
                payload = _json(active_payload(device, hub, after.active, now))
                self.store.add_message(
                    self.topics.device(device, "alerts"), payload, retain=True, db=db
                )
        self._states[device] = after
        if events or changed or republish:
            self.publisher.notify()
        for event in events:
            self.log.info(
                _LOG_EVENTS[event.event],
                device=device,
                kind=event.kind.value,
                severity=event.severity.value,
                alert_id=event.id,
            )


def create(options: AlertsOptions, context: ServiceContext) -> AlertService:
    """The service for the enabled devices that have alerts on."""
    thresholds = {d: options.devices[d] for d in context.devices if d in options.devices}
    return AlertService(thresholds, context.store, context.publisher, context.topics)
