"""Fleet: N simulated hubs against one broker, consumed by a shared-subscription group.

What an integrator runs: thousands of hubs, each its own MQTT connection, publishing readings
to one broker; a backend consuming them with an MQTT 5 shared subscription
(`$share/backend/gatewayd/+/+/reading`, three members). This bench ramps the fleet size N
(10, 100, 1000 by default) and, at the largest N, the message rate, and reports what holds.
docs/fleet.md explains the figures to integrators.

- Hubs: worker processes (`--workers`, default 2: one per core) each run N/workers hubs on
  one asyncio loop (bench/_fleet_hubs.py). A gatewayd hub is the real `Publisher` with its own
  `Store` (an SQLite file per hub in one temp folder), client id `gatewayd-<hub>`, LWT,
  production backoff and window; a reading is `store.add()` + `publisher.notify()`, as the
  daemon's supervisor does.
- The compromise of hundreds of hubs per process (real hubs have a loop, a heap and a disk
  each): one hub's blocking store write or a garbage collection of the shared heap delays every
  hub of the worker. So each worker freezes its heap out of the GC after connecting (a full
  collection took ~110 ms with 500 gatewayd hubs), every fleet is warmed up with one reading
  per hub (each store's first write creates its WAL file), and the stores run with
  `synchronous=NORMAL`. The daemon's default, `FULL` (an fsync per commit: 500 stores fsyncing
  on one loop and one disk), is measured at the largest N only, as `gatewayd-fsync`.
- Load: one reading per hub every `--interval` s (default 5 s: 200 msg/s at N=1000; the real
  rate is one per 5 min, i.e. 3.3 msg/s for 1000 hubs), the hubs staggered evenly. The ramp
  (largest N only) raises the aggregate rate step by step (`--rates`) until a step fails: the
  workers could not keep the schedule, a reading was lost, delivery fell behind the schedule,
  or p99 latency went over 1 s.
- Consumers: three paho processes (bench/_fleet_consumer.py), MQTT 5, QoS 1, persistent
  sessions (300 s expiry). Latency is end to end: the reading's `received` (set when the hub
  got it) to the consumer's receipt, both wall clock on this machine (ms resolution: up to
  1 ms high).
- Baseline, same run, same broker settings, same N, same schedule and consumers: bare aiomqtt
  clients (one connection per hub, same client options and LWT) publishing the very same
  payload bytes with no store, no outbox and no retained `state` (gatewayd publishes the
  retained `state` after each live reading too: two publishes per reading).
- Pairing: at each N the gatewayd fleet and the bare fleet (and, at the largest N,
  gatewayd-fsync) are all started, each with its own broker, workers and consumers, and their
  phases then run one fleet at a time, back to back: `--rounds` steady rounds (default 3), the
  order reversed every other round (gatewayd-fsync and bare either side of gatewayd), then each
  ramp step for gatewayd and bare in turn (each fleet stops at its first step that fails). The
  idle fleets hold their connections meanwhile.
- Broker: the test mosquitto 2.0 with persistence, `max_queued_messages 0` and
  `set_tcp_nodelay true`, fresh for each (variant, N); its CPU and RSS come from
  /proc/<pid>; connections held are the ESTABLISHED sockets on its port (/proc/net/tcp). The
  file-descriptor limit is raised to the hard limit before anything starts (mosquitto and the
  workers inherit it).
- Outage (full mode, gatewayd, largest N, alone: the other fleets of its N are torn down
  first): the broker is stopped mid-stream (SIGTERM, or SIGKILL with `--outage-kill`) and
  restarted 5 s later; hubs keep reading into their outboxes. Reported: how fast the fleet
  reconnected (the production backoff: 1 s doubling to 60 s, jittered), when the consumer group
  had re-subscribed, duplicates, and readings the group missed (mosquitto keeps nothing for a
  shared subscription until its member has subscribed again after a restart).

Figures are ratios against the baseline, never pass/fail: the bench fails only when it cannot
run. Each ratio gatewayd / bare (and gatewayd-fsync / gatewayd) is taken per steady round, and
the one quoted is the median of the per-round ratios with their min-max: msg/s and latency
(wall clock) with the hubs' CPU time per reading beside them; the ramp steps both fleets ran
give another set of pairs (one per rate). The maximum sustained rate is one figure per fleet
(the highest step its ramp held), so its ratio is not paired and the output says so. The
absolute figures are the medians of the rounds.

The full run takes ~4 minutes; `--quick` ~30 s (N = 1000 only, short phases, two ramp steps,
no outage, no gatewayd-fsync). Run: `.venv/bin/python bench/fleet.py [--quick]` (or
`scripts/bench fleet`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import cpu_seconds, paired, ratio_text, result_header, round_pairs, write_result
from _fleet_common import (
    BROKER_CONFIG,
    PASS_ENV,
    USER_ENV,
    Child,
    established_on,
    latency_summary,
    memory_mib,
    note,
    percentile,
    spawn,
)
from gatewayd.ops.config import MqttConfig
from mosquitto import Mosquitto

NAME = "fleet"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Variant:
    """What runs the hubs: gatewayd (with its store at some `synchronous`) or bare clients."""

    name: str
    mode: str  # the worker's --mode
    synchronous: str = "normal"


GATEWAYD = Variant("gatewayd", "gatewayd", "normal")
BARE = Variant("bare", "bare")
#: The daemon's default store durability, fsync on every commit: at the largest N only.
GATEWAYD_FSYNC = Variant("gatewayd-fsync", "gatewayd", "full")
#: A ramp step holds only if p99 end-to-end latency stays under this.
P99_LIMIT_MS = 1000.0
#: ... and the workers emitted at least this share of the readings the schedule asked for.
SCHEDULE_SHARE = 0.95
#: How long after a phase's schedule ends its readings may still arrive (a backlog draining).
DELIVERY_GRACE_S = 30.0
#: ... but not when the hubs have no backlog and nothing arrived for this long.
QUIET_S = 2.0
#: The consumers' MQTT 5 session expiry: long enough to ride out a broker restart, short
#: enough that a member that vanished stops being handed its share of the group soon.
CONSUMER_SESSION_EXPIRY_S = 300


@dataclass(frozen=True)
class Plan:
    """What one run of the bench does."""

    sizes: tuple[int, ...]
    interval_s: float
    steady_s: float  # per round
    rounds: int  # steady rounds per fleet, the fleets of one N taking turns
    rates: tuple[int, ...]
    step_s: float
    outage: bool
    fsync_check: bool
    outage_s: float = 5.0


FULL = Plan(
    sizes=(10, 100, 1000),
    interval_s=5.0,
    steady_s=5.0,
    rounds=3,
    rates=(500, 1000, 2000, 3000, 4000, 6000, 8000),
    step_s=5.0,
    outage=True,
    fsync_check=True,
)
QUICK = Plan(
    sizes=(1000,),
    interval_s=5.0,
    steady_s=1.0,
    rounds=3,
    rates=(1000, 3000),
    step_s=2.0,
    outage=False,
    fsync_check=False,
)


class FleetMosquitto(Mosquitto):
    """The harness's mosquitto, plus its pid (for /proc)."""

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("mosquitto is not running")
        return self._process.pid


