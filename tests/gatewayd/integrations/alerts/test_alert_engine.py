"""The pure alert engine on scripted traces: exactly the expected raise/clear sequence."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.integrations.alerts.engine import TICK, Tick, evaluate
from gatewayd.integrations.alerts.kinds import Event, Kind
from gatewayd.integrations.alerts.settings import Thresholds
from gatewayd.integrations.alerts.state import AlertEvent, DeviceState, alert_id
from gatewayd.models import Reading

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)  # the conftest's T0
DEFAULTS = Thresholds()
#: Only the level kinds, for traces about levels alone.
LEVELS_ONLY = replace(
    DEFAULTS,
    disabled=frozenset(Kind) - {Kind.URGENT_LOW, Kind.LOW, Kind.HIGH, Kind.VERY_HIGH},
)

Step = tuple[datetime, Reading | Tick]

#: The conftest's `make_reading` fixture.
MakeReading = Callable[..., Reading]


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def live(readings: Iterable[Reading]) -> list[Step]:
    """Each reading judged 5 s after it was measured (a live sensor)."""
    return [(r.time + timedelta(seconds=5), r) for r in readings]


def ticks(first: float, last: float, every: float = 1.0) -> list[Step]:
    count = round((last - first) / every) + 1
    return [(at(first + i * every), TICK) for i in range(count)]


def play(
    steps: Iterable[Step], t: Thresholds = DEFAULTS, state: DeviceState | None = None
) -> tuple[DeviceState, list[AlertEvent]]:
    state = state or DeviceState("cgm1")
    events: list[AlertEvent] = []
    for now, observation in steps:
        state, found = evaluate(state, observation, t, now)
        events.extend(found)
    return state, events


def pairs(events: Iterable[AlertEvent]) -> list[tuple[str, str]]:
    return [(e.kind.value, e.event.value) for e in events]


# -- the traces --------------------------------------------------------------------


def test_slow_fall_through_low_and_back(make_reading: MakeReading) -> None:
    # 120 -> 45 at -1 mg/dL/min (a reading every 5 min), then back up at +1.
    down = [make_reading(5 * i, 120 - 5 * i, -1.0) for i in range(16)]
    up = [make_reading(80 + 5 * i, 50 + 5 * i, 1.0) for i in range(1, 8)]
    state, events = play(live(down + up))
    assert pairs(events) == [
        ("predicted_low", "raised"),  # 85 mg/dL, 65 predicted in 20 min
        ("low", "raised"),  # 65
        ("urgent_low", "raised"),  # 50
        ("urgent_low", "cleared"),  # 60 >= 54 + 5
        ("low", "cleared"),  # 75 >= 70 + 5
        ("predicted_low", "cleared"),  # 75, rising: 95 predicted
    ]
    by_kind = {(e.kind, e.event): e for e in events}
    raised = by_kind[(Kind.PREDICTED_LOW, Event.RAISED)]
    assert (raised.glucose_mgdl, raised.predicted_mgdl, raised.threshold) == (85, 65, 70)
    assert raised.time == at(35)
    assert by_kind[(Kind.LOW, Event.RAISED)].glucose_mgdl == 65
    assert by_kind[(Kind.URGENT_LOW, Event.RAISED)].time == at(70)
    # One episode: the clear carries the raise's id and time.
    cleared = by_kind[(Kind.LOW, Event.CLEARED)]
    assert cleared.id == by_kind[(Kind.LOW, Event.RAISED)].id == alert_id("cgm1", Kind.LOW, at(55))
    assert cleared.raised_at == at(55)
    assert cleared.glucose_mgdl == 75
    assert state.active == ()


def test_hover_at_the_low_threshold_raises_once_and_clears_once(make_reading: MakeReading) -> None:
    values = [72, 69, 71, 68, 70, 72, 69, 73, 71, 74, 69, 72, 76, 80]
    _, events = play(live(make_reading(5 * i, v) for i, v in enumerate(values)))
    assert pairs(events) == [("low", "raised"), ("low", "cleared")]
    assert [e.glucose_mgdl for e in events] == [69, 76]


def test_hover_at_the_high_threshold_raises_once_and_clears_once(make_reading: MakeReading) -> None:
    values = [178, 182, 177, 181, 179, 183, 176, 181, 175, 170]
    _, events = play(live(make_reading(5 * i, v) for i, v in enumerate(values)))
    assert pairs(events) == [("high", "raised"), ("high", "cleared")]
    assert [e.glucose_mgdl for e in events] == [182, 175]


def test_a_gap_raises_signal_loss_once_and_the_next_reading_clears_it(
    make_reading: MakeReading,
) -> None:
    before = live(make_reading(m, 100) for m in (0, 5, 10))
    after = live([make_reading(41, 100)])
    _, events = play([*before, *ticks(10.5, 40.5), *after])
    assert pairs(events) == [("signal_loss", "raised"), ("signal_loss", "cleared")]
    raised, cleared = events
    assert raised.time == at(30)  # newest reading (minute 10) + 20 min, not the tick's time
    assert raised.threshold == 20
    assert cleared.time == at(41)
    assert raised.id == cleared.id


def test_no_signal_loss_while_readings_keep_coming(make_reading: MakeReading) -> None:
    steps: list[Step] = []
    for i in range(30):
        steps += live([make_reading(5 * i, 110)])
        steps += ticks(5 * i + 1, 5 * i + 4)
    _, events = play(steps)
    assert events == []


def test_backfilled_old_lows_raise_nothing(make_reading: MakeReading) -> None:
    # Live data is normal; then the sensor's memory delivers lows from an hour ago.
    current = live(make_reading(m, 110) for m in range(0, 125, 5))
    old_lows = [(at(125), make_reading(m, 50, backfilled=True)) for m in range(60, 90, 5)]
    state, events = play([*current, *old_lows])
    assert events == []
    assert state.latest is not None
    assert state.latest.time == at(120)


def test_stale_lows_at_the_head_raise_nothing_and_a_current_low_does(
    make_reading: MakeReading,
) -> None:
    # The hub was away for two hours; the backfill is the newest data but it is old.
    start = live([make_reading(0, 100)])
    backfill = [(at(125), make_reading(m, 50, backfilled=True)) for m in range(5, 115, 5)]
    state, events = play([*start, *backfill])
    assert events == []
    assert state.latest is not None
    assert state.latest.glucose_mgdl == 50  # history is kept: the next reading builds on it
    _, events = play(live([make_reading(125, 52)]), state=state)
    assert pairs(events) == [("urgent_low", "raised"), ("low", "raised")]
    assert {e.time for e in events} == {at(125)}


def test_a_fresh_backfilled_reading_counts_as_current(make_reading: MakeReading) -> None:
    # Measured 3 minutes ago, read from the sensor's memory at reconnect: it is "now".
    _, events = play([(at(3), make_reading(0, 60, backfilled=True))])
    assert pairs(events) == [("low", "raised")]


def test_newest_stale_data_showing_recovery_clears(make_reading: MakeReading) -> None:
    state, _ = play(live([make_reading(0, 60)]))
    assert [a.kind for a in state.active] == [Kind.LOW]
    state, events = play(
        [(at(90), make_reading(m, 120, backfilled=True)) for m in (30, 35)], state=state
    )
    assert pairs(events) == [("low", "cleared")]
    assert events[0].time == at(30)


def test_restart_mid_alert_with_the_saved_state_does_not_repeat(make_reading: MakeReading) -> None:
    state, first = play(live(make_reading(m, 60) for m in (0, 5)))
    # What a restart sees: the same state, and readings from before and after it.
    replayed = live(make_reading(m, v) for m, v in ((5, 60), (10, 61), (15, 80)))
    _, second = play(replayed, state=state)
    assert pairs(first) == [("low", "raised")]
    assert pairs(second) == [("low", "cleared")]
    assert first[0].id == second[0].id


# -- the other kinds -----------------------------------------------------------------------


def test_rapid_fall_with_hysteresis(make_reading: MakeReading) -> None:
    trends = [-1.0, -3.2, -2.5, -3.5, -2.1, -1.5, -2.5]
    _, events = play(live(make_reading(5 * i, 150, tr) for i, tr in enumerate(trends)))
    assert pairs(events) == [("rapid_fall", "raised"), ("rapid_fall", "cleared")]
    assert [e.trend_mgdl_min for e in events] == [-3.2, -1.5]
    assert events[0].threshold == 3


def test_rapid_rise(make_reading: MakeReading) -> None:
    trends = [0.5, 3.0, 2.2, 1.9]
    _, events = play(live(make_reading(5 * i, 150, tr) for i, tr in enumerate(trends)))
    assert pairs(events) == [("rapid_rise", "raised"), ("rapid_rise", "cleared")]


def test_rate_is_derived_when_the_device_reports_no_trend(make_reading: MakeReading) -> None:
    _, events = play(live([make_reading(0, 150, None), make_reading(5, 130, None)]))
    assert pairs(events) == [("rapid_fall", "raised"), ("predicted_low", "raised")]
    assert events[0].trend_mgdl_min == -4
    assert events[1].predicted_mgdl == 50  # 130 - 4 x 20


def test_no_rate_across_a_long_gap_or_a_new_session(make_reading: MakeReading) -> None:
    gap = live([make_reading(0, 150, None), make_reading(30, 100, None)])
    session = live([make_reading(0, 150, None), make_reading(5, 120, None, session="s2")])
    assert play(gap)[1] == []
    assert play(session)[1] == []


def test_predicted_low_is_raised_from_the_trend_and_cleared_when_the_trend_turns(
    make_reading: MakeReading,
) -> None:
    readings = [make_reading(0, 110, -1.0), make_reading(5, 100, -2.0), make_reading(10, 100, 0)]
    _, events = play(live(readings))
    assert pairs(events) == [("predicted_low", "raised"), ("predicted_low", "cleared")]
    assert events[0].predicted_mgdl == 60
    assert events[0].glucose_mgdl == 100


def test_predicted_low_does_not_flap_while_hovering_at_low_with_low_disabled(
    make_reading: MakeReading,
) -> None:
    t = replace(DEFAULTS, disabled=frozenset({Kind.LOW}))
    values = [72, 68, 72, 68, 72, 80]
    _, events = play(live(make_reading(5 * i, v, -0.5) for i, v in enumerate(values)), t)
    assert pairs(events) == [("predicted_low", "raised")]


def test_out_of_range_low_counts_below_urgent_low(make_reading: MakeReading) -> None:
    _, events = play(live([make_reading(0, None, None, out_of_range="low")]))
    assert pairs(events) == [("urgent_low", "raised"), ("low", "raised")]
    assert events[0].out_of_range == "low"
    assert events[0].glucose_mgdl is None


def test_out_of_range_high_counts_above_very_high(make_reading: MakeReading) -> None:
    readings = [make_reading(0, None, None, out_of_range="high"), make_reading(5, 170)]
    _, events = play(live(readings))
    assert pairs(events) == [
        ("high", "raised"),
        ("very_high", "raised"),
        ("high", "cleared"),
        ("very_high", "cleared"),
    ]


def test_battery_and_sensor_flags(make_reading: MakeReading) -> None:
    readings = [
        make_reading(0, 100, status=("device_battery_low",)),
        make_reading(5, 100, status=("device_battery_low", "session_ending")),
        make_reading(10, 100, status=("session_ending",)),
        make_reading(15, 100, status=("session_stopped",)),
    ]
    _, events = play(live(readings))
    assert pairs(events) == [
        ("battery_low", "raised"),
        ("sensor_ending", "raised"),
        ("battery_low", "cleared"),
        ("sensor_ending", "cleared"),
        ("sensor_ended", "raised"),
    ]
    assert {e.severity.value for e in events if e.kind is Kind.SENSOR_ENDING} == {"info"}


def test_a_new_sensor_session_clears_the_old_sessions_alerts(make_reading: MakeReading) -> None:
    readings = [
        make_reading(0, 100, status=("sensor_expired",)),
        make_reading(5, 100, status=("sensor_expired",)),
        make_reading(130, 100, session="s2", status=("sensor_expired",)),
    ]
    _, events = play(live(readings))
    assert pairs(events) == [
        ("sensor_ended", "raised"),
        ("sensor_ended", "cleared"),
        ("sensor_ended", "raised"),  # the new session says so too: a new episode
    ]
    assert events[1].reason == "new sensor session"
    assert events[2].id != events[0].id


def test_a_flag_on_a_stale_reading_raises_nothing(make_reading: MakeReading) -> None:
    _, events = play([(at(60), make_reading(0, 100, status=("device_battery_low",)))])
    assert events == []


def test_reminders_every_realert_minutes_for_urgent_and_warning_only(
    make_reading: MakeReading,
) -> None:
    start = live([make_reading(0, 60, status=("device_battery_low",))])
    raised_now = start[0][0]
    steps = [(raised_now + timedelta(minutes=m), TICK) for m in (10, 29, 30, 45, 59, 60)]
    t = replace(DEFAULTS, signal_loss_minutes=600)
    _, events = play([*start, *steps], t)
    assert pairs(events) == [
        ("low", "raised"),
        ("battery_low", "raised"),
        ("low", "reminder"),
        ("low", "reminder"),
    ]
    assert [e.time for e in events[2:]] == [raised_now + timedelta(minutes=m) for m in (30, 60)]
    assert events[2].id == events[0].id


def test_no_reminders_when_realert_is_zero(make_reading: MakeReading) -> None:
    t = replace(DEFAULTS, realert_minutes=0, signal_loss_minutes=600)
    _, events = play([*live([make_reading(0, 60)]), *ticks(1, 300, 10)], t)
    assert pairs(events) == [("low", "raised")]


def test_signal_loss_of_a_device_never_heard_from(make_reading: MakeReading) -> None:
    state, events = play(ticks(0, 25))
    assert pairs(events) == [("signal_loss", "raised")]
    assert events[0].time == at(20)
    assert events[0].glucose_mgdl is None
    _, events = play(live([make_reading(26, 100)]), state=state)
    assert pairs(events) == [("signal_loss", "cleared")]


def test_disabled_kinds_never_raise_and_an_active_one_is_cleared(make_reading: MakeReading) -> None:
    t = replace(DEFAULTS, disabled=frozenset({Kind.LOW}))
    _, events = play(live([make_reading(0, 60)]), t)
    assert pairs(events) == []
    state, _ = play(live([make_reading(0, 60)]))
    _, events = play(live([make_reading(5, 60)]), t, state=state)
    assert pairs(events) == [("low", "cleared")]
    assert events[0].reason == "disabled in the configuration"


def test_old_and_duplicate_readings_change_nothing(make_reading: MakeReading) -> None:
    state, events = play(live([make_reading(0, 60), make_reading(5, 60)]))
    assert pairs(events) == [("low", "raised")]
    again, events = play(live([make_reading(5, 60), make_reading(2, 120)]), state=state)
    assert events == []
    assert again == state


def test_thresholds_are_per_device(make_reading: MakeReading) -> None:
    strict = replace(DEFAULTS, low=80, urgent_low=60)
    _, events = play(live([make_reading(0, 75)]), strict)
    assert pairs(events) == [("low", "raised")]
    assert events[0].threshold == 80


def test_a_reading_of_another_device_is_refused(make_reading: MakeReading) -> None:
    with pytest.raises(ValueError, match="cgm2"):
        evaluate(DeviceState("cgm1"), make_reading(0, 100, device="cgm2"), DEFAULTS, at(0))


# -- property: whatever the trace, every episode is raised once and cleared once -------------


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.integers(35, 320), st.sampled_from(["low", "high"])), min_size=1, max_size=60
    ),
    trends=st.lists(st.one_of(st.none(), st.floats(-6, 6)), min_size=60, max_size=60),
    gaps=st.lists(st.sampled_from([1, 5, 5, 5, 15, 40]), min_size=60, max_size=60),
)
def test_events_of_each_kind_alternate_raise_and_clear(
    values: list[int | str], trends: list[float | None], gaps: list[int]
) -> None:
    steps: list[Step] = []
    minute = 0
    for i, value in enumerate(values):
        minute += gaps[i]
        measured = at(minute)
        oor = value if isinstance(value, str) else None
        reading = Reading(
            device="cgm1",
            driver="t",
            serial="S",
            session="s1",
            seq=minute,
            time=measured,
            received=measured,
            glucose_mgdl=None if oor else float(value),
            out_of_range=oor,  # type: ignore[arg-type]
            trend_mgdl_min=None if oor else trends[i],
        )
        steps += [(measured - timedelta(minutes=1), TICK), (measured, reading)]
    state, events = play(steps)
    open_ids: dict[Kind, str] = {}
    for event in events:
        if event.event is Event.RAISED:
            assert event.kind not in open_ids, f"{event.kind} raised twice"
            open_ids[event.kind] = event.id
        else:
            assert open_ids.get(event.kind) == event.id, f"{event.kind} {event.event} unopened"
            if event.event is Event.CLEARED:
                del open_ids[event.kind]
    assert {a.kind: a.id for a in state.active} == open_ids
