"""The simulator driver through the plugin contract: options, backfill, misses, dropouts.

Most tests run on virtual time (an injected monotonic clock whose sleep advances it at once), so
hours of simulated sensor life take milliseconds and nothing depends on scheduling; one test runs
the real clock at high speed to check that no reading is ever dated after the wall clock.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from drivers.emulation.clock import SimClock, from_us, to_us
from drivers.simulator import SensorRegistry, SimulatorOptions, create_plugin, plugin
from drivers.simulator.sensor import Grid, session_id
from drivers.simulator.session import default_seed
from gatewayd.driver import DeviceContext, DriverPlugin, ResumePoint
from gatewayd.errors import ConfigError, DeviceNotFound, LinkLost
from gatewayd.models import Reading
from gatewayd.options import OptionReader

DEVICE = "sim1"
#: A fixed wall clock for virtual-time tests.
WALL = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)
#: Quiet options: no random link trouble unless a test asks for it.
QUIET = SimulatorOptions(interval=60, seed=7, dropout_rate=0, missed_rate=0, warmup=600)


@dataclass
class VirtualTime:
    """Real time for the simulator, on demand: sleeping advances it instantly."""

    start: datetime = WALL
    t: float = 0.0
    slept: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.t)


def fresh(vt: VirtualTime) -> DriverPlugin[SimulatorOptions]:
    """A plugin as a new gatewayd process would load it, running on `vt`."""
    return create_plugin(SensorRegistry(monotonic=vt.monotonic, sleep=vt.sleep))


def context(
    vt: VirtualTime, options: SimulatorOptions = QUIET, resume: ResumePoint | None = None
) -> DeviceContext[SimulatorOptions]:
    return DeviceContext(
        device_id=DEVICE,
        driver="simulator",
        options=options,
        resume=resume,
        log=structlog.get_logger(),
        clock=vt.wall,
    )


def resume_from(r: Reading) -> ResumePoint:
    return ResumePoint(serial=r.serial, session=r.session, seq=r.seq, time=r.time)


@asynccontextmanager
async def connected(
    plugin_: DriverPlugin[SimulatorOptions], ctx: DeviceContext[SimulatorOptions]
) -> AsyncIterator[AsyncIterator[Reading]]:
    """One session's readings, closed on exit (a consumer that stops early closes them)."""
    async with plugin_.open(ctx) as session:
        readings = session.readings()
        try:
            yield readings
        finally:
            assert isinstance(readings, AsyncGenerator)
            await readings.aclose()


async def take(
    plugin_: DriverPlugin[SimulatorOptions], ctx: DeviceContext[SimulatorOptions], n: int
) -> list[Reading]:
    """The first `n` readings of one session."""
    out: list[Reading] = []
    async with connected(plugin_, ctx) as it:
        async for r in it:
            out.append(r)
            if len(out) == n:
                break
    return out


def wall_at(grid: Grid, session: int, seq: int, plus: float = 1.0) -> datetime:
    """A wall clock just after record `seq` of `session` was measured."""
    return from_us(grid.time_us(session, seq)) + timedelta(seconds=plus)


def current_session(grid: Grid, when: datetime = WALL) -> int:
    return grid.session_at(to_us(when))


def grid_of(options: SimulatorOptions = QUIET) -> Grid:
    assert options.seed is not None
    return Grid.create(options.seed, options.interval, options.session_days, options.warmup)


# -- options ----------------------------------------------------------------------------------


def parse(table: dict[str, Any]) -> SimulatorOptions:
    reader = OptionReader(table, "cfg.toml", "devices[0]")
    options = plugin.parse_options(reader)
    reader.finish()
    return options


def test_options_default() -> None:
    assert parse({}) == SimulatorOptions(
        interval=300.0,
        speed=1.0,
        history=0.0,
        seed=None,
        dropout_rate=0.002,
        dropout_readings=3,
        missed_rate=0.005,
        session_days=10.0,
        warmup=7200.0,
    )