def raise_fd_limit() -> dict[str, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); the limits in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft": soft, "hard": hard}


def mosquitto_version(binary: str) -> str:
    out = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False).stdout
    words = out.split()
    return words[2] if len(words) > 2 and words[1] == "version" else "unknown"


# -- one phase ------------------------------------------------------------------------------------


@dataclass
class Phase:
    """What one phase (a load level for a while) measured."""

    name: str
    kind: str  # warmup | steady | ramp | outage
    target_msgs_per_s: float
    interval_s: float
    duration_s: float
    round: int = 0  # steady phases: which round (1, 2, ...)
    emitted: int = 0
    received: int = 0  # distinct readings the group got
    lost: int = 0  # emitted, never received within the grace
    duplicates: int = 0  # receipts beyond the first of an id (across and within members)
    msgs_per_s: float = 0.0  # received / (schedule end or last receipt, whichever later)
    offered_msgs_per_s: float = 0.0  # what the workers actually emitted per second
    latency_ms: dict[str, float] = field(default_factory=dict)
    schedule_lag_ms: dict[str, float] = field(default_factory=dict)
    delivered_after_s: float = 0.0  # last receipt minus the schedule's end
    shares: list[int] = field(default_factory=list)  # receipts per member
    broker_cpu_pct: float = 0.0  # of one core, over the phase
    broker_memory_mib: dict[str, float] = field(default_factory=dict)
    hubs_cpu_us_per_msg: float = 0.0  # hub workers' CPU per reading emitted (all workers)
    consumers_cpu_pct: float = 0.0
    connections: int = 0  # hubs' connections the broker held at the end of the phase
    hub_faults: int = 0  # reconnects (gatewayd) / failed publishes (bare) during the phase
    holds: bool = True
    notes: list[str] = field(default_factory=list)
    #: Outage phase only: how long the broker was down, how long the fleet took to come back.
    recovery: dict[str, Any] = field(default_factory=dict)


