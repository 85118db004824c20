"""Footprint: the real daemon's start-up time to its first publish, and its resident memory.

The daemon runs as it does in production: `gatewayd run --config X` as a subprocess (the venv's
console script), with simulated CGMs (the `simulator` driver) against a fresh test mosquitto.

- Start-up: from spawning the process to the first `reading` message received by a subscriber
  that was connected before the spawn (wall time), and the CPU time (utime + stime from
  /proc/PID/stat, in clock ticks of 10 ms) the process had used when that message arrived;
  `--runs` rounds (default 5) with 10 devices and with 1 device. The simulator replays one hour
  of history at 36000x (`history = 3600`, `speed = 36000`), so its first reading is due within
  ~8 ms of the session opening; warm-up, dropouts and lost notifications are off so that
  nothing random delays it.
- Memory: VmRSS and VmHWM (peak) from /proc/PID/status after `--hold` (default 10) seconds of
  running, with 10 devices and with 1 device; `--memory-runs` rounds (default 2).

Baseline, in the same run and to the same broker: a minimal Python process (`python -c` with
only asyncio and aiomqtt imported) that connects, publishes one message of a reading's size
(QoS 1) and then holds its connection: the floor of any Python MQTT publisher.

How the figures are computed: every round runs gatewayd with 10 devices, the baseline, then
gatewayd with 1 device, back to back (the next round in the reverse order), so the baseline runs
next to each daemon start-up it is compared with. A ratio gatewayd / baseline is taken per round,
and the one quoted is the median of those per-round ratios with their min-max: start-up wall
time with start-up CPU time beside it, and RSS in the memory rounds (ordered the same way).
The absolute figures are the medians of the runs. A first baseline and daemon start-up warm
the page cache and are not counted.

Targets: start-up to first publish < 1.5 s; RSS <= 50 MB with 10 devices.
Run: `.venv/bin/python bench/startup_memory.py` (or `scripts/bench`).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    BenchSubscriber,
    cpu_seconds,
    daemon_config,
    paired,
    ratio_text,
    result_header,
    round_pairs,
    wall_cpu_text,
    write_result,
)
from mosquitto import Mosquitto

NAME = "startup_memory"
TARGET_STARTUP_S = 1.5
TARGET_RSS_MB = 50.0
ROOT = "gatewayd"
#: A published reading is ~380-420 bytes; the baseline publishes as much.
PAYLOAD_BYTES = 400
FIRST_PUBLISH_TIMEOUT_S = 30.0
_USER_ENV = "BENCH_MQTT_USERNAME"
_PASS_ENV = "BENCH_MQTT_PASSWORD"

#: The baseline process: nothing but asyncio and aiomqtt; publish once, then hold the link.
BASELINE_CODE = f"""
import asyncio, os, sys
import aiomqtt

async def main():
    async with aiomqtt.Client(
        "127.0.0.1",
        int(sys.argv[1]),
        username=os.environ["{_USER_ENV}"],
        password=os.environ["{_PASS_ENV}"],
    ) as client:
        await client.publish(sys.argv[2], b"x" * int(sys.argv[3]), qos=1)
        await asyncio.Event().wait()

asyncio.run(main())
"""

SIMULATOR_OPTIONS: dict[str, Any] = {
    "interval": 300,
    "history": 3600,
    "speed": 36000,
    "warmup": 0,
    "dropout_rate": 0,
    "missed_rate": 0,
}


# -- the subscriber (a paho thread in this process, connected before any spawn) ----------------


class Watcher(BenchSubscriber):
    """Counts `<root>/<hub>/+/reading` messages per hub and notes when each hub's first came."""

    def __init__(self, broker: Mosquitto) -> None:
        self.first: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        #: Guards the counts; notified on each hub's first reading.
        self.arrived = threading.Condition()
        super().__init__(broker, "bench-watcher", [(f"{ROOT}/+/+/reading", 1)])

    def on_message(self, msg: Any) -> None:
        """Count one reading."""
        now = time.monotonic()
        hub = msg.topic.split("/")[1]
        with self.arrived:
            self.counts[hub] += 1
            if hub not in self.first:
                self.first[hub] = now
                self.arrived.notify_all()

    def wait_first(self, hub: str, process: subprocess.Popen[bytes], log: Path) -> float:
        """Monotonic time of `hub`'s first reading; fails if the process exits or it times out."""
        deadline = time.monotonic() + FIRST_PUBLISH_TIMEOUT_S
        with self.arrived:
            while hub not in self.first:
                if process.poll() is not None:
                    raise RuntimeError(f"{hub}: exited with {process.returncode}\n{_tail(log)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{hub}: no reading in {FIRST_PUBLISH_TIMEOUT_S} s")
                self.arrived.wait(0.05)
            return self.first[hub]


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- the processes under test -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Memory:
    """Resident memory of a process, MiB."""

    vm_rss: float
    vm_hwm: float
    rss_anon: float
    rss_file: float