def test_options_set() -> None:
    table = {
        "interval": 60,
        "speed": 100,
        "history": 86400,
        "seed": 42,
        "dropout_rate": 0.1,
        "dropout_readings": 0,
        "missed_rate": 0,
        "session_days": 0.5,
        "warmup": 0,
    }
    assert parse(table) == SimulatorOptions(60.0, 100.0, 86400.0, 42, 0.1, 0, 0.0, 0.5, 0.0)


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("interval", 0),
        ("interval", -5),
        ("interval", "fast"),
        ("speed", 0.5),
        ("history", -1),
        ("seed", 1.5),
        ("seed", True),
        ("dropout_rate", 1.5),
        ("dropout_readings", -1),
        ("dropout_readings", 2.5),
        ("missed_rate", -0.1),
        ("session_days", 0),
        ("warmup", -1),
        ("intervall", 60),
    ],
)
def test_options_refused_with_file_and_key(key: str, bad: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse({key: bad})
    assert caught.value.key == f"devices[0].{key}"
    assert str(caught.value).startswith(f"cfg.toml: devices[0].{key}: ")


def test_plugin_metadata_and_help() -> None:
    assert plugin.name == "simulator"
    assert plugin.transport == "virtual"
    assert plugin.summary.startswith("Simulated CGM")
    for name in SimulatorOptions.__dataclass_fields__:
        assert f"\n  {name} " in plugin.help, f"option {name} is not documented"
    assert "default 300" in plugin.help


# -- identity and clock -----------------------------------------------------------------------


async def test_identity_is_stable_per_device_and_seed() -> None:
    vt = VirtualTime()
    async with fresh(vt).open(context(vt)) as a:
        assert a.identity is not None
        assert (a.identity.manufacturer, a.identity.model) == ("gatewayd", "Simulated CGM")
        assert a.identity.serial.startswith("SIM")
    async with fresh(vt).open(context(vt)) as b:
        assert b.identity == a.identity
    other = SimulatorOptions(seed=8)
    async with fresh(vt).open(context(vt, other)) as c:
        assert c.identity is not None
        assert c.identity.serial != a.identity.serial
    assert default_seed(DEVICE) == default_seed(DEVICE) != default_seed("sim2")


async def test_clock_replays_history_then_runs_in_real_time() -> None:
    vt = VirtualTime(t=5.0)
    clock = SimClock(WALL, history=3600, speed=10, monotonic=vt.monotonic, sleep=vt.sleep)
    assert clock.now() == WALL - timedelta(hours=1)
    vt.t += 100  # 1000 s simulated
    assert clock.now() == WALL - timedelta(seconds=2600)
    assert not clock.caught_up()
    target = to_us(WALL + timedelta(seconds=1000))
    await clock.sleep_until(target)
    # Caught up after 400 s real (4000 s simulated); from then on 1:1, so 1000 s real in all.
    assert vt.t == pytest.approx(5 + 1000)
    assert clock.now_us() >= target
    assert clock.caught_up()
    assert clock.now_us() <= clock.wall_us()
    with pytest.raises(ValueError, match="speed"):
        SimClock(WALL, speed=0.5)


async def test_speed_without_history_is_the_wall_clock() -> None:
    vt = VirtualTime()
    clock = SimClock(WALL, speed=1000, monotonic=vt.monotonic, sleep=vt.sleep)
    vt.t = 123.0
    assert clock.now() == WALL + timedelta(seconds=123)


async def test_live_readings_at_speed_never_dated_in_the_future() -> None:
    """The real clock: a 10 s history replayed at 100x, then real time at 20 ms a reading."""
    options = SimulatorOptions(
        interval=0.02, speed=100, history=10, seed=3, dropout_rate=0, missed_rate=0, warmup=0
    )
    ctx = DeviceContext(
        device_id=DEVICE,
        driver="simulator",
        options=options,
        resume=None,
        log=structlog.get_logger(),
    )  # the real wall clock
    registry = SensorRegistry()
    readings: list[Reading] = []
    async with connected(create_plugin(registry), ctx) as it:
        async for r in it:
            assert r.time <= datetime.now(UTC)
            readings.append(r)
            if len(readings) == 515:
                break
    clock = registry.get(DEVICE).clock
    assert clock.caught_up(), "the replay should have reached the wall clock"
    assert datetime.now(UTC) - readings[-1].time < timedelta(seconds=0.5)
    assert readings[0].time < datetime.now(UTC) - timedelta(seconds=9)
    assert not any(r.backfilled for r in readings)
    for a, b in itertools.pairwise(readings):
        assert (b.session, b.seq) == (a.session, a.seq + 1) or (
            b.session > a.session and b.seq == 0
        )
        assert b.time - a.time == timedelta(seconds=0.02) or b.session != a.session


# -- backfill ---------------------------------------------------------------------------------


async def test_first_contact_starts_live_with_nothing_old() -> None:
    grid = grid_of()
    n = current_session(grid)
    vt = VirtualTime(start=wall_at(grid, n, 100, plus=30))
    readings = await take(fresh(vt), context(vt), 3)
    assert [(r.session, r.seq, r.backfilled) for r in readings] == [
        (session_id(n), 101, False),
        (session_id(n), 102, False),
        (session_id(n), 103, False),
    ]
    assert [r.time for r in readings] == [from_us(grid.time_us(n, s)) for s in (101, 102, 103)]
    assert all(r.device == DEVICE and r.driver == "simulator" for r in readings)
    assert all(r.time <= r.received for r in readings)
    assert readings[-1].received == vt.wall()


async def test_resume_in_the_same_session_backfills_the_rest_then_goes_live() -> None:
    grid = grid_of()
    n = current_session(grid)
    vt = VirtualTime(start=wall_at(grid, n, 100, plus=30))
    plugin_ = fresh(vt)
    first = (await take(plugin_, context(vt), 1))[0]
    stored = ResumePoint(first.serial, session_id(n), 40, from_us(grid.time_us(n, 40)))
    readings = await take(plugin_, context(vt, resume=stored), 64)
    assert [(r.seq, r.backfilled) for r in readings] == [(s, True) for s in range(41, 102)] + [
        (s, False) for s in range(102, 105)
    ]
    assert {r.session for r in readings} == {session_id(n)}
    assert len({r.id for r in readings}) == len(readings)


async def test_resume_after_a_sensor_change_backfills_both_sessions() -> None:
    options = SimulatorOptions(
        interval=60, seed=7, dropout_rate=0, missed_rate=0, session_days=0.25, warmup=600
    )
    grid = grid_of(options)
    n = current_session(grid)
    count = grid.count(n)  # 360 readings per 6 h session
    vt = VirtualTime(start=wall_at(grid, n, 5))
    plugin_ = fresh(vt)
    serial = (await take(plugin_, context(vt, options), 1))[0].serial  # live: seq 6
    stored = ResumePoint(serial, session_id(n - 1), count - 11, WALL)
    readings = await take(plugin_, context(vt, options, stored), 10 + 7 + 1)
    assert [(r.session, r.seq, r.backfilled) for r in readings] == (
        [(session_id(n - 1), s, True) for s in range(count - 10, count)]
        + [(session_id(n), s, True) for s in range(7)]
        + [(session_id(n), 7, False)]
    )
    # The old sensor's last reading, then the warm-up: the new one's first is a warm-up later.
    assert readings[10].time - readings[9].time == timedelta(seconds=60 + 600)


async def test_resume_older_than_the_memory_backfills_what_is_left_and_says_so() -> None:
    options = SimulatorOptions(
        interval=60, seed=7, dropout_rate=0, missed_rate=0, session_days=0.25, warmup=600
    )
    grid = grid_of(options)
    n = current_session(grid)
    vt = VirtualTime(start=wall_at(grid, n, 2))
    plugin_ = fresh(vt)
    serial = (await take(plugin_, context(vt, options), 1))[0].serial
    stored = ResumePoint(serial, session_id(n - 3), 17, WALL - timedelta(days=1))
    with capture_logs() as logs:
        readings = await take(plugin_, context(vt, options, stored), grid.count(n) + 3)
    assert (readings[0].session, readings[0].seq) == (session_id(n - 1), 0)
    assert [(r.session, r.seq) for r in readings[-3:]] == [(session_id(n), s) for s in range(3)]
    assert any(e["event"] == "backfill_gap" for e in logs)


async def test_restarted_process_sees_the_same_records_and_backfills_the_outage() -> None:
    grid = grid_of()
    n = current_session(grid)
    start = wall_at(grid, n, 200)
    vt1 = VirtualTime(start=start)
    before = await take(fresh(vt1), context(vt1), 20)  # seq 201..220, then kill -9
    vt2 = VirtualTime(start=start + timedelta(hours=1))  # a new process an hour later
    after = await take(fresh(vt2), context(vt2, resume=resume_from(before[-1])), 62)
    assert [r.seq for r in before + after] == list(range(201, 201 + 82))
    assert [r.backfilled for r in after] == [True] * 40 + [False] * 22  # missed: 221..260
    assert len({r.id for r in before + after}) == 82
    # A third process replaying history sees the very same records for the same times.
    vt3 = VirtualTime(start=start + timedelta(hours=2))
    replay_options = SimulatorOptions(
        interval=60, seed=7, dropout_rate=0, missed_rate=0, warmup=600, history=7199.5, speed=100
    )
    replay = await take(fresh(vt3), context(vt3, replay_options), 20)
    assert [(r.id, r.seq, r.time, r.glucose_mgdl, r.trend_mgdl_min) for r in replay] == [
        (r.id, r.seq, r.time, r.glucose_mgdl, r.trend_mgdl_min) for r in before
    ]


async def test_a_restart_after_the_replay_does_not_replay_stored_time_again() -> None:
    options = replace(QUIET, history=7200, speed=100)
    vt1 = VirtualTime()
    before = await take(fresh(vt1), context(vt1, options), 150)  # 2 h replayed, then 30 min
    assert before[-1].time > WALL
    vt2 = VirtualTime(start=vt1.wall() + timedelta(minutes=5))
    after = await take(fresh(vt2), context(vt2, options, resume_from(before[-1])), 5)
    seqs = [r.seq for r in before + after]
    assert seqs == list(range(seqs[0], seqs[0] + 155))
    # The replay starts at the newest stored reading: the 5 missed minutes come at 100x
    # (without that the new process would replay 2 h of stored time first: 72 s here).
    assert vt2.t < 5
    assert all(r.time <= r.received for r in after)


# -- link trouble -----------------------------------------------------------------------------


async def test_a_missed_notification_is_backfilled_before_the_next_reading() -> None:
    vt = VirtualTime()
    registry = SensorRegistry(monotonic=vt.monotonic, sleep=vt.sleep)
    got: list[Reading] = []
    with capture_logs() as logs:
        async with connected(create_plugin(registry), context(vt)) as it:
            async for r in it:
                got.append(r)
                if len(got) == 3:
                    registry.get(DEVICE).force_miss()  # the next live notification is lost
                if len(got) == 6:
                    break
    seqs = [r.seq for r in got]
    assert seqs == list(range(seqs[0], seqs[0] + 6))
    assert [r.backfilled for r in got] == [False, False, False, True, False, False]
    missed = [e for e in logs if e["event"] == "notification_missed"]
    assert [e["seq"] for e in missed] == [got[3].seq]


async def test_a_dropout_raises_link_lost_and_a_reconnect_closes_the_gap() -> None:
    vt = VirtualTime()
    registry = SensorRegistry(monotonic=vt.monotonic, sleep=vt.sleep)
    plugin_ = create_plugin(registry)
    got: list[Reading] = []

    async def until_the_link_drops() -> None:
        async with connected(plugin_, context(vt)) as it:
            async for r in it:
                got.append(r)
                if len(got) == 2:
                    registry.get(DEVICE).force_dropout()

    with capture_logs() as logs, pytest.raises(LinkLost):
        await until_the_link_drops()
    assert len(got) == 2
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["link_lost"]
    with pytest.raises(DeviceNotFound, match="not advertising"):
        async with plugin_.open(context(vt, resume=resume_from(got[-1]))):
            pass
    await vt.sleep(QUIET.dropout_readings * QUIET.interval)
    more = await take(plugin_, context(vt, resume=resume_from(got[-1])), 6)
    seqs = [r.seq for r in got + more]
    assert seqs == list(range(seqs[0], seqs[0] + 8))
    # The dropped record and the ones measured while the link was down come from memory.
    assert [r.backfilled for r in more] == [True] * 4 + [False] * 2


@dataclass
class Story:
    stored: list[Reading] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)