class Fleet:
    """One broker, N hubs of one mode, the consumer group; runs phases against them."""

    def __init__(self, mode: str, hubs: int, folder: Path, workers: int, members: int) -> None:
        self.mode = mode
        self.n = hubs
        self.folder = folder
        # Persistence: a graceful restart keeps the consumers' sessions (and what is queued for
        # them); it costs nothing per message (mosquitto only writes at shutdown/autosave).
        self.broker = FleetMosquitto(
            folder / "broker", persistence=True, extra_config=BROKER_CONFIG
        )
        self.outage_kill = False
        self.workers: list[Child] = []
        self.members: list[Child] = []
        self.n_workers = max(1, min(workers, hubs))
        self.n_members = members
        self.setup: dict[str, Any] = {}
        self._dead_broker_cpu = 0.0  # CPU of broker processes killed in an outage

    def broker_cpu(self) -> float:
        """CPU seconds of every broker process of this fleet so far."""
        return self._dead_broker_cpu + cpu_seconds(self.broker.pid)

    @property
    def env(self) -> dict[str, str]:
        return {USER_ENV: self.broker.username, PASS_ENV: self.broker.password}

    async def start(self, synchronous: str, inflight: int) -> None:
        """Broker, consumer group and hub workers (started together), then connect the hubs."""
        self.broker.start()
        t = time.monotonic()
        for i in range(self.n_members):
            args = ["--port", str(self.broker.port), "--name", f"backend-{i}"]
            args += ["--session-expiry", str(CONSUMER_SESSION_EXPIRY_S)]
            self.members.append(
                await spawn(f"member-{i}", HERE / "_fleet_consumer.py", args, self.env)
            )
        stores = self.folder / "stores"
        stores.mkdir(parents=True, exist_ok=True)
        per, extra = divmod(self.n, self.n_workers)
        first = 0
        for w in range(self.n_workers):
            count = per + (w < extra)
            args = ["--mode", self.mode, "--port", str(self.broker.port)]
            args += ["--first", str(first), "--count", str(count), "--total", str(self.n)]
            args += ["--folder", str(stores), "--synchronous", synchronous]
            args += ["--inflight", str(inflight)]
            self.workers.append(await spawn(f"worker-{w}", HERE / "_fleet_hubs.py", args, self.env))
            first += count

        async def built(worker: Child) -> float:
            """Its RSS before it made its hubs, once it says `ready` (its hubs exist)."""
            assert worker.process.stdout is not None
            async with asyncio.timeout(120):
                line = await worker.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{worker.name} died while building its hubs")
            rss: float = json.loads(line)["memory_before"]["vmrss"]
            return rss

        bare_rss = await asyncio.gather(*(built(w) for w in self.workers))
        for answer in await self._members({"cmd": "ready", "timeout": 20}, 30):
            if not answer["subscribed"]:
                raise RuntimeError("a consumer did not subscribe")
        self.setup["build_s"] = round(time.monotonic() - t, 2)
        before = memory_mib(self.broker.pid)
        t = time.monotonic()
        answers = await self._all({"cmd": "connect", "timeout": 120}, 150)
        self.setup["connect_s"] = round(time.monotonic() - t, 2)
        self.setup["connected"] = sum(a["connected"] for a in answers)
        self.setup["broker_connections"] = established_on(self.broker.port) - self.n_members
        self.setup["broker_memory_mib_idle"] = before
        self.setup["broker_memory_mib_connected"] = memory_mib(self.broker.pid)
        self.setup["worker_memory_mib"] = [a["memory"]["vmrss"] for a in answers]
        # What each hub adds to a worker (its objects, store, connection), after connecting.
        self.setup["worker_kib_per_hub"] = round(
            (sum(a["memory"]["vmrss"] for a in answers) - sum(bare_rss)) * 1024 / self.n, 1
        )
        if self.setup["connected"] != self.n:
            raise RuntimeError(f"only {self.setup['connected']} of {self.n} hubs connected")

    async def close(self) -> None:
        """Hubs stop (gatewayd: flush, `offline`), consumers end their sessions, broker stops."""
        t = time.monotonic()
        try:
            await asyncio.gather(
                *(
                    w.close({"cmd": "close"} if w.process.returncode is None else None, timeout=60)
                    for w in self.workers
                ),
                return_exceptions=True,
            )
            self.setup["close_s"] = round(time.monotonic() - t, 2)
            await asyncio.gather(
                *(m.close({"cmd": "quit"}, timeout=10) for m in self.members),
                return_exceptions=True,
            )
        finally:
            self.broker.stop()

    async def _all(self, cmd: dict[str, Any], timeout: float) -> list[dict[str, Any]]:  # noqa: ASYNC109
        return list(await asyncio.gather(*(w.request(cmd, timeout) for w in self.workers)))

    async def _members(self, cmd: dict[str, Any], timeout: float = 30) -> list[dict[str, Any]]:  # noqa: ASYNC109
        return list(await asyncio.gather(*(m.request(cmd, timeout) for m in self.members)))

    async def _received(self, phase: str) -> int:
        return sum(a["unique"] for a in await self._members({"cmd": "count", "phase": phase}))

    async def _faults(self) -> int:
        return sum(a["faults"] for a in await self._all({"cmd": "status"}, 30))

    async def run_phase(self, phase: Phase, outage: tuple[float, float] | None = None) -> Phase:
        """Run the schedule, wait for delivery, collect the consumers' figures. With `outage`
        (seconds into the phase, seconds down) the broker is killed and restarted meanwhile."""
        broker_cpu0 = self.broker_cpu()
        members_cpu0 = sum(a["cpu_s"] for a in await self._members({"cmd": "status"}))
        faults0 = await self._faults()
        wall0 = time.time()
        start = wall0 + 0.3
        end = start + phase.duration_s
        run = {
            "cmd": "run",
            "phase": phase.name,
            "start": start,
            "interval": phase.interval_s,
            "duration": phase.duration_s,
        }
        await self._all(run, 30)
        if outage is not None:
            await self._outage(phase, start + outage[0], outage[1])
        answers = await self._all({"cmd": "finish"}, phase.duration_s + 120)
        phase.emitted = sum(a["emitted"] for a in answers)
        phase.offered_msgs_per_s = round(phase.emitted / phase.duration_s, 1)
        phase.schedule_lag_ms = {
            "p99": max(a["schedule_lag_ms"]["p99"] for a in answers),
            "max": max(a["schedule_lag_ms"]["max"] for a in answers),
        }
        hubs_cpu = sum(a["cpu_s"] for a in answers)
        # Delivery: every emitted reading received by some member, within the grace; or the
        # hubs have nothing unacknowledged and nothing more arrived for a while (the rest is
        # lost: no point waiting out the grace for it).
        deadline = time.monotonic() + DELIVERY_GRACE_S + (60 if outage is not None else 0)
        seen, changed = -1, time.monotonic()
        while time.monotonic() < deadline:
            got = await self._received(phase.name)
            if got >= phase.emitted:
                break
            if got != seen:
                seen, changed = got, time.monotonic()
            elif time.monotonic() - changed > QUIET_S:
                backlog = sum(a["backlog"] for a in await self._all({"cmd": "status"}, 30))
                if backlog == 0:
                    break
            await asyncio.sleep(0.1)  # polling a condition with a deadline
        drained = await self._all({"cmd": "drain", "timeout": 5}, 30)
        reports = await self._members({"cmd": "report", "phase": phase.name}, 60)
        status = await self._members({"cmd": "status"})
        wall1 = time.time()
        ids: set[str] = set()
        latencies: list[float] = []
        for report in reports:
            ids.update(report["ids"])
            latencies.extend(report["latencies"])
        counts = [r["count"] for r in reports]
        lasts = [r["last"] for r in reports if r["last"] is not None]
        last = max(lasts) if lasts else end
        phase.received = len(ids)
        phase.lost = max(0, phase.emitted - phase.received)
        phase.duplicates = sum(counts) - len(ids)
        phase.shares = counts
        phase.msgs_per_s = round(phase.received / (max(last, end) - start), 1)
        phase.delivered_after_s = round(last - end, 3)
        # A reading received twice keeps its first latency only (the member drops repeats).
        phase.latency_ms = latency_summary(latencies)
        window = max(last, end) - wall0
        phase.broker_cpu_pct = round(100 * (self.broker_cpu() - broker_cpu0) / window, 1)
        phase.broker_memory_mib = memory_mib(self.broker.pid)
        phase.hubs_cpu_us_per_msg = round(hubs_cpu / max(1, phase.emitted) * 1e6, 1)
        members_cpu = sum(s["cpu_s"] for s in status) - members_cpu0
        phase.consumers_cpu_pct = round(100 * members_cpu / (wall1 - wall0), 1)
        phase.connections = established_on(self.broker.port) - self.n_members
        phase.hub_faults = sum(a["faults"] for a in drained) - faults0
        backlog = sum(a["backlog"] for a in drained)
        if backlog:
            phase.notes.append(f"{backlog} readings still unacknowledged at the hubs")
        if phase.kind in ("steady", "ramp"):
            asked = self.n * phase.duration_s / phase.interval_s
            if phase.emitted < SCHEDULE_SHARE * asked:
                phase.holds = False
                phase.notes.append(f"workers emitted {phase.emitted} of {asked:.0f} scheduled")
            if phase.lost:
                phase.holds = False
                phase.notes.append(f"{phase.lost} readings not received")
            elif phase.msgs_per_s < SCHEDULE_SHARE * phase.offered_msgs_per_s:
                phase.holds = False
                phase.notes.append(
                    f"delivery fell behind: the last reading arrived "
                    f"{phase.delivered_after_s:.1f} s after the schedule ended"
                )
            if phase.latency_ms.get("p99", math.inf) > P99_LIMIT_MS:
                phase.holds = False
                phase.notes.append(f"p99 latency over {P99_LIMIT_MS:.0f} ms")
            if phase.connections != self.n or phase.hub_faults:
                phase.holds = False
                phase.notes.append(
                    f"{phase.connections} of {self.n} connections held, "
                    f"{phase.hub_faults} hub faults"
                )
        return phase

    async def _outage(self, phase: Phase, kill_at: float, down_s: float) -> None:
        """Kill the broker at wall time `kill_at`, restart it `down_s` later, time the fleet
        back (every hub connected, every consumer subscribed again)."""
        await asyncio.sleep(max(0.0, kill_at - time.time()))
        self._dead_broker_cpu += cpu_seconds(self.broker.pid)
        self.broker.stop(kill=self.outage_kill)
        killed = time.monotonic()
        await asyncio.sleep(down_s)  # the outage itself: a deliberate wait, not a synchronisation
        self.broker.start()
        restarted = time.monotonic()
        restarted_wall = time.time()
        answers = await self._all({"cmd": "wait_connected", "timeout": 120}, 150)
        back = time.monotonic()
        await self._members({"cmd": "ready", "timeout": 30}, 40)
        members = await self._members({"cmd": "status"})
        resubscribed = max(m["subscribed_at"] for m in members) - restarted_wall
        up = sorted(t - restarted_wall for a in answers for t in a["up_at"])
        early = sum(1 for t in up if t < resubscribed)
        phase.recovery = {
            "signal": "SIGKILL" if self.outage_kill else "SIGTERM",
            "broker_down_s": round(restarted - killed, 2),
            "hubs_reconnected": len(up),
            "hubs_back_after_restart_s": {
                "p50": round(percentile(up, 50), 2),
                "p90": round(percentile(up, 90), 2),
                "max": round(back - restarted, 2),
            },
            "consumers_resubscribed_after_restart_s": round(resubscribed, 2),
            "hubs_back_before_the_consumers": early,
        }
        phase.notes.append(
            f"broker down {restarted - killed:.1f} s ({phase.recovery['signal']}); "
            f"{len(up)} hubs back within {back - restarted:.1f} s of the restart (p50 "
            f"{phase.recovery['hubs_back_after_restart_s']['p50']} s); the consumer group "
            f"re-subscribed after {resubscribed:.2f} s; hubs back before that: {early}"
        )


