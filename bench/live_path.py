"""The live path at a steady rate: CPU per reading, disk writes per reading, delivery latency.

The daemon runs as in production (`gatewayd run --config X`, the venv's console script) with
`--devices` devices (default 10) each producing a reading every `--interval` s (default 0.1:
100 readings/s in all), against a fresh test mosquitto. Beside it, at the same time, the floor
of any hub: a bare script that does, per reading, exactly what the contract needs — one SQLite
insert committed with the same `synchronous` (WAL), then one aiomqtt QoS 1 publish awaiting its
PUBACK, over the same MQTT version (`--protocol`, the daemon's default 5) — for the same number
of devices at the same rate.

Each side runs twice per round, with the readings from two sources:
- made on the spot: the bare script builds each reading from the clock and constants, and the
  daemon gets the same from the bench's `made` driver (bench/_made_driver.py, registered
  through an entry point like any third-party driver). Both pay the same to make a reading, so
  this ratio is the live path's own cost: the one the CPU target is about;
- the simulator driver gatewayd ships (the same devices, seeds and rate; the bare script runs
  it through the plugin API): what the demo runs, with the simulated person and sensors in the
  process on both sides.

One round starts the four processes together and, once all are warm, measures the same
window of `--window` s of each from outside the process:
- CPU: utime + stime from /proc/PID/stat, per 1,000 readings delivered in the window (and the
  share of one core, beside the wall time);
- disk: `write_bytes` from /proc/PID/io (what the process made the kernel write to storage,
  WAL and checkpoints included: the figure that decides an SD card's life), per reading;
- latency: a subscriber's arrival time minus the reading's `received` time, p50 / p99.
Measured side by side, the four share whatever the machine does meanwhile (a virtual
machine's speed drifts by up to +-15 % from one window to the next): run one after the other,
the per-round ratios spread wider (docs/operations.md gives both).

The broker runs with `set_tcp_nodelay true` (mosquitto's default holds the end of a burst for
the subscriber's delayed ACK, up to 40 ms, whoever publishes: docs/operations.md). Each figure is
reported for `synchronous = "full"` and `"normal"`, and as the median of the per-round ratios
gatewayd / bare of the same source (min-max beside it). Targets (issue: Raspberry Pi hubs): CPU
per reading <= 1.2x bare; bytes written per reading <= 1.1x bare; p99 < 5 ms with "full".
The CPU figures come from /proc in clock ticks (10 ms): a window of 15 s (the default, about
1,500 readings and 80 ticks per process) keeps that rounding within about 1 %.
Run: `.venv/bin/python bench/live_path.py` (or `./scripts/bench live_path`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import _made_driver
from _common import (
    BenchSubscriber,
    cpu_seconds,
    daemon_config,
    paired,
    ratio_text,
    result_header,
    write_result,
)
from mosquitto import Mosquitto

NAME = "live_path"
MODES = ("full", "normal")
WARM_READINGS = 30  # per device, before the window opens
START_TIMEOUT_S = 30.0

#: The bare script: per reading one committed SQLite insert, then one QoS 1 publish (PUBACK).
#: Its readings are made on the spot (`made`), or come from the simulator driver gatewayd runs
#: (`simulator`: same options, same device ids, so the same seeds, through the plugin API).
BARE_CODE = r"""
import asyncio, json, os, sqlite3, sys, time, uuid
from datetime import datetime, UTC
import aiomqtt

