"""Fault campaign: a real `gatewayd run`, emulated sensors and a real mosquitto, under faults.

Two campaigns, shared by the normal suite (`test_camp_faults.py`, small) and the opt-in soak
(`scripts/soak`, long):

* `kill_campaign`: `kill -9` of the daemon at random moments (`min_gap`..`max_gap` s after each
  restart), restarted at once, optionally with clean broker outages interleaved (kills go on
  while the broker is down). Two simulated sensors run in real time with lost notifications and
  link dropouts; sensor sessions are short, so session changes happen under fire too.
* `hour_outage`: the broker stops (cleanly, persistence on) while the simulator replays its past
  at high speed, until at least one simulated hour of readings per device waits in the outbox;
  then the broker comes back and the hub replays everything.

A persistent-session subscriber (fixed client id, QoS 1, `persistence=True` broker) records
everything that reaches the broker. The checks, in `KillReport.problems()` and
`OutageReport.problems()`: every stored id arrived and nothing else did; no sequence gap inside
a stored sensor session; no (device, session, seq) under two ids, in the store or on the wire; a
duplicate on the wire is the same bytes again; first arrivals per device in (session, seq) order.

Run as a program (what `scripts/soak` does): ``python tests/system/campaign/camp_faults.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mosquitto import Mosquitto
from polling import wait_until
from subscriber import Received, Subscriber

from integration_support import DaemonProcess, contiguous_gaps, duplicate_keys, write_config

#: Sensor sessions of ~21.6 s (no warm-up): a 60 s campaign crosses session changes.
SESSION_DAYS = 0.00025
#: How often the store is polled to time recoveries (s).
POLL = 0.01
#: Recoveries slower than this (s) are listed with the kill's wall time, to read the daemon log.
SLOW = 2.0


# -- helpers ---------------------------------------------------------------------------------


def _max_rowid(store: Path) -> int | None:
    """The newest reading's rowid (0 for no store yet), None when the store cannot be read."""
    if not store.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1)
        try:
            (top,) = db.execute("SELECT coalesce(max(rowid), 0) FROM readings").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return int(top)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def _readings(messages: list[Received]) -> list[tuple[dict[str, Any], bytes]]:
    return [(m.json(), m.payload) for m in messages if m.topic.endswith("/reading")]


@dataclass
class WireCheck:
    """What the subscriber saw of the readings, against what the store holds."""

    stored: int = 0
    received: int = 0  # distinct ids
    messages: int = 0  # reading messages, duplicates included
    duplicates: int = 0  # messages - received
    backfilled: int = 0  # distinct ids flagged backfilled
    sessions: int = 0  # distinct (device, session) stored
    missing: list[str] = field(default_factory=list)  # stored, never received
    unexpected: list[str] = field(default_factory=list)  # received, not stored
    gaps: list[tuple[str, str, int]] = field(default_factory=list)
    stored_key_conflicts: list[tuple[str, str, int]] = field(default_factory=list)
    wire_key_conflicts: list[tuple[str, str, int]] = field(default_factory=list)
    changed_duplicates: list[str] = field(default_factory=list)  # same id, other bytes
    out_of_order: list[str] = field(default_factory=list)  # devices

    def problems(self) -> list[str]:
        found = []
        for name in (
            "missing",
            "unexpected",
            "gaps",
            "stored_key_conflicts",
            "wire_key_conflicts",
            "changed_duplicates",
            "out_of_order",
        ):
            value = getattr(self, name)
            if value:
                found.append(f"{name}: {len(value)} (first: {value[:3]})")
        if self.stored == 0:
            found.append("nothing stored")
        return found