# -- the plan -------------------------------------------------------------------------------------


@dataclass
class FleetRun:
    """One (mode, N): setup figures and its phases."""

    mode: str  # the variant's name
    hubs: int
    synchronous: str | None  # the hubs' store `synchronous` (None: bare, no store)
    setup: dict[str, Any]
    phases: list[Phase]
    max_sustained_msgs_per_s: float | None = None
    error: str | None = None


@dataclass
class Side:
    """One fleet of a group and what it has measured so far."""

    variant: Variant
    fleet: Fleet
    run: FleetRun
    closed: bool = False

    async def close(self) -> None:
        """Tear the fleet down (once)."""
        if not self.closed:
            self.closed = True
            await self.fleet.close()

    async def attempt(self, work: Coroutine[Any, Any, Any]) -> bool:
        """Await `work` unless this fleet already failed; a failure is noted, not raised."""
        if self.run.error is not None:
            work.close()
            return False
        try:
            await work
        except Exception as exc:
            self.run.error = f"{type(exc).__name__}: {exc}"
            note(f"[{NAME}] {self.run.mode} N={self.run.hubs}: FAILED {self.run.error}")
            return False
        return True

    async def start(self, args: argparse.Namespace) -> None:
        """Broker, consumers, hubs connected, and a warm-up phase (not reported)."""
        mode, n, fleet = self.run.mode, self.run.hubs, self.fleet
        await fleet.start(self.variant.synchronous, args.inflight)
        note(
            f"[{NAME}] {mode} N={n}: built in {fleet.setup['build_s']} s, connected in "
            f"{fleet.setup['connect_s']} s"
        )
        # Warm-up, not reported: one reading per hub (in one second), so that each hub's
        # first write (SQLite creates the WAL file then) and first publish are behind us.
        warmup = Phase(f"warmup-{mode}-{n}", "warmup", n, 1.0, 1.0)
        await fleet.run_phase(warmup)
        fleet.setup["warmup"] = {
            "emitted": warmup.emitted,
            "received": warmup.received,
            "latency_ms": warmup.latency_ms,
        }

    async def phase(self, phase: Phase, outage: tuple[float, float] | None = None) -> None:
        """Run one reported phase."""
        self.run.phases.append(await self.fleet.run_phase(phase, outage=outage))
        _progress(self.run.mode, self.run.hubs, phase)