async def supervise(options: SimulatorOptions, want: int, backoff: float = 30.0) -> Story:
    """Run sessions in a loop as the supervisor does: resume from the newest stored reading."""
    vt = VirtualTime()
    plugin_ = fresh(vt)
    story = Story()
    while len(story.stored) < want:
        last = story.stored[-1] if story.stored else None
        ctx = context(vt, options, resume_from(last) if last else None)
        try:
            async with connected(plugin_, ctx) as it:
                async for r in it:
                    story.stored.append(r)
                    if len(story.stored) == want:
                        break
        except LinkLost:
            story.events["link_lost"] += 1
        except DeviceNotFound:
            story.events["not_found"] += 1
            await vt.sleep(backoff)
    return story


TROUBLED = SimulatorOptions(
    interval=60,
    seed=11,
    dropout_rate=0.02,
    dropout_readings=4,
    missed_rate=0.03,
    session_days=0.25,
    warmup=900,
)


async def test_random_dropouts_and_misses_lose_nothing_and_duplicate_nothing() -> None:
    with capture_logs() as logs:
        story = await supervise(TROUBLED, want=1200)
    stored = story.stored
    assert story.events["link_lost"] >= 5
    assert story.events["not_found"] >= 5
    assert sum(r.backfilled for r in stored) >= 50
    assert len({r.id for r in stored}) == len(stored), "duplicates"
    grid = grid_of(TROUBLED)
    assert [r.session for r in stored] == sorted(r.session for r in stored), "ids sort in time"
    sessions = [int(r.session[1:]) for r in stored]
    assert set(sessions) == set(range(sessions[0], sessions[-1] + 1)), "a whole session missing"
    for a, b in itertools.pairwise(stored):
        if a.session == b.session:
            assert b.seq == a.seq + 1, f"gap or reorder at {a.session}/{a.seq} -> {b.seq}"
        else:
            assert (a.seq, b.seq) == (grid.count(0) - 1, 0), "session not complete"
            assert b.time - a.time == timedelta(seconds=TROUBLED.interval + TROUBLED.warmup)
    ended = [e for e in logs if e["event"] == "sensor_session_ended"]
    assert ended, "no session ended while the sensor was watched live"
    assert all(r.time <= r.received for r in stored)


async def test_the_same_seed_tells_the_same_story() -> None:
    one = await supervise(TROUBLED, want=400)
    two = await supervise(TROUBLED, want=400)
    assert [(r.id, r.backfilled, r.glucose_mgdl) for r in one.stored] == [
        (r.id, r.backfilled, r.glucose_mgdl) for r in two.stored
    ]
    assert one.events == two.events


async def test_readings_outside_the_context_are_refused() -> None:
    vt = VirtualTime()
    session = fresh(vt).open(context(vt))
    with pytest.raises(RuntimeError, match="async with"):
        await anext(aiter(session.readings()))