def check_wire(stored: list[tuple[str, str, str, int]], messages: list[Received]) -> WireCheck:
    """Compare the store's rows (id, device, session, seq) with the messages received."""
    stored_ids = {row[0] for row in stored}
    readings = _readings(messages)
    first: dict[str, bytes] = {}
    keys: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    order: dict[str, list[tuple[str, int]]] = defaultdict(list)
    changed: list[str] = []
    for payload, raw in readings:
        rid = payload["id"]
        keys[(payload["device"], payload["session"], payload["seq"])].add(rid)
        if rid in first:
            if first[rid] != raw:
                changed.append(rid)
            continue
        first[rid] = raw
        order[payload["device"]].append((payload["session"], payload["seq"]))
    received = set(first)
    return WireCheck(
        stored=len(stored),
        received=len(received),
        messages=len(readings),
        duplicates=len(readings) - len(received),
        backfilled=len({p["id"] for p, _ in readings if p["backfilled"]}),
        sessions=len({(row[1], row[2]) for row in stored}),
        missing=sorted(stored_ids - received),
        unexpected=sorted(received - stored_ids),
        gaps=contiguous_gaps(stored),
        stored_key_conflicts=duplicate_keys(stored),
        wire_key_conflicts=[key for key, ids in keys.items() if len(ids) > 1],
        changed_duplicates=changed,
        out_of_order=[device for device, seen in order.items() if seen != sorted(seen)],
    )