async def run_group(
    variants: list[Variant], n: int, plan: Plan, args: argparse.Namespace
) -> list[FleetRun]:
    """Start a fleet of each variant at size `n` (in this order), run their phases taking turns
    (steady rounds, then at the largest N the ramp of gatewayd and bare and gatewayd's outage),
    tear them down. One failing fleet does not stop the others."""
    note(f"[{NAME}] N={n}: starting {', '.join(v.name for v in variants)}")
    with tempfile.TemporaryDirectory(prefix=f"bench-fleet-{n}-") as tmp:
        sides: list[Side] = []
        try:
            for variant in variants:
                fleet = Fleet(variant.mode, n, Path(tmp) / variant.name, args.workers, args.members)
                fleet.outage_kill = args.outage_kill
                synchronous = variant.synchronous if variant.mode == "gatewayd" else None
                side = Side(variant, fleet, FleetRun(variant.name, n, synchronous, fleet.setup, []))
                sides.append(side)
                await side.attempt(side.start(args))
            for r in range(1, plan.rounds + 1):
                for side in sides if r % 2 else sides[::-1]:
                    steady = Phase(
                        f"steady-{side.run.mode}-{n}-{r}",
                        "steady",
                        n / plan.interval_s,
                        plan.interval_s,
                        plan.steady_s,
                        r,
                    )
                    await side.attempt(side.phase(steady))
            if n == max(plan.sizes):
                await _ramp_and_outage(sides, n, plan)
        finally:
            for side in sides:
                await side.close()
    return [side.run for side in sides]


