"""The emulated sensor's model on fake clocks: replay, never a future record, memory, sessions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from drivers.cgms.emulator import CgmsSensor, SensorConfig
from protocols.cgms.measurement import parse_measurements
from protocols.cgms.state import (
    CgmFeature,
    CgmFeatureBits,
    CgmStatus,
    SensorStatus,
    SessionStartTime,
)
from protocols.sfloat import SFloat, SFloatSpecial

WALL = datetime(2025, 3, 14, 15, 9, 26, 535000, tzinfo=UTC)


@dataclass
class FakeTime:
    """A wall clock and a monotonic clock that move together, by hand."""

    t: float = 0.0

    def wall(self) -> datetime:
        return WALL + timedelta(seconds=self.t)

    def monotonic(self) -> float:
        return self.t


def sensor(config: SensorConfig) -> tuple[CgmsSensor, FakeTime]:
    clock = FakeTime()
    return CgmsSensor(config, wall=clock.wall, monotonic=clock.monotonic), clock


def test_the_replay_runs_fast_then_real_time_and_never_ahead_of_the_wall_clock() -> None:
    s, clock = sensor(SensorConfig(interval=1, age=100.0, replay=60.0, speed=60.0))
    assert s.start == (WALL - timedelta(minutes=100)).replace(microsecond=0)
    assert s.newest() == 40  # 100 - 60 minutes of records exist at start
    clock.t = 30.0  # 30 s at 60x: 30 minutes made
    assert s.newest() == 70
    clock.t = 200.0  # caught up after 61 s (60 min + 1 min of real time), real time since
    assert s.newest() == 100 + 3
    for step in range(2000):
        clock.t = step * 0.37
        newest = s.newest()
        assert newest is not None
        assert s.start + timedelta(minutes=newest) <= clock.wall(), "a record from the future"


def test_the_status_clock_is_the_wall_clock_so_the_derived_start_is_stable() -> None:
    s, clock = sensor(SensorConfig(interval=1, age=100.0, replay=60.0, speed=60.0))
    for t in (0.0, 10.0, 59.0, 61.0, 3600.0):
        clock.t = t
        derived = clock.wall() - timedelta(minutes=s.status_offset())
        assert timedelta(0) <= derived - s.start < timedelta(minutes=1)


def test_due_in_is_when_the_next_record_exists() -> None:
    s, clock = sensor(SensorConfig(interval=5, age=30.0, replay=30.0, speed=120.0))
    assert s.newest() == 0
    for _ in range(20):
        newest = s.newest()
        assert newest is not None
        delay = s.due_in()
        assert delay is not None
        assert delay > 0
        clock.t += delay * 0.999
        assert s.newest() == newest
        clock.t += delay * 0.002
        assert s.newest() == newest + 5


def test_memory_is_a_grid_with_a_capacity() -> None:
    s, _clock = sensor(SensorConfig(interval=5, age=1000.0, capacity=50))
    assert s.newest() == 1000
    assert s.oldest() == 1000 - 49 * 5
    assert list(s.offsets(7, 23)) == []  # older than the memory
    assert list(s.offsets(800, 822)) == [800, 805, 810, 815, 820]
    assert list(s.offsets(998)) == [1000]
    assert list(s.offsets(1001)) == []
    assert len(s.offsets()) == 50


def test_a_new_session_empties_the_memory_and_a_stopped_one_makes_nothing() -> None:
    s, clock = sensor(SensorConfig(interval=1, age=50.0))
    first = s.start
    clock.t = 90.0
    s.restart(age=10.0, replay=10.0)
    assert s.start > first
    assert s.past == {first: range(52)}
    assert s.newest() == 0
    s.stop()
    assert s.status().status & SensorStatus.SESSION_STOPPED
    clock.t += 3600.0
    assert s.newest() == 0
    assert s.due_in() is None
    stopped, _ = sensor(SensorConfig(interval=1, age=30.0, stopped=True))
    assert stopped.newest() == 30
    assert stopped.stopped


@pytest.mark.parametrize("e2e_crc", [True, False])
def test_values_follow_the_configuration(e2e_crc: bool) -> None:
    config = SensorConfig(
        interval=1, e2e_crc=e2e_crc, trend=False, annunciation=SensorStatus.DEVICE_BATTERY_LOW
    )
    s, _clock = sensor(config)
    feature = CgmFeature.parse(s.feature().build())
    assert feature.e2e_crc == e2e_crc
    assert not feature.features & CgmFeatureBits.CGM_TREND_INFORMATION
    assert feature.features & CgmFeatureBits.CGM_QUALITY
    status = CgmStatus.parse(s.status().build())
    assert (status.time_offset, status.e2e_crc) == (1440, e2e_crc)
    assert status.status == SensorStatus.DEVICE_BATTERY_LOW
    sst = SessionStartTime.parse(s.session_start_time().build())
    assert sst.to_utc() == s.start
    (record,) = parse_measurements(s.record(100).build())
    assert record == replace(s.record(100), octets=record.octets)  # the octets sent: parsed
    assert record.e2e_crc == e2e_crc
    assert record.trend is None
    assert record.status & SensorStatus.DEVICE_BATTERY_LOW


def test_records_are_plausible_and_out_of_range_ones_are_marked() -> None:
    s, _clock = sensor(replace(SensorConfig(), interval=5, age=14 * 1440.0, seed=3))
    values = []
    for offset in s.offsets():
        record = s.record(offset)
        if isinstance(record.glucose, SFloat):
            values.append(record.glucose.value)
            assert 40 <= record.glucose.value <= 400
        elif record.glucose is SFloatSpecial.NEGATIVE_INFINITY:
            assert record.status & SensorStatus.RESULT_BELOW_DEVICE_RANGE
        else:
            assert record.glucose is SFloatSpecial.POSITIVE_INFINITY
            assert record.status & SensorStatus.RESULT_ABOVE_DEVICE_RANGE
    assert len(values) > 3000
    assert 90 < sum(values) / len(values) < 180
    assert max(values) > 180  # meals
    assert min(values) < 80  # and the odd low


def test_records_damaged_in_memory_stay_damaged_and_keep_the_framing() -> None:
    from protocols.cgms.measurement import decode_records

    s, _ = sensor(SensorConfig(interval=5, age=100.0))
    assert s.damage("start", "middle", "end", 50) == [0, 50, 100, 50]
    assert s.damaged == {0, 50, 100}
    for e2e, reason in ((True, "CRC"), (False, "")):
        t, _ = sensor(SensorConfig(interval=5, age=100.0, e2e_crc=e2e, damaged=(50,)))
        notification = t.stored(45) + t.stored(50) + t.stored(55)
        results = [r for _, r in decode_records(notification)]
        assert [isinstance(r, Exception) for r in results] == [False, True, False]
        assert reason in str(results[1]).upper()
        assert t.stored(50) == t.stored(50)  # the same every read
    s.restart(10.0, 0.0)
    assert s.damaged == set()  # a new memory
    with pytest.raises(ValueError, match="damaged"):
        SensorConfig(damaged=("somewhere",))


def test_the_calendar_is_seen_in_the_session_start_time_only() -> None:
    s, _ = sensor(SensorConfig(interval=5, age=100.0, clock_skew=3600.0))
    status = s.status()
    assert SessionStartTime.parse(s.session_start_time().build()).to_utc() == s.start + timedelta(
        hours=1
    )
    assert status.time_offset == 100  # offsets count from the true start
    s.reset_clock()  # the calendar reads 2000-01-01 now: the start was 100 min before that
    sst = SessionStartTime.parse(s.session_start_time().build()).to_utc()
    assert sst is not None
    assert abs(sst - (datetime(2000, 1, 1, tzinfo=UTC) - timedelta(minutes=100))) <= timedelta(
        seconds=1
    )
    epoch, _ = sensor(SensorConfig(clock_epoch=True, age=0.0))
    sst = SessionStartTime.parse(epoch.session_start_time().build()).to_utc()
    assert sst is not None
    assert abs(sst - datetime(2000, 1, 1, tzinfo=UTC)) <= timedelta(seconds=1)