class _Link:
    """The persistent-session subscriber, reconnected around broker outages."""

    def __init__(self, broker: Mosquitto, topics: list[str], client_id: str) -> None:
        self.broker, self.topics, self.client_id = broker, topics, client_id
        self.messages: list[Received] = []
        self._sub: Subscriber | None = None

    async def connect(self) -> None:
        self._sub = Subscriber(self.broker, self.topics, client_id=self.client_id, persistent=True)
        await self._sub.__aenter__()

    async def disconnect(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.__aexit__(None, None, None)
            self.messages += sub.messages

    def all(self) -> list[Received]:
        return self.messages + (self._sub.messages if self._sub is not None else [])

    async def wait_for_ids(self, ids: set[str], timeout: float) -> None:
        assert self._sub is not None
        have = {p["id"] for p, _ in _readings(self.messages)}
        await self._sub.wait_for(
            lambda ms: ids <= have | {p["id"] for p, _ in _readings(ms)}, timeout=timeout
        )


# -- kill -9 campaign ------------------------------------------------------------------------


@dataclass
class KillReport:
    """Figures of one kill campaign (times in seconds)."""

    seed: int
    kills: int = 0
    starts: int = 0
    outages: int = 0
    outage_s: float = 0.0
    duration_s: float = 0.0
    #: kill -> the next reading stored by any later process (chains of early kills included)
    recovery_max_s: float | None = None
    recovery_p50_s: float | None = None
    recovery_p95_s: float | None = None
    #: kills that came before the restarted daemon had stored anything
    killed_before_first_reading: int = 0
    #: restart -> first reading stored, for restarts that lived long enough
    first_reading_max_s: float | None = None
    first_reading_p50_s: float | None = None
    #: recoveries over SLOW s: kill number, its wall time, broker state (read the daemon log)
    slow_recoveries: list[dict[str, Any]] = field(default_factory=list)
    #: the campaign's own worst lateness against its schedule (a stalled machine shows here)
    campaign_lag_s: float = 0.0
    terminate_rc: int | None = None
    outbox_after_stop: int | None = None
    wire: WireCheck = field(default_factory=WireCheck)

    def problems(self) -> list[str]:
        found = self.wire.problems()
        if self.terminate_rc != 0:
            found.append(f"clean stop exited {self.terminate_rc}")
        if self.outbox_after_stop:
            found.append(f"outbox {self.outbox_after_stop} after the clean stop")
        return found

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        wire = out.pop("wire")
        for name in ("missing", "unexpected", "gaps", "stored_key_conflicts"):
            wire[name] = len(wire[name])
        for name in ("wire_key_conflicts", "changed_duplicates", "out_of_order"):
            wire[name] = len(wire[name])
        return out | wire | {"problems": self.problems()}


@dataclass
class _Recoveries:
    """Times kills and restarts against the store's newest rowid."""

    store: Path
    #: (kill time, top rowid, what to say about it when slow)
    pending: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    start: tuple[float, int] | None = None  # (restart time, top rowid) not yet served
    recovery: list[float] = field(default_factory=list)
    first_reading: list[float] = field(default_factory=list)
    unserved: int = 0
    slow: list[dict[str, Any]] = field(default_factory=list)  # recoveries over SLOW seconds
    lag: float = 0.0  # the campaign's own worst lateness (a stalled machine shows here)

    def poll(self) -> None:
        if not self.pending and self.start is None:
            return
        top = _max_rowid(self.store)
        if top is None:
            return
        now = time.monotonic()
        still = []
        for killed, before, about in self.pending:
            if top > before:
                self.recovery.append(now - killed)
                if now - killed > SLOW:
                    self.slow.append(about | {"recovery_s": round(now - killed, 3)})
            else:
                still.append((killed, before, about))
        self.pending = still
        if self.start is not None and top > self.start[1]:
            self.first_reading.append(now - self.start[0])
            self.start = None

    def killed(self, top: int, **about: Any) -> None:
        if self.start is not None:
            self.unserved += 1
            self.start = None
        about["wall"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.pending.append((time.monotonic(), top, about))

    def restarted(self, top: int) -> None:
        self.start = (time.monotonic(), top)

    async def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.poll()
            await asyncio.sleep(min(POLL, left))
        self.poll()
        self.lag = max(self.lag, time.monotonic() - deadline)


def kill_devices(intervals: tuple[float, ...], *, seed: int) -> dict[str, str]:
    """Simulator devices in real time, with lost notifications and dropouts, short sessions."""
    return {
        f"cgm-{i}": (
            f"interval = {interval}\nhistory = 0\nseed = {seed + i}\nmissed_rate = 0.03\n"
            f"dropout_rate = 0.01\ndropout_readings = 2\nwarmup = 0\n"
            f"session_days = {SESSION_DAYS}\n"
        )
        for i, interval in enumerate(intervals)
    }


async def kill_campaign(
    folder: Path,
    *,
    kills: int = 100,
    minutes: float | None = None,
    min_gap: float = 0.1,
    max_gap: float = 0.6,
    outages: int = 0,
    outage_s: tuple[float, float] = (0.5, 3.0),
    intervals: tuple[float, ...] = (0.1, 0.15),
    seed: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> KillReport:
    """`kills` x (random wait, kill -9, restart at once); stops early after `minutes`.

    `outages` clean broker stops of `outage_s` seconds are spread over the kills.
    """
    seed = random.randrange(2**31) if seed is None else seed
    rng = random.Random(seed)
    report = KillReport(seed=seed)
    hub = f"hub-camp-{uuid.uuid4().hex[:8]}"
    broker = Mosquitto(folder / "mosquitto", persistence=True)
    broker.start()
    daemon = DaemonProcess(
        write_config(folder / "etc", broker, kill_devices(intervals, seed=seed), hub=hub),
        folder / "daemon.log",
    )
    link = _Link(broker, [f"gatewayd/{hub}/+/reading"], f"camp-kill-{hub}")
    times = _Recoveries(daemon.store_path)
    outage_at = set(rng.sample(range(1, max(kills, 2)), min(outages, max(kills - 1, 0))))
    began = time.monotonic()
    deadline = None if minutes is None else began + 60 * minutes
    down_until: float | None = None
    try:
        await link.connect()
        daemon.start()
        report.starts += 1
        times.restarted(0)
        await wait_until(lambda: bool(_max_rowid(daemon.store_path)), 30, "first reading")
        times.poll()
        for k in range(kills):
            if deadline is not None and time.monotonic() > deadline:
                break
            await times.sleep(rng.uniform(min_gap, max_gap))
            daemon.kill()
            top = _max_rowid(daemon.store_path) or 0
            times.killed(top, kill=report.kills + 1, broker_up=down_until is None)
            daemon.start()
            report.kills += 1
            report.starts += 1
            times.restarted(top)
            if down_until is not None and time.monotonic() >= down_until:
                broker.start()
                await link.connect()
                down_until = None
            elif down_until is None and k in outage_at:
                await link.disconnect()
                broker.stop()
                length = rng.uniform(*outage_s)
                report.outages += 1
                report.outage_s += length
                down_until = time.monotonic() + length
            if progress is not None and report.kills % 100 == 0:
                progress(f"{report.kills} kills, {_max_rowid(daemon.store_path)} readings stored")
        if down_until is not None:
            await times.sleep(max(0.0, down_until - time.monotonic()))
            broker.start()
            await link.connect()
        # The last restart settles: a few more readings, then everything delivered.
        settled = (_max_rowid(daemon.store_path) or 0) + 10
        await wait_until(
            lambda: (_max_rowid(daemon.store_path) or 0) >= settled, 60, "readings after kills"
        )
        times.poll()
        await wait_until(daemon.outbox_drained(), 60, "outbox drained")
        report.terminate_rc = daemon.terminate()
        report.outbox_after_stop = daemon.outbox_depth()
        stored = daemon.stored()
        await link.wait_for_ids({row[0] for row in stored}, timeout=30)
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(timeout=10)
        await link.disconnect()
        broker.stop()
    report.duration_s = round(time.monotonic() - began, 1)
    report.outage_s = round(report.outage_s, 1)
    report.killed_before_first_reading = times.unserved
    report.slow_recoveries = times.slow
    report.campaign_lag_s = round(times.lag, 3)
    report.recovery_max_s = round(max(times.recovery), 3) if times.recovery else None
    report.recovery_p50_s = _quantile(times.recovery, 0.5)
    report.recovery_p95_s = _quantile(times.recovery, 0.95)
    report.first_reading_max_s = round(max(times.first_reading), 3) if times.first_reading else None
    report.first_reading_p50_s = (
        round(statistics.median(times.first_reading), 3) if times.first_reading else None
    )
    report.wire = check_wire(stored, link.all())
    return report


# -- a simulated hour without broker ---------------------------------------------------------


@dataclass
class OutageReport:
    """Figures of one broker outage replayed at simulator speed (times in seconds)."""

    seed: int
    speed: float
    interval: float
    devices: int = 0
    before_outage: int = 0  # readings stored before the broker stopped
    outage_real_s: float = 0.0
    outage_simulated_s: float = 0.0  # sensor time covered, per device (the smallest)
    stored_during_outage: dict[str, int] = field(default_factory=dict)
    outbox_peak: int = 0
    replay_s: float = 0.0  # broker start -> outbox 0
    terminate_rc: int | None = None
    outbox_after_stop: int | None = None
    wire: WireCheck = field(default_factory=WireCheck)

    def problems(self) -> list[str]:
        found = self.wire.problems()
        if min(self.stored_during_outage.values(), default=0) < 3600 / self.interval:
            found.append(f"less than a simulated hour stored: {self.stored_during_outage}")
        if self.outbox_peak < sum(self.stored_during_outage.values()):
            found.append(f"outbox {self.outbox_peak} < readings stored during the outage")
        if self.terminate_rc != 0:
            found.append(f"clean stop exited {self.terminate_rc}")
        if self.outbox_after_stop:
            found.append(f"outbox {self.outbox_after_stop} after the clean stop")
        return found

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        wire = out.pop("wire")
        for name in (
            "missing",
            "unexpected",
            "gaps",
            "stored_key_conflicts",
            "wire_key_conflicts",
            "changed_duplicates",
            "out_of_order",
        ):
            wire[name] = len(wire[name])
        return out | wire | {"problems": self.problems()}


def _stored_times(daemon: DaemonProcess) -> dict[str, list[float]]:
    """Per device, the measured times (epoch s) of its stored readings, oldest first."""
    if not daemon.store_path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{daemon.store_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("SELECT device, time_ms FROM readings ORDER BY rowid").fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:  # the daemon has not created its tables yet
        return {}
    out: dict[str, list[float]] = defaultdict(list)
    for device, ms in rows:
        out[device].append(ms / 1000)
    return out


async def hour_outage(
    folder: Path,
    *,
    speed: float = 1800.0,
    interval: float = 300.0,
    hours: float = 1.0,
    devices: int = 2,
    seed: int | None = None,
) -> OutageReport:
    """Stop the broker until `hours` of sensor time per device wait in the outbox; replay."""
    seed = random.randrange(2**31) if seed is None else seed
    report = OutageReport(seed=seed, speed=speed, interval=interval, devices=devices)
    # Enough simulated past that the replay never reaches the wall clock during the test.
    history = 3600 * hours * 6
    options = (
        f"interval = {interval}\nspeed = {speed}\nhistory = {history}\nmissed_rate = 0.02\n"
        "dropout_rate = 0.01\ndropout_readings = 2\nwarmup = 0\n"
    )
    names = [f"cgm-{i}" for i in range(devices)]
    hub = f"hub-camp-{uuid.uuid4().hex[:8]}"
    broker = Mosquitto(folder / "mosquitto", persistence=True)
    broker.start()
    daemon = DaemonProcess(
        write_config(
            folder / "etc",
            broker,
            {n: options + f"seed = {seed + i}\n" for i, n in enumerate(names)},
            hub=hub,
        ),
        folder / "daemon.log",
    )
    link = _Link(broker, [f"gatewayd/{hub}/+/reading"], f"camp-outage-{hub}")
    try:
        await link.connect()
        daemon.start()
        await wait_until(
            lambda: (
                all(len(t) >= 3 for t in _stored_times(daemon).values())
                and len(_stored_times(daemon)) == devices
            ),
            30,
            "readings before the outage",
        )
        await wait_until(daemon.outbox_drained(), 30, "outbox drained before outage")
        # Acknowledged by the broker is not yet received by the link: let it see them first.
        await link.wait_for_ids({row[0] for row in daemon.stored()}, timeout=30)
        await link.disconnect()
        broker.stop()
        began = time.monotonic()
        before = _stored_times(daemon)
        report.before_outage = sum(len(t) for t in before.values())
        target = 3600 * hours

        def covered() -> dict[str, float]:
            now = _stored_times(daemon)
            return {d: now[d][-1] - before[d][-1] for d in before}

        await wait_until(
            lambda: min(covered().values()) >= target, 60, "a simulated hour without broker"
        )
        report.outage_simulated_s = min(covered().values())
        during = _stored_times(daemon)
        report.stored_during_outage = {d: len(during[d]) - len(before[d]) for d in before}
        report.outbox_peak = daemon.outbox_depth()
        broker.start()
        report.outage_real_s = round(time.monotonic() - began, 2)
        restarted = time.monotonic()
        await link.connect()
        await wait_until(daemon.outbox_drained(), 60, "replay after the outage")
        report.replay_s = round(time.monotonic() - restarted, 2)
        report.terminate_rc = daemon.terminate()
        report.outbox_after_stop = daemon.outbox_depth()
        stored = daemon.stored()
        await link.wait_for_ids({row[0] for row in stored}, timeout=30)
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(timeout=10)
        await link.disconnect()
        broker.stop()
    report.wire = check_wire(stored, link.all())
    return report


# -- the soak program ------------------------------------------------------------------------


def _print(title: str, summary: dict[str, Any]) -> None:
    print(f"== {title}", flush=True)
    for key, value in summary.items():
        print(f"  {key:30} {value}", flush=True)


async def _soak(args: argparse.Namespace, root: Path) -> tuple[int, dict[str, Any]]:
    failures = 0
    results: dict[str, Any] = {}
    print(f"soak folder: {root} (stores, daemon and broker logs)", flush=True)
    if args.kills:
        kills = await kill_campaign(
            root / "kills",
            kills=args.kills,
            minutes=args.minutes,
            min_gap=args.min_gap,
            max_gap=args.max_gap,
            outages=args.outages,
            seed=args.seed,
            progress=lambda line: print(f"  ... {line}", flush=True),
        )
        results["kills"] = kills.summary()
        _print("kill -9 campaign", results["kills"])
        failures += bool(kills.problems())
    for i in range(args.hour_outages):
        outage = await hour_outage(
            root / f"outage-{i}",
            speed=args.speed,
            hours=args.hours,
            seed=None if args.seed is None else args.seed + i,
        )
        results[f"outage-{i}"] = outage.summary()
        _print(f"broker down for {args.hours} simulated hour(s)", results[f"outage-{i}"])
        failures += bool(outage.problems())
    print("RESULT:", "FAIL" if failures else "PASS", flush=True)
    return failures, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=1000, help="kill -9 count (0: none)")
    parser.add_argument("--minutes", type=float, help="stop the kills after this long")
    parser.add_argument("--min-gap", type=float, default=0.1, help="s after restart, at least")
    parser.add_argument("--max-gap", type=float, default=0.6, help="s after restart, at most")
    parser.add_argument("--outages", type=int, default=20, help="broker outages among the kills")
    parser.add_argument("--hour-outages", type=int, default=3, help="simulated-hour outages")
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours per outage")
    parser.add_argument("--speed", type=float, default=1800.0, help="simulator speed")
    parser.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    parser.add_argument("--folder", help="keep the stores and logs here (default: a temp dir)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    root = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="gatewayd-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    failures, results = asyncio.run(_soak(args, root))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