async def _ramp_and_outage(sides: list[Side], n: int, plan: Plan) -> None:
    """At the largest N: each ramp step for gatewayd and bare in turn (a fleet stops at its
    first step that fails), then gatewayd's outage with the other fleets torn down first."""
    ramping = [side for side in sides if side.variant in (GATEWAYD, BARE)]
    for i, rate in enumerate(plan.rates):
        for side in list(ramping if i % 2 == 0 else ramping[::-1]):
            step = Phase(f"ramp-{side.run.mode}-{n}-{rate}", "ramp", rate, n / rate, plan.step_s)
            if await side.attempt(side.phase(step)) and step.holds:
                side.run.max_sustained_msgs_per_s = step.msgs_per_s
            else:
                ramping.remove(side)
        if not ramping:
            break
    for side in sides:
        if plan.outage and side.variant == GATEWAYD:
            for other in sides:
                if other is not side:
                    await other.close()
            outage = Phase(
                f"outage-{side.run.mode}-{n}",
                "outage",
                n / plan.interval_s,
                plan.interval_s,
                plan.outage_s + 10.0,
            )
            await side.attempt(side.phase(outage, outage=(2.0, plan.outage_s)))


def _progress(mode: str, n: int, phase: Phase) -> None:
    lat = phase.latency_ms
    note(
        f"[{NAME}] {mode} N={n} {phase.kind} {phase.target_msgs_per_s:.0f}/s: "
        f"{phase.received}/{phase.emitted} at {phase.msgs_per_s:.0f} msg/s, "
        f"p50 {lat.get('p50')} p99 {lat.get('p99')} ms, broker {phase.broker_cpu_pct}% CPU"
        f"{'' if phase.holds else ' — does not hold: ' + '; '.join(phase.notes)}"
    )


# -- the report -----------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 3)


def _number(value: float | None) -> float:
    return math.nan if value is None else value


#: What is compared per pair of phases: the wall-clock figures, then the CPU time.
FIGURES: dict[str, Callable[[Phase], float]] = {
    "ratio_msgs_per_s": lambda p: p.msgs_per_s,
    "ratio_latency_p50": lambda p: _number(p.latency_ms.get("p50")),
    "ratio_latency_p99": lambda p: _number(p.latency_ms.get("p99")),
    "ratio_hubs_cpu_per_msg": lambda p: p.hubs_cpu_us_per_msg,
}


def paired_phases(
    a: FleetRun, b: FleetRun, kind: str, key: Callable[[Phase], int]
) -> dict[str, dict[str, Any]]:
    """Per figure: the median of the ratios a/b over the phases of `kind` both fleets ran, pairs
    matched by `key` (the round of a steady phase, the rate of a ramp step)."""
    phases = [(run.mode, p) for run in (a, b) for p in run.phases if p.kind == kind]

    def figure(value: Callable[[Phase], float]) -> dict[str, Any]:
        return paired(
            round_pairs(
                phases,
                a.mode,
                b.mode,
                lambda item: value(item[1]),
                side=lambda item: item[0],
                rounds=lambda item: key(item[1]),
            )
        )

    return {name: figure(value) for name, value in FIGURES.items()}


def _steady_round(phase: Phase) -> int:
    return phase.round


def _ramp_rate(phase: Phase) -> int:
    return round(phase.target_msgs_per_s)


def _steady_median(run: FleetRun, attr: str) -> float | None:
    values = [getattr(p, attr) for p in run.phases if p.kind == "steady"]
    return round(statistics.median(values), 1) if values else None


