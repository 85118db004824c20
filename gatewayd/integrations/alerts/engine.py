"""The pure alert engine: `evaluate(state, reading_or_tick, thresholds, now)` -> state, events.

No I/O and no clock: the caller passes `now`. Rules of the game:

- Only a reading newer (by measured time) than every reading seen so far is judged; an older one
  (a backfill behind live data, a duplicate) changes nothing.
- A reading can raise an alert only when it is current: measured at most `stale_minutes` before
  `now`, whether it came live or from the sensor's memory. A stale reading updates the state and
  may clear alerts (it is the newest evidence there is) but never raises a "now" alert.
- An alert is raised once and cleared once per episode; while it stays on, the clock emits a
  `reminder` every `realert_minutes` (urgent and warning alerts only).
- The clock (a `Tick`) raises `signal_loss` when the newest reading is `signal_loss_minutes`
  old; the next reading younger than that clears it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from gatewayd.integrations.alerts.kinds import SESSION_KINDS, Event, Kind, Severity
from gatewayd.integrations.alerts.rules import Facts, Verdict, judge, rate
from gatewayd.integrations.alerts.settings import Thresholds
from gatewayd.integrations.alerts.state import (
    Active,
    AlertEvent,
    DeviceState,
    Latest,
    alert_id,
    to_ms,
)
from gatewayd.models import Reading, utc


@dataclass(frozen=True, slots=True)
class Tick:
    """The clock moved on: signal loss and reminders are checked."""


TICK = Tick()


def evaluate(
    state: DeviceState, observation: Reading | Tick, thresholds: Thresholds, now: datetime
) -> tuple[DeviceState, list[AlertEvent]]:
    """The device's next state and the events to publish, in order (clears, raises, reminders)."""
    now = to_ms(utc(now))
    if isinstance(observation, Tick):
        return _tick(state, thresholds, now)
    return _reading(state, observation, thresholds, now)


def _reading(
    state: DeviceState, reading: Reading, t: Thresholds, now: datetime
) -> tuple[DeviceState, list[AlertEvent]]:
    if reading.device != state.device:
        raise ValueError(f"reading of {reading.device!r} given to the state of {state.device!r}")
    time = to_ms(reading.time)
    prev = state.latest
    if prev is not None and time <= prev.time:
        return state, []
    latest = Latest(
        id=reading.id,
        time=time,
        session=reading.session,
        glucose_mgdl=reading.glucose_mgdl,
        out_of_range=reading.out_of_range,
        rate_mgdl_min=rate(
            reading.trend_mgdl_min, reading.glucose_mgdl, reading.session, time, prev
        ),
    )
    draft = _Draft(state, latest)
    draft.clear_disabled(t, time)
    if prev is not None and prev.session != reading.session:
        for kind in SESSION_KINDS:
            draft.clear(kind, time, reason="new sensor session")
    current = now - time <= timedelta(minutes=t.stale_minutes)
    for kind in Kind:
        if not t.enabled(kind):
            continue
        verdict = judge(kind, Facts(latest, reading.status, draft.kinds(), now), t)
        if verdict.holds is False:
            draft.clear(kind, time)
        elif verdict.holds and current:
            draft.raise_(kind, time, verdict, now)
    return draft.state(), draft.events()


def _tick(state: DeviceState, t: Thresholds, now: datetime) -> tuple[DeviceState, list[AlertEvent]]:
    draft = _Draft(state, state.latest)
    draft.clear_disabled(t, now)
    watch = state.watch_since
    if state.latest is None and watch is None:
        watch = now
    since = state.latest.time if state.latest is not None else watch
    limit = timedelta(minutes=t.signal_loss_minutes)
    if t.enabled(Kind.SIGNAL_LOSS) and since is not None and now - since >= limit:
        draft.raise_(Kind.SIGNAL_LOSS, since + limit, Verdict(True, t.signal_loss_minutes), now)
    if t.realert_minutes > 0:
        draft.remind_due(now, timedelta(minutes=t.realert_minutes))
    return replace(draft.state(), watch_since=watch), draft.events()


class _Draft:
    """The changes of one evaluation, applied to a copy of the active alerts."""

    def __init__(self, state: DeviceState, latest: Latest | None) -> None:
        self._state = state
        self._latest = latest
        self._active = {a.kind: a for a in state.active}
        self._cleared: list[AlertEvent] = []
        self._raised: list[AlertEvent] = []
        self._reminded: list[AlertEvent] = []

    def kinds(self) -> frozenset[Kind]:
        return frozenset(self._active)

    def state(self) -> DeviceState:
        active = tuple(self._active[k] for k in Kind if k in self._active)
        return replace(self._state, latest=self._latest, active=active)

    def events(self) -> list[AlertEvent]:
        return [*self._cleared, *self._raised, *self._reminded]

    def clear_disabled(self, t: Thresholds, time: datetime) -> None:
        for kind in list(self._active):
            if not t.enabled(kind):
                self.clear(kind, time, reason="disabled in the configuration")

    def clear(self, kind: Kind, time: datetime, reason: str | None = None) -> None:
        alert = self._active.pop(kind, None)
        if alert is not None:
            self._cleared.append(self._event(alert, Event.CLEARED, time, reason=reason))

    def raise_(self, kind: Kind, time: datetime, verdict: Verdict, now: datetime) -> None:
        if kind in self._active:
            return
        latest = self._latest
        alert = Active(
            kind=kind,
            id=alert_id(self._state.device, kind, time),
            raised_at=time,
            notified_at=now,
            glucose_mgdl=latest.glucose_mgdl if latest else None,
            out_of_range=latest.out_of_range if latest else None,
            threshold=verdict.threshold,
        )
        self._active[kind] = alert
        self._raised.append(self._event(alert, Event.RAISED, time, predicted=verdict.predicted))

    def remind_due(self, now: datetime, every: timedelta) -> None:
        for kind, alert in list(self._active.items()):
            if alert.severity is not Severity.INFO and now - alert.notified_at >= every:
                self._active[kind] = replace(alert, notified_at=now)
                self._reminded.append(self._event(alert, Event.REMINDER, now))

    def _event(
        self,
        alert: Active,
        event: Event,
        time: datetime,
        *,
        predicted: float | None = None,
        reason: str | None = None,
    ) -> AlertEvent:
        latest = self._latest
        return AlertEvent(
            device=self._state.device,
            kind=alert.kind,
            event=event,
            id=alert.id,
            time=time,
            raised_at=alert.raised_at,
            glucose_mgdl=latest.glucose_mgdl if latest else None,
            out_of_range=latest.out_of_range if latest else None,
            trend_mgdl_min=latest.rate_mgdl_min if latest else None,
            threshold=alert.threshold,
            predicted_mgdl=predicted,
            reading_id=latest.id if latest else None,
            reason=reason,
        )