port, db_path, sync, hub, devices, interval, source, protocol = sys.argv[1:9]
devices, interval = int(devices), float(interval)
db = sqlite3.connect(db_path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute(f"PRAGMA synchronous={sync.upper()}")
db.execute("CREATE TABLE IF NOT EXISTS readings (id TEXT PRIMARY KEY, device TEXT NOT NULL,"
           " seq INTEGER NOT NULL, time TEXT NOT NULL, record TEXT NOT NULL)")

def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

async def keep(client, record):
    text = json.dumps(record)
    db.execute("BEGIN")
    db.execute("INSERT INTO readings VALUES (?, ?, ?, ?, ?)",
               (record["id"], record["device"], record["seq"], record["time"], text))
    db.execute("COMMIT")
    await client.publish(f"bare/{hub}/{record['device']}/reading", text, qos=1)

async def made(client, n):
    seq, due = 0, time.monotonic() + n * interval / devices  # staggered, like real sensors
    while True:
        due += interval
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        seq += 1
        now = datetime.now(UTC)
        await keep(client, {
            "schema": "gatewayd/reading/1", "hub": hub, "id": uuid.uuid4().hex,
            "device": f"dev{n:02d}", "driver": "bare", "session": "s1", "seq": seq,
            "time": iso(now), "received": iso(now), "glucose_mgdl": 120, "glucose_mmoll": 6.7,
            "out_of_range": None, "trend_mgdl_min": 0.5, "direction": "Flat",
            "quality_pct": 97.0, "status": [], "backfilled": False})

async def simulated(client, n):
    import structlog
    from drivers.simulator import plugin
    from gatewayd.driver import DeviceContext
    from gatewayd.options import OptionReader
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(20))
    options = {"interval": interval, "history": 0, "warmup": 0, "dropout_rate": 0,
               "missed_rate": 0}
    ctx = DeviceContext(device_id=f"sim{n:02d}", driver="simulator",
                        options=plugin.parse_options(OptionReader(options, None, "devices")),
                        resume=None, log=structlog.get_logger())
    async with plugin.open(ctx) as session:
        async for r in session.readings():
            await keep(client, {
                "schema": "gatewayd/reading/1", "hub": hub, "id": r.id, "device": r.device,
                "driver": r.driver, "session": r.session, "seq": r.seq, "time": iso(r.time),
                "received": iso(r.received), "glucose_mgdl": r.glucose_mgdl,
                "glucose_mmoll": r.glucose_mmoll, "out_of_range": r.out_of_range,
                "trend_mgdl_min": r.trend_mgdl_min, "direction": r.direction.value,
                "quality_pct": r.quality_pct, "status": list(r.status),
                "backfilled": r.backfilled})

async def main():
    device = made if source == "made" else simulated
    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client("127.0.0.1", int(port), username=os.environ["BENCH_USER"],
                              password=os.environ["BENCH_PASSWORD"], protocol=version) as client:
        await asyncio.gather(*(device(client, n) for n in range(devices)))

asyncio.run(main())
"""
#: The processes of one round, per mode: the daemon and the bare script, each fed by readings
#: made on the spot (the daemon through the bench's `made` driver) and by the simulator driver.
KINDS = ("gatewayd", "bare", "gatewayd+sim", "bare+sim")
#: The pairs compared, per source of readings: gatewayd's kind, bare's kind, the suffix of their
#: ratios' keys in the JSON, and the heading of their block.
PAIRS = (
    ("gatewayd", "bare", "", "readings made on the spot (gatewayd: the bench's `made` driver)"),
    ("gatewayd+sim", "bare+sim", "_simulated", "readings from the simulator driver (both sides)"),
)


class Listener(BenchSubscriber):
    """Per hub, the readings' arrival minus their `received` time (wall clock)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.latencies: dict[str, list[tuple[float, float]]] = defaultdict(list)
        filters = [("gatewayd/+/+/reading", 1), ("bare/+/+/reading", 1)]
        super().__init__(broker, "bench-live", filters)

    def on_message(self, msg: Any) -> None:
        """Note one reading's latency."""
        arrived = time.time()
        received = datetime.fromisoformat(json.loads(msg.payload)["received"]).timestamp()
        with self.lock:
            self.latencies[msg.topic.split("/")[1]].append((arrived, arrived - received))

    def count(self, hub: str) -> int:
        """Readings of `hub` so far."""
        with self.lock:
            return len(self.latencies[hub])

    def window(self, hub: str, start: float, end: float) -> list[float]:
        """Latencies (s) of `hub`'s readings that arrived within [start, end) (wall clock)."""
        with self.lock:
            return [lat for at, lat in self.latencies[hub] if start <= at < end]