def summarize(
    runs: list[FleetRun], plan: Plan, args: argparse.Namespace, limits: dict[str, int]
) -> dict[str, Any]:
    """The JSON result: every run and phase, the paired gatewayd/bare ratios, what held."""
    by = {(r.mode, r.hubs): r for r in runs}
    comparison: dict[str, Any] = {}
    for n in plan.sizes:
        g, b = by.get(("gatewayd", n)), by.get(("bare", n))
        if g is None or b is None or not g.phases or not b.phases:
            continue
        steady = paired_phases(g, b, "steady", _steady_round)
        entry: dict[str, Any] = {
            "steady_msgs_per_s": {
                "gatewayd": _steady_median(g, "msgs_per_s"),
                "bare": _steady_median(b, "msgs_per_s"),
            },
            # Each: the median of the per-round ratios (the full figure in `paired`).
            **{name: figure["median"] for name, figure in steady.items()},
            "paired": steady,
            "ratio_max_sustained_msgs_per_s": _ratio(
                g.max_sustained_msgs_per_s, b.max_sustained_msgs_per_s
            ),
        }
        if any(p.kind == "ramp" for p in g.phases) and any(p.kind == "ramp" for p in b.phases):
            entry["ramp_paired"] = paired_phases(g, b, "ramp", _ramp_rate)
            entry["unpaired"] = {
                "ratio_max_sustained_msgs_per_s": "one ramp per fleet: the highest step each "
                "held, a single figure per side, not a median of paired rounds"
            }
        comparison[str(n)] = entry

    fsync = by.get(("gatewayd-fsync", max(plan.sizes)))
    normal = by.get(("gatewayd", max(plan.sizes)))
    if fsync and normal and fsync.phases and normal.phases:
        figures = paired_phases(fsync, normal, "steady", _steady_round)
        comparison["fsync_over_normal_at_largest_n"] = {
            **{name: figure["median"] for name, figure in figures.items()},
            "paired": figures,
        }

    def held(mode: str) -> int:
        ok = [
            r.hubs
            for r in runs
            if r.mode == mode
            and r.error is None
            and any(p.kind == "steady" for p in r.phases)
            and all(p.holds for p in r.phases if p.kind == "steady")
        ]
        return max(ok, default=0)

    return {
        **result_header(
            NAME,
            "aiomqtt",
            "paho-mqtt",
            mosquitto=mosquitto_version(shutil.which("mosquitto") or "/usr/sbin/mosquitto"),
            nofile_limit=limits,
        ),
        "setup": {
            "mode": "quick" if args.quick else "full",
            **asdict(plan),
            "workers": args.workers,
            "consumer_members": args.members,
            "store_synchronous": {
                v.name: v.synchronous for v in (GATEWAYD, GATEWAYD_FSYNC) if v.mode == "gatewayd"
            },
            "inflight_window": args.inflight,
            "broker_config": list(BROKER_CONFIG),
            "p99_limit_ms": P99_LIMIT_MS,
            "consumer_session_expiry_s": CONSUMER_SESSION_EXPIRY_S,
            "broker_persistence": True,
            "outage_signal": "SIGKILL" if args.outage_kill else "SIGTERM",
        },
        "runs": [asdict(r) for r in runs],
        "comparison": comparison,
        "largest_n_held": {"gatewayd": held("gatewayd"), "bare": held("bare")},
    }


def _figures_text(figures: dict[str, dict[str, Any]]) -> list[str]:
    """The lines of one set of paired figures: wall clock first, the hubs' CPU time beside."""
    return [
        f"      msg/s {ratio_text(figures['ratio_msgs_per_s'])}"
        f"   hub CPU time/msg {ratio_text(figures['ratio_hubs_cpu_per_msg'])}",
        f"      latency p50 {ratio_text(figures['ratio_latency_p50'])}"
        f"   p99 {ratio_text(figures['ratio_latency_p99'])}",
    ]


def print_block(result: dict[str, Any], path: Path) -> None:
    """The human-readable result block."""
    setup = result["setup"]
    sync = setup["store_synchronous"]
    lines = [
        f"== {NAME}: N hubs -> mosquitto -> shared-subscription group of "
        f"{setup['consumer_members']} ({setup['mode']} run, {result['seconds']:.0f} s) ==",
        f"  one reading per hub every {setup['interval_s']:g} s (steady: {setup['rounds']} rounds "
        f"of {setup['steady_s']:g} s per fleet, the fleets of one N taking turns), QoS 1, "
        f"{setup['workers']} hub worker processes; stores synchronous={sync['gatewayd']} "
        f"(gatewayd-fsync: {sync['gatewayd-fsync']}); mosquitto {result['machine']['mosquitto']}"
        f"; nofile {result['machine']['nofile_limit']['soft']}",
        f"  {'variant':<14} {'N':>5}  phase    target  offered received  lost dup    msg/s"
        "    p50    p95    p99     max ms  broker%  hub us/msg  conns",
    ]
    for run in result["runs"]:
        head = f"  {run['mode']:<14} {run['hubs']:>5}"
        s = run["setup"]
        if "connect_s" in s:
            lines.append(
                f"{head}  connect: {s['connected']} hubs in {s['connect_s']} s (built in "
                f"{s['build_s']} s), broker holds {s['broker_connections']}, broker RSS "
                f"{s['broker_memory_mib_idle'].get('vmrss')} -> "
                f"{s['broker_memory_mib_connected'].get('vmrss')} MiB, worker "
                f"{s['worker_kib_per_hub']:.0f} KiB/hub"
            )
        if run["error"]:
            lines.append(f"{head}  ERROR {run['error']}")
        for p in run["phases"]:
            lat = p["latency_ms"]
            kind = p["kind"] + (str(p["round"]) if p["round"] else "")
            lines.append(
                f"{head}  {kind:<7} {p['target_msgs_per_s']:>6.0f}"
                f" {p['offered_msgs_per_s']:>8.0f}"
                f" {p['received']:>8} {p['lost']:>5} {p['duplicates']:>3} {p['msgs_per_s']:>8.0f}"
                f" {lat.get('p50', 0):>6.1f} {lat.get('p95', 0):>6.1f} {lat.get('p99', 0):>6.1f}"
                f" {lat.get('max', 0):>7.1f}  {p['broker_cpu_pct']:>6.1f}  "
                f"{p['hubs_cpu_us_per_msg']:>9.0f}  {p['connections']:>5}"
                f"{'' if p['holds'] else '  FAILS'}"
            )
            lines.extend(f"{'':>24}note: {text}" for text in p["notes"])
        if run["max_sustained_msgs_per_s"] is not None:
            lines.append(
                f"{head}  max sustained rate {run['max_sustained_msgs_per_s']:.0f} msg/s "
                f"(the highest ramp step that held)"
            )
    lines.append("  ratios = median of the per-round ratios (min-max, rounds)")
    for n, c in result["comparison"].items():
        if n == "fsync_over_normal_at_largest_n":
            lines.append("  gatewayd-fsync/gatewayd at the largest N, steady rounds:")
            lines += _figures_text(c["paired"])
            continue
        lines.append(f"  N={n}: gatewayd/bare, steady rounds:")
        lines += _figures_text(c["paired"])
        if "ramp_paired" in c:
            lines.append(f"  N={n}: gatewayd/bare, the ramp steps both ran (one pair per rate):")
            lines += _figures_text(c["ramp_paired"])
        sustained = c["ratio_max_sustained_msgs_per_s"]
        if sustained is not None:
            lines.append(
                f"  N={n}: gatewayd/bare max sustained rate {sustained:.2f}: NOT PAIRED (one ramp "
                "per fleet, a single figure per side; no CPU-time ratio)"
            )
    held = result["largest_n_held"]
    lines += [
        f"  largest N that held every steady round: gatewayd {held['gatewayd']}, "
        f"bare {held['bare']}",
        f"  json: {path}",
    ]
    print("\n".join(lines), flush=True)


