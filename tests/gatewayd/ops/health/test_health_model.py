"""The pure health model on an injected clock: wedged devices and publishers, honest retries."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gatewayd.device_status import LinkState
from gatewayd.driver import DriverPlugin
from gatewayd.ops.health import DeviceSample, HealthModel, HealthPolicy, PublisherSample
from gatewayd.ops.health.watchdog import expected_interval
from gatewayd.supervisor import Device

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
POLICY = HealthPolicy(grace=3.0, min_silence=60.0, publisher_stall=120.0)
IDLE = PublisherSample(connected=True, delivered=0, reconnects=0, outbox=0)


def dev(
    state: LinkState | None = LinkState.CONNECTED,
    *,
    received: int = 0,
    since: datetime = T0,
    interval: float = 300.0,
    id: str = "cgm-1",
) -> DeviceSample:
    return DeviceSample(id, state, since, received, interval)


def test_a_connected_device_is_healthy_within_grace_and_wedged_beyond() -> None:
    model = HealthModel(POLICY)
    assert model.observe(0.0, [dev()], IDLE).healthy
    assert model.observe(900.0, [dev()], IDLE).healthy  # 3 x 300 s: still within the limit
    verdict = model.observe(901.0, [dev()], IDLE)
    assert not verdict.healthy
    assert verdict.problems == ("cgm-1: connected, no reading for 901 s (limit 900 s)",)
    assert verdict.status.startswith("WEDGED: cgm-1: connected, no reading for 901 s")


def test_a_reading_restarts_the_silence_clock_and_heals() -> None:
    model = HealthModel(POLICY)
    model.observe(0.0, [dev(received=5)], IDLE)
    assert not model.observe(1000.0, [dev(received=5)], IDLE).healthy
    assert model.observe(1001.0, [dev(received=6)], IDLE).healthy  # a reading: healed at once
    assert model.observe(1900.0, [dev(received=6)], IDLE).healthy
    assert not model.observe(1902.0, [dev(received=6)], IDLE).healthy


def test_a_reconnect_is_a_new_phase_even_between_two_samples() -> None:
    model = HealthModel(POLICY)
    model.observe(0.0, [dev()], IDLE)
    # Between two ticks the device dropped and reconnected: same state, new `since`.
    later = dev(since=T0 + timedelta(minutes=14))
    assert model.observe(899.0, [later], IDLE).healthy
    assert model.observe(1700.0, [later], IDLE).healthy  # 801 s into the new phase
    assert not model.observe(1800.0, [later], IDLE).healthy


@pytest.mark.parametrize(
    "state",
    [LinkState.CONNECTING, LinkState.BACKOFF, LinkState.PARKED, LinkState.STOPPED, None],
)
def test_a_device_honestly_not_connected_is_healthy_for_ever(state: LinkState | None) -> None:
    model = HealthModel(POLICY)
    model.observe(0.0, [dev(state)], IDLE)
    assert model.observe(86400.0, [dev(state)], IDLE).healthy


def test_the_silence_limit_is_grace_times_interval_but_at_least_min_silence() -> None:
    model = HealthModel(POLICY)
    fast = dev(interval=1.0, id="sim")  # 3 x 1 s would be too eager: min_silence (60 s) holds
    model.observe(0.0, [fast], IDLE)
    assert model.observe(60.0, [fast], IDLE).healthy
    assert not model.observe(61.0, [fast], IDLE).healthy
    assert POLICY.silence_limit(60.0) == 180.0
    assert POLICY.silence_limit(1.0) == 60.0


def test_an_infinite_expected_interval_opts_out_of_the_silence_check() -> None:
    model = HealthModel(POLICY)
    relay = dev(interval=math.inf)  # e.g. a receiver whose transmitter is out of its range
    model.observe(0.0, [relay], IDLE)
    assert model.observe(30 * 86400.0, [relay], IDLE).healthy


def test_one_wedged_device_among_healthy_ones_is_enough() -> None:
    model = HealthModel(POLICY)
    devices = [dev(id="a"), dev(id="b", state=LinkState.BACKOFF), dev(id="c")]
    model.observe(0.0, devices, IDLE)
    fed = [dev(id="a", received=1), devices[1], devices[2]]
    verdict = model.observe(1000.0, fed, IDLE)
    assert [p.split(":")[0] for p in verdict.problems] == ["c"]


def test_a_connected_publisher_owing_readings_without_puback_is_wedged() -> None:
    model = HealthModel(POLICY)
    owing = PublisherSample(connected=True, delivered=10, reconnects=0, outbox=3)
    assert model.observe(0.0, [], owing).healthy
    assert model.observe(120.0, [], replace(owing, outbox=7)).healthy  # more queued, no PUBACK
    verdict = model.observe(121.0, [], replace(owing, outbox=7))
    assert verdict.problems == (
        "broker: connected, 7 readings owed, no PUBACK for 121 s (limit 120 s)",
    )
    # One PUBACK is progress: healthy again, and the clock restarts from there.
    assert model.observe(122.0, [], replace(owing, delivered=11, outbox=6)).healthy
    assert model.observe(242.0, [], replace(owing, delivered=11, outbox=6)).healthy
    assert not model.observe(243.0, [], replace(owing, delivered=11, outbox=6)).healthy


def test_an_unreachable_broker_is_an_honest_retry_not_a_wedge() -> None:
    model = HealthModel(POLICY)
    down = PublisherSample(connected=False, delivered=10, reconnects=4, outbox=5000)
    model.observe(0.0, [], down)
    verdict = model.observe(7 * 86400.0, [], down)
    assert verdict.healthy
    assert "broker unreachable, retrying; outbox 5000" in verdict.status


def test_nothing_owed_is_never_a_publisher_wedge() -> None:
    model = HealthModel(POLICY)
    model.observe(0.0, [], IDLE)
    assert model.observe(86400.0, [], IDLE).healthy


def test_a_reconnect_restarts_the_publisher_clock() -> None:
    model = HealthModel(POLICY)
    owing = PublisherSample(connected=True, delivered=0, reconnects=0, outbox=3)
    model.observe(0.0, [], owing)
    assert model.observe(100.0, [], replace(owing, reconnects=1)).healthy
    assert model.observe(220.0, [], replace(owing, reconnects=1)).healthy
    assert not model.observe(221.0, [], replace(owing, reconnects=1)).healthy
    # The outbox emptied (e.g. acknowledged rows flushed): nothing owed, clock restarts.
    assert model.observe(222.0, [], replace(owing, reconnects=1, outbox=0)).healthy
    assert model.observe(300.0, [], replace(owing, reconnects=1)).healthy


def test_status_summarises_devices_broker_and_outbox() -> None:
    model = HealthModel(POLICY)
    devices = [
        dev(id="a"),
        dev(id="b"),
        dev(id="c", state=LinkState.BACKOFF),
        dev(id="d", state=None),
    ]
    verdict = model.observe(0.0, devices, replace(IDLE, outbox=2, delivered=40))
    assert verdict.status == (
        "4 devices (2 connected, 1 backoff, 1 starting); broker connected; outbox 2; delivered 40"
    )


def test_status_names_at_most_two_problems() -> None:
    model = HealthModel(POLICY)
    devices = [dev(id=name) for name in "abcd"]
    model.observe(0.0, devices, IDLE)
    status = model.observe(1000.0, devices, IDLE).status
    assert status.startswith("WEDGED: a: connected, no reading for 1000 s (limit 900 s); b: ")
    assert "(+2 more) | 4 devices (4 connected)" in status


# -- where the expected interval comes from ------------------------------------------------------


class WithInterval:
    interval = 60.0


class NoInterval:
    pass


def _plugin(hook: object = None) -> DriverPlugin[object]:
    return DriverPlugin(
        name="x",
        transport="virtual",
        help="x",
        parse_options=lambda r: None,
        open=lambda ctx: None,
        expected_interval=hook,
    )


def test_expected_interval_prefers_the_driver_hook_then_the_interval_option() -> None:
    assert expected_interval(Device("d", _plugin(lambda o: 30.0), WithInterval()), 300.0) == 30.0
    assert expected_interval(Device("d", _plugin(lambda o: None), WithInterval()), 300.0) == 60.0
    assert expected_interval(Device("d", _plugin(), WithInterval()), 300.0) == 60.0
    assert expected_interval(Device("d", _plugin(), NoInterval()), 300.0) == 300.0
    assert expected_interval(Device("d", _plugin(), {"interval": 5}), 300.0) == 300.0


def test_driver_plugins_without_the_hook_still_construct_positionally() -> None:
    """The contract stays backward compatible: the new member is optional and last."""
    plugin: DriverPlugin[None] = DriverPlugin(
        "x", "virtual", "help", lambda r: None, lambda ctx: None
    )
    assert plugin.expected_interval is None