def write_bytes(pid: int) -> int:
    """Bytes the process made the kernel write to storage."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/PID/io")


@dataclass(slots=True)
class Run:
    """One measured window of one process."""

    kind: str
    mode: str
    readings: int
    wall_s: float
    cpu_s: float
    write_bytes: int
    p50_ms: float
    p99_ms: float
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_per_1000(self) -> float:
        """CPU seconds per 1,000 readings delivered."""
        return self.cpu_s / self.readings * 1000 if self.readings else float("nan")

    @property
    def bytes_per_reading(self) -> float:
        """Bytes written to storage per reading."""
        return self.write_bytes / self.readings if self.readings else float("nan")


class Bench:
    """The broker, the listener and a scratch folder for one bench run."""

    def __init__(self, folder: Path, args: argparse.Namespace) -> None:
        self.folder, self.args = folder, args
        self.broker = Mosquitto(folder / "broker", extra_config=("set_tcp_nodelay true",))
        self.broker.start()
        self.listener = Listener(self.broker)
        self.gatewayd = Path(sys.executable).parent / "gatewayd"
        self._serial = 0
        plugins = folder / "plugins"
        _made_driver.register(plugins)
        #: What the daemon needs to find the `made` driver (bench/ and its metadata).
        self.pythonpath = os.pathsep.join(
            [str(plugins), str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
        )

    def close(self) -> None:
        """Stop the listener and the broker."""
        self.listener.close()
        self.broker.stop()

    def _argv(self, kind: str, hub: str, mode: str, folder: Path) -> list[str]:
        args = self.args
        if kind.startswith("bare"):
            folder.mkdir(parents=True)
            db = str(folder / "b.db")
            port = str(self.broker.port)
            rate = [str(args.devices), str(args.interval)]
            source = "made" if kind == "bare" else "simulator"
            bare = [sys.executable, "-c", BARE_CODE, port, db, mode, hub]
            return [*bare, *rate, source, args.protocol]
        simulator = {
            "driver": "simulator",
            "interval": args.interval,
            "history": 0,
            "warmup": 0,
            "dropout_rate": 0,
            "missed_rate": 0,
        }
        if kind == "gatewayd+sim":
            devices = {f"sim{n:02d}": simulator for n in range(args.devices)}
        else:  # staggered like the bare script's devices
            devices = {
                f"dev{n:02d}": {
                    "driver": _made_driver.NAME,
                    "interval": args.interval,
                    "phase": n * args.interval / args.devices,
                }
                for n in range(args.devices)
            }
        config = daemon_config(
            folder,
            hub,
            self.broker,
            devices,
            store={"synchronous": mode},
            mqtt={"protocol": args.protocol},
        )
        return [str(self.gatewayd), "run", "--config", str(config)]

    def round(self, mode: str) -> list[Run]:
        """Start one process of each kind at once, measure the same window of all, stop them."""
        started: list[tuple[str, str, subprocess.Popen[bytes], Path]] = []
        env = {**os.environ, "BENCH_USER": self.broker.username}
        env["BENCH_PASSWORD"] = self.broker.password
        env["PYTHONPATH"] = self.pythonpath
        try:
            for kind in KINDS:
                self._serial += 1
                hub = f"{kind[:2]}{kind[-1]}{self._serial:03d}"
                log = self.folder / f"{hub}.log"
                with log.open("wb") as out:
                    argv = self._argv(kind, hub, mode, self.folder / hub)
                    started.append(
                        (kind, hub, subprocess.Popen(argv, stdout=out, stderr=out, env=env), log)
                    )
            for _, hub, process, log in started:
                self._wait_warm(hub, process, log)
            start = time.time()
            before = [self._sample(hub, process.pid) for _, hub, process, _ in started]
            time.sleep(self.args.window)
            after = [self._sample(hub, process.pid) for _, hub, process, _ in started]
            end = time.time()
        finally:
            for _, _, process, _ in started:
                process.send_signal(signal.SIGTERM)
            for _, _, process, _ in started:
                try:
                    process.wait(15.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        return [
            self._run(kind, mode, hub, log, b, a, start, end)
            for (kind, hub, _, log), b, a in zip(started, before, after, strict=True)
        ]

    def _sample(self, hub: str, pid: int) -> tuple[float, int, int]:
        """CPU seconds, bytes written and readings delivered of one process so far."""
        return cpu_seconds(pid), write_bytes(pid), self.listener.count(hub)

    def _run(
        self,
        kind: str,
        mode: str,
        hub: str,
        log: Path,
        before: tuple[float, int, int],
        after: tuple[float, int, int],
        start: float,
        end: float,
    ) -> Run:
        latencies = sorted(self.listener.window(hub, start, end))
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0
        run = Run(
            kind,
            mode,
            after[2] - before[2],
            round(end - start, 3),
            round(after[0] - before[0], 3),
            after[1] - before[1],
            round(statistics.median(latencies) * 1000, 2) if latencies else float("nan"),
            round(p99 * 1000, 2),
        )
        if kind.startswith("gatewayd"):
            text = log.read_text(errors="replace")
            run.notes += [
                line for line in text.splitlines() if '"level": "error"' in line or "Trace" in line
            ][:3]
        return run

    def _wait_warm(self, hub: str, process: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.listener.count(hub) < WARM_READINGS * self.args.devices:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{hub} exited with {process.returncode}\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{hub}: not warm within {START_TIMEOUT_S} s")
            time.sleep(0.05)


def summarize(runs: list[Run], args: argparse.Namespace) -> dict[str, Any]:
    """Per mode: medians of each side and the paired ratios."""
    modes: dict[str, Any] = {}
    for mode in MODES:
        side = {k: [r for r in runs if r.kind == k and r.mode == mode] for k in KINDS}

        def med(of_kind: list[Run], attr: str) -> float:
            return round(statistics.median(getattr(r, attr) for r in of_kind), 3)

        modes[mode] = {
            kind: {
                "cpu_s_per_1000": med(of, "cpu_per_1000"),
                "core_share": round(sum(r.cpu_s for r in of) / sum(r.wall_s for r in of), 3),
                "bytes_written_per_reading": med(of, "bytes_per_reading"),
                "p50_ms": med(of, "p50_ms"),
                "p99_ms": med(of, "p99_ms"),
            }
            for kind, of in side.items()
        }
        for gatewayd, bare, suffix, _ in PAIRS:
            pairs = list(zip(side[gatewayd], side[bare], strict=True))
            modes[mode] |= {
                f"ratio_cpu{suffix}": paired([(g.cpu_per_1000, b.cpu_per_1000) for g, b in pairs]),
                f"ratio_bytes_written{suffix}": paired(
                    [(g.bytes_per_reading, b.bytes_per_reading) for g, b in pairs]
                ),
            }
            if not suffix:  # the targets' pair
                modes[mode]["ratio_p99"] = paired([(g.p99_ms, b.p99_ms) for g, b in pairs])
    return {
        **result_header(NAME, "aiomqtt", "gatewayd"),
        "setup": {
            "devices": args.devices,
            "interval_s": args.interval,
            "rate_per_s": round(args.devices / args.interval, 1),
            "window_s": args.window,
            "rounds": args.rounds,
            "mqtt_protocol": args.protocol,
        },
        "modes": modes,
        "runs": [asdict(r) for r in runs],
        "problems": [n for r in runs for n in r.notes],
    }


def print_block(result: dict[str, Any], path: Path) -> None:
    """The human-readable result block."""
    setup = result["setup"]
    lines = [
        f"== {NAME}: {setup['devices']} devices x {1 / setup['interval_s']:g}/s "
        f"({setup['rate_per_s']:g} readings/s), gatewayd vs bare insert+publish, "
        f"{setup['rounds']} paired rounds of {setup['window_s']:g} s ==",
    ]
    for mode, m in result["modes"].items():
        lines.append(f"  synchronous = {mode}")
        for gatewayd, bare, suffix, heading in PAIRS:
            lines += [f"    {heading}", *_pair_lines(m, gatewayd, bare, suffix, mode)]
    lines += [f"  PROBLEM: {p}" for p in result["problems"]]
    lines.append(f"  json: {path}")
    print("\n".join(lines), flush=True)


def _pair_lines(m: dict[str, Any], gatewayd: str, bare: str, suffix: str, mode: str) -> list[str]:
    """CPU, bytes written and latency of one pair (with the targets for the made pair)."""
    g, b = m[gatewayd], m[bare]

    def cpu(side: dict[str, Any]) -> str:
        return f"{side['cpu_s_per_1000']:.3f} ({side['core_share'] * 100:.1f} % of a core)"

    def target(text: str) -> str:
        return "" if suffix else f"   target {text}"

    return [
        f"      CPU s / 1,000 readings  gatewayd {cpu(g)}   bare {cpu(b)}"
        f"   ratio {ratio_text(m[f'ratio_cpu{suffix}'])}{target('<= 1.2')}",
        f"      bytes written / reading gatewayd {g['bytes_written_per_reading']:,.0f}"
        f"   bare {b['bytes_written_per_reading']:,.0f}"
        f"   ratio {ratio_text(m[f'ratio_bytes_written{suffix}'])}{target('<= 1.1')}",
        f"      latency p50 / p99 (ms)  gatewayd {g['p50_ms']:.2f} / {g['p99_ms']:.2f}"
        f"   bare {b['p50_ms']:.2f} / {b['p99_ms']:.2f}"
        + (target("p99 < 5 ms") if mode == "full" else ""),
    ]


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between readings")
    parser.add_argument("--window", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds per mode")
    parser.add_argument(
        "--protocol",
        choices=("5", "3.1.1"),
        default="5",
        help="MQTT version of both sides (the daemon's default: 5)",
    )
    args = parser.parse_args()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        bench = Bench(Path(tmp), args)
        try:
            for _ in range(args.rounds):
                for mode in MODES:
                    for run in bench.round(mode):
                        runs.append(run)
                        print(
                            f"[{NAME}] {run.kind} {mode}: {run.readings} readings, "
                            f"{run.cpu_per_1000:.3f} CPU s/1000, "
                            f"{run.bytes_per_reading:,.0f} B/reading, p99 {run.p99_ms} ms",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            bench.close()
    result = summarize(runs, args)
    path = write_result(NAME, result)
    print_block(result, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