async def main_async(args: argparse.Namespace, plan: Plan) -> list[FleetRun]:
    """Every size with gatewayd and the baseline side by side (alternating who goes first),
    and at the largest size the daemon's default fsync-per-commit store beside them."""
    runs: list[FleetRun] = []
    for i, n in enumerate(plan.sizes):
        variants = [GATEWAYD, BARE] if i % 2 == 0 else [BARE, GATEWAYD]
        if plan.fsync_check and n == max(plan.sizes):
            variants = [BARE, GATEWAYD, GATEWAYD_FSYNC]  # gatewayd next to both, every round
        runs += await run_group(variants, n, plan, args)
    return runs


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a ~30 s run")
    parser.add_argument("--hubs", help="fleet sizes, comma-separated (default 10,100,1000)")
    parser.add_argument("--rates", help="ramp steps, aggregate msg/s, comma-separated")
    parser.add_argument("--interval", type=float, help="seconds between readings of one hub")
    parser.add_argument("--steady", type=float, help="seconds of each steady round")
    parser.add_argument("--rounds", type=int, help="steady rounds per fleet (default 3)")
    parser.add_argument("--no-outage", dest="outage", action="store_false")
    parser.add_argument(
        "--outage-kill", action="store_true", help="SIGKILL the broker (default: SIGTERM)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument(
        "--no-fsync-check", dest="fsync_check", action="store_false", help="skip gatewayd-fsync"
    )
    parser.add_argument("--inflight", type=int, default=MqttConfig().inflight)
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.hubs:
        changes["sizes"] = tuple(int(x) for x in args.hubs.split(","))
    if args.rates:
        changes["rates"] = tuple(int(x) for x in args.rates.split(",") if x.strip() != "none")
    if args.interval:
        changes["interval_s"] = args.interval
    if args.steady:
        changes["steady_s"] = args.steady
    if args.rounds:
        changes["rounds"] = args.rounds
    if not args.outage:
        changes["outage"] = False
    if not args.fsync_check:
        changes["fsync_check"] = False
    plan = Plan(**{**asdict(plan), **changes})
    limits = raise_fd_limit()
    # The broker holds a descriptor per hub; a gatewayd worker four per hub (socket, database,
    # WAL, shared memory).
    biggest = max(plan.sizes)
    need = max(biggest + args.members, -(-biggest // args.workers) * 4) + 64
    if limits["soft"] < need:
        note(f"[{NAME}] warning: RLIMIT_NOFILE {limits['soft']} < {need} needed for N={biggest}")
    t = time.monotonic()
    runs = asyncio.run(main_async(args, plan))
    note(f"[{NAME}] done in {time.monotonic() - t:.0f} s")
    result = summarize(runs, plan, args, limits)
    result["seconds"] = round(time.monotonic() - t, 1)
    path = write_result(NAME, result)
    print_block(result, path)
    failed = [r for r in runs if r.error is not None]
    return 1 if failed and len(failed) == len(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