def memory_of(pid: int) -> Memory:
    """From /proc/PID/status (kB there)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM", "RssAnon", "RssFile"}:
            fields[key] = int(value.split()[0]) / 1024
    return Memory(fields["VmRSS"], fields["VmHWM"], fields["RssAnon"], fields["RssFile"])


#: The sides of a round, in the first round's order (the next reverses it, and so on).
SIDES = (("gatewayd", 10), ("baseline", 1), ("gatewayd", 1))


@dataclass(slots=True)
class Run:
    """One spawned process."""

    kind: str
    devices: int
    startup_s: float
    #: CPU time the process had used when its first reading arrived.
    startup_cpu_s: float = 0.0
    round: int = 0
    hold_s: float = 0.0
    memory: Memory | None = None
    readings_received: int = 0
    exit_code: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def variant(self) -> str:
        """`gatewayd10`, `gatewayd1` or `baseline`: its side of a round."""
        return "baseline" if self.kind == "baseline" else f"{self.kind}{self.devices}"


class Bench:
    """The broker, the watcher and a scratch folder for one bench run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.broker = Mosquitto(folder / "broker")
        self.broker.start()
        self.watcher = Watcher(self.broker)
        self.gatewayd = Path(sys.executable).parent / "gatewayd"
        if not self.gatewayd.exists():
            raise RuntimeError(f"{self.gatewayd} is missing: is the package installed?")
        self._serial = 0

    def close(self) -> None:
        """Stop the watcher and the broker."""
        self.watcher.close()
        self.broker.stop()

    def _hub(self, kind: str) -> str:
        self._serial += 1
        return f"{kind}{self._serial:03d}"

    def _env(self) -> dict[str, str]:
        return {**os.environ, _USER_ENV: self.broker.username, _PASS_ENV: self.broker.password}

    def _config(self, hub: str, devices: int) -> Path:
        simulator = {"driver": "simulator", **SIMULATOR_OPTIONS}
        sims = {f"sim{n:02d}": simulator for n in range(1, devices + 1)}
        return daemon_config(self.folder / hub, hub, self.broker, sims)

    def run(self, kind: str, devices: int, hold: float, round_no: int = 0) -> Run:
        """Spawn one process, time its first reading (wall and CPU), optionally hold and read
        its memory."""
        hub = self._hub("gw" if kind == "gatewayd" else "bl")
        log = self.folder / f"{hub}.log"
        if kind == "gatewayd":
            argv = [str(self.gatewayd), "run", "--config", str(self._config(hub, devices))]
        else:
            topic = f"{ROOT}/{hub}/baseline/reading"
            argv = [sys.executable, "-c", BASELINE_CODE, str(self.broker.port), topic]
            argv.append(str(PAYLOAD_BYTES))
        with log.open("wb") as out:
            spawned = time.monotonic()
            process = subprocess.Popen(argv, stdout=out, stderr=out, env=self._env())
        try:
            first = self.watcher.wait_first(hub, process, log)
            cpu = cpu_seconds(process.pid)
            result = Run(kind, devices, first - spawned, cpu, round_no)
            if hold > 0:
                time.sleep(max(0.0, spawned + hold - time.monotonic()))
                if process.poll() is not None:
                    raise RuntimeError(f"{hub} exited early\n{_tail(log)}")
                result.hold_s = round(time.monotonic() - spawned, 2)
                result.memory = memory_of(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        result.exit_code = process.returncode
        result.readings_received = self.watcher.counts[hub]
        if kind == "gatewayd":
            if process.returncode != 0:
                result.notes.append(f"exit {process.returncode}: {_tail(log, 5)}")
            problems = [
                line
                for line in log.read_text(errors="replace").splitlines()
                if '"level": "error"' in line or "Traceback" in line
            ]
            result.notes += problems[:5]
        return result


# -- the report ---------------------------------------------------------------------------------

MEMORY_KEYS = ("vm_rss", "vm_hwm", "rss_anon", "rss_file")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _rss(run: Run) -> float:
    return run.memory.vm_rss if run.memory else float("nan")


def summarize(runs: list[Run], args: argparse.Namespace) -> dict[str, Any]:
    """Medians of each side, the paired per-round ratios and the verdicts."""
    startup_runs = [r for r in runs if not r.hold_s]
    memory_runs = [r for r in runs if r.memory]

    def of(variant: str, chosen: list[Run]) -> list[Run]:
        return [r for r in chosen if r.variant == variant]

    def mem_median(variant: str) -> dict[str, float]:
        found = [r.memory for r in of(variant, memory_runs) if r.memory]
        return {key: round(_median([getattr(m, key) for m in found]), 1) for key in MEMORY_KEYS}

    def median_of(variant: str, attr: str) -> float:
        return round(_median([getattr(r, attr) for r in of(variant, startup_runs)]), 3)

    startup = {
        "gatewayd_10_devices_s": median_of("gatewayd10", "startup_s"),
        "gatewayd_1_device_s": median_of("gatewayd1", "startup_s"),
        "baseline_s": median_of("baseline", "startup_s"),
    }
    startup_cpu = {
        "gatewayd_10_devices_s": median_of("gatewayd10", "startup_cpu_s"),
        "gatewayd_1_device_s": median_of("gatewayd1", "startup_cpu_s"),
        "baseline_s": median_of("baseline", "startup_cpu_s"),
    }
    memory = {
        "gatewayd_10_devices_mib": mem_median("gatewayd10"),
        "gatewayd_1_device_mib": mem_median("gatewayd1"),
        "baseline_mib": mem_median("baseline"),
    }
    figures = {
        f"{what}_gatewayd{n}_over_baseline": paired(
            round_pairs(chosen, f"gatewayd{n}", "baseline", value)
        )
        for n in (10, 1)
        for what, chosen, value in (
            ("startup", startup_runs, lambda r: r.startup_s),
            ("startup_cpu", startup_runs, lambda r: r.startup_cpu_s),
            ("rss", memory_runs, _rss),
        )
    }
    rss10 = memory["gatewayd_10_devices_mib"]["vm_rss"]
    return {
        **result_header(NAME, "aiomqtt", "gatewayd"),
        "setup": {
            "startup_runs": args.runs,
            "memory_runs": args.memory_runs,
            "hold_s": args.hold,
            "simulator_options": SIMULATOR_OPTIONS,
            "baseline_payload_bytes": PAYLOAD_BYTES,
        },
        "runs": [{**asdict(r), "variant": r.variant} for r in runs],
        "startup_median": startup,
        "startup_cpu_median": startup_cpu,
        "memory_median": memory,
        # Each: the median of the per-round ratios (the full figure, min-max, is in `paired`).
        "ratios": {key: figure["median"] for key, figure in figures.items()},
        "paired": figures,
        "targets": {"startup_s": TARGET_STARTUP_S, "rss_mib_10_devices": TARGET_RSS_MB},
        "meets_startup_target": startup["gatewayd_10_devices_s"] < TARGET_STARTUP_S,
        "meets_rss_target": rss10 <= TARGET_RSS_MB,
        "problems": [n for r in runs for n in r.notes],
    }


def print_block(result: dict[str, Any], path: Path) -> None:
    """The human-readable result block."""
    s, c, m = result["startup_median"], result["startup_cpu_median"], result["memory_median"]
    figure = result["paired"]
    setup = result["setup"]

    def fmt_startups(variant: str) -> str:
        values = [
            r["startup_s"] for r in result["runs"] if r["variant"] == variant and not r["hold_s"]
        ]
        return ", ".join(f"{v:.3f}" for v in values)

    def mem(key: str) -> str:
        x = m[key]
        return (
            f"VmRSS {x['vm_rss']:5.1f} MiB  VmHWM {x['vm_hwm']:5.1f} MiB"
            f"  (anon {x['rss_anon']:.1f}, file {x['rss_file']:.1f})"
        )

    def startup_row(label: str, key: str, variant: str) -> str:
        return f"  {label:<22} {s[key]:.3f} s  CPU {c[key]:.3f} s   [{fmt_startups(variant)}]"

    ok = {True: "OK", False: "MISSED"}
    lines = [
        f"== {NAME}: gatewayd start-up and footprint vs a bare aiomqtt process ==",
        "  start-up = spawn -> first reading at a subscriber (CPU: what the process used by "
        f"then); medians; rounds: {setup['startup_runs']}",
        startup_row("gatewayd, 10 devices", "gatewayd_10_devices_s", "gatewayd10"),
        startup_row("gatewayd, 1 device", "gatewayd_1_device_s", "gatewayd1"),
        startup_row("baseline (aiomqtt)", "baseline_s", "baseline"),
        "  ratio gatewayd(10)/baseline, median of per-round ratios: start-up "
        + wall_cpu_text(
            figure["startup_gatewayd10_over_baseline"],
            figure["startup_cpu_gatewayd10_over_baseline"],
        ),
        "  ratio gatewayd(1)/baseline: start-up "
        + wall_cpu_text(
            figure["startup_gatewayd1_over_baseline"],
            figure["startup_cpu_gatewayd1_over_baseline"],
        ),
        f"  target gatewayd(10) start-up < {TARGET_STARTUP_S} s: "
        f"{ok[result['meets_startup_target']]}",
        f"  memory after {setup['hold_s']:g} s (medians; rounds: {setup['memory_runs']}):",
        f"  gatewayd, 10 devices   {mem('gatewayd_10_devices_mib')}",
        f"  gatewayd, 1 device     {mem('gatewayd_1_device_mib')}",
        f"  baseline (aiomqtt)     {mem('baseline_mib')}",
        "  ratio RSS gatewayd(10)/baseline "
        f"{ratio_text(figure['rss_gatewayd10_over_baseline'])}, gatewayd(1)/baseline "
        f"{ratio_text(figure['rss_gatewayd1_over_baseline'])}",
        f"  target <= {TARGET_RSS_MB:g} MiB with 10 devices: {ok[result['meets_rss_target']]}",
    ]
    lines += [f"  PROBLEM: {p}" for p in result["problems"]]
    lines.append(f"  json: {path}")
    print("\n".join(lines), flush=True)


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="start-up rounds (each side once)")
    parser.add_argument("--memory-runs", type=int, default=2, help="memory rounds")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds before reading RSS")
    args = parser.parse_args()
    runs: list[Run] = []

    def note(run: Run) -> None:
        runs.append(run)
        extra = f", VmRSS {run.memory.vm_rss:.1f} MiB" if run.memory else ""
        print(
            f"[{NAME}] {run.kind} ({run.devices}): first reading after {run.startup_s:.3f} s"
            f" (CPU {run.startup_cpu_s:.3f} s){extra}",
            file=sys.stderr,
            flush=True,
        )

    def rounds(count: int, hold: float) -> None:
        for n in range(1, count + 1):
            for kind, devices in SIDES if n % 2 else SIDES[::-1]:
                note(bench.run(kind, devices, hold, n))

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        bench = Bench(Path(tmp))
        try:
            note(bench.run("baseline", 1, 0))  # warm the page cache; not counted
            note(bench.run("gatewayd", 10, 0))
            runs.clear()
            rounds(args.runs, 0)
            rounds(args.memory_runs, args.hold)
        finally:
            bench.close()
    result = summarize(runs, args)
    path = write_result(NAME, result)
    print_block(result, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
