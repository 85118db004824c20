"""Footprint: the real daemon's start-up time to its first publish, and its resident memory.

The daemon runs as it does in production: `gatewayd run --config X` as a subprocess (the venv's
console script), with simulated CGMs (the `simulator` driver) against a fresh test mosquitto.

- Start-up: from spawning the process to the first `reading` message received by a subscriber
  that was connected before the spawn (median of `--runs`, default 5, with 10 devices; 1 device
  as information). The simulator replays one hour of history at 36000x (`history = 3600`,
  `speed = 36000`), so its first reading is due within ~8 ms of the session opening; warm-up,
  dropouts and lost notifications are off so that nothing random delays it.
- Memory: VmRSS and VmHWM (peak) from /proc/PID/status after `--hold` (default 10) seconds of
  running, with 10 devices and with 1 device.

Baseline, in the same run and to the same broker: a minimal Python process (`python -c` with
only asyncio and aiomqtt imported) that connects, publishes one message of a reading's size
(QoS 1) and then holds its connection: the floor of any Python MQTT publisher. Its start-up is
measured the same way (alternating with the daemon's runs) and its memory at the same moment.

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

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from _common import result_header, write_result
from gatewayd.testing.mosquitto import Mosquitto

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

SIMULATOR_OPTIONS = {
    "interval": 300,
    "history": 3600,
    "speed": 36000,
    "warmup": 0,
    "dropout_rate": 0,
    "missed_rate": 0,
}


# -- the subscriber (a paho thread in this process, connected before any spawn) ----------------


class Watcher:
    """Counts `<root>/<hub>/+/reading` messages per hub and notes when each hub's first came."""

    def __init__(self, broker: Mosquitto) -> None:
        self.first: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._ready = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-watcher", protocol=paho.MQTTv311
        )
        self._client.username_pw_set(broker.username, broker.password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()
        if not self._ready.wait(10.0):
            raise RuntimeError("the watcher did not subscribe")

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: Any,
        _flags: paho.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if not reason.is_failure:
            client.subscribe(f"{ROOT}/+/+/reading", qos=1)

    def _on_subscribe(
        self,
        _client: paho.Client,
        _userdata: Any,
        _mid: int,
        _reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        self._ready.set()

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        hub = msg.topic.split("/")[1]
        with self._lock:
            self.counts[hub] += 1
            if hub not in self.first:
                self.first[hub] = now
                self._arrived.notify_all()

    def wait_first(self, hub: str, process: subprocess.Popen[bytes], log: Path) -> float:
        """Monotonic time of `hub`'s first reading; fails if the process exits or it times out."""
        deadline = time.monotonic() + FIRST_PUBLISH_TIMEOUT_S
        with self._lock:
            while hub not in self.first:
                if process.poll() is not None:
                    raise RuntimeError(f"{hub}: exited with {process.returncode}\n{_tail(log)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{hub}: no reading in {FIRST_PUBLISH_TIMEOUT_S} s")
                self._arrived.wait(0.05)
            return self.first[hub]

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


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


@dataclass(slots=True)
class Run:
    """One spawned process."""

    kind: str
    devices: int
    startup_s: float
    hold_s: float = 0.0
    memory: Memory | None = None
    readings_received: int = 0
    exit_code: int | None = None
    notes: list[str] = field(default_factory=list)


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
        folder = self.folder / hub
        folder.mkdir()
        password_file = folder / "mqtt.password"
        password_file.write_text(self.broker.password + "\n")
        password_file.chmod(0o600)  # the daemon refuses a secret every user can read
        lines = [
            "[hub]",
            f'id = "{hub}"',
            "[store]",
            f'path = "{folder / "gatewayd.db"}"',
            "[mqtt]",
            f'url = "mqtt://127.0.0.1:{self.broker.port}"',
            f'username = "{self.broker.username}"',
            f'password_file = "{password_file}"',
            "[log]",
            'level = "info"',
            'format = "json"',
        ]
        for n in range(1, devices + 1):
            lines += ["[[devices]]", f'id = "sim{n:02d}"', 'driver = "simulator"']
            lines += [f"{key} = {value}" for key, value in SIMULATOR_OPTIONS.items()]
        config = folder / "gatewayd.toml"
        config.write_text("\n".join(lines) + "\n")
        return config

    def run(self, kind: str, devices: int, hold: float) -> Run:
        """Spawn one process, time its first reading, optionally hold and read its memory."""
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
            result = Run(kind, devices, first - spawned)
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


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[Run], args: argparse.Namespace) -> dict[str, Any]:
    """Medians, ratios and verdicts."""

    def startups(kind: str, devices: int) -> list[float]:
        return [
            r.startup_s for r in runs if r.kind == kind and r.devices == devices and not r.hold_s
        ]

    def mems(kind: str, devices: int) -> list[Memory]:
        return [r.memory for r in runs if r.kind == kind and r.devices == devices and r.memory]

    def mem_median(kind: str, devices: int) -> dict[str, float]:
        found = mems(kind, devices)
        return {
            key: round(_median([getattr(m, key) for m in found]), 1)
            for key in ("vm_rss", "vm_hwm", "rss_anon", "rss_file")
        }

    gw10, gw1, base = startups("gatewayd", 10), startups("gatewayd", 1), startups("baseline", 1)
    startup = {
        "gatewayd_10_devices_s": round(_median(gw10), 3),
        "gatewayd_1_device_s": round(_median(gw1), 3),
        "baseline_s": round(_median(base), 3),
    }
    memory = {
        "gatewayd_10_devices_mib": mem_median("gatewayd", 10),
        "gatewayd_1_device_mib": mem_median("gatewayd", 1),
        "baseline_mib": mem_median("baseline", 1),
    }
    rss10 = memory["gatewayd_10_devices_mib"]["vm_rss"]
    rss_base = memory["baseline_mib"]["vm_rss"]
    return {
        **result_header(NAME, "aiomqtt", "gatewayd"),
        "setup": {
            "startup_runs": args.runs,
            "memory_runs": args.memory_runs,
            "hold_s": args.hold,
            "simulator_options": SIMULATOR_OPTIONS,
            "baseline_payload_bytes": PAYLOAD_BYTES,
        },
        "runs": [asdict(r) for r in runs],
        "startup_median": startup,
        "memory_median": memory,
        "ratios": {
            "startup_gatewayd10_over_baseline": round(
                startup["gatewayd_10_devices_s"] / startup["baseline_s"], 2
            ),
            "rss_gatewayd10_over_baseline": round(rss10 / rss_base, 2),
            "rss_gatewayd1_over_baseline": round(
                memory["gatewayd_1_device_mib"]["vm_rss"] / rss_base, 2
            ),
        },
        "targets": {"startup_s": TARGET_STARTUP_S, "rss_mib_10_devices": TARGET_RSS_MB},
        "meets_startup_target": startup["gatewayd_10_devices_s"] < TARGET_STARTUP_S,
        "meets_rss_target": rss10 <= TARGET_RSS_MB,
        "problems": [n for r in runs for n in r.notes],
    }


def print_block(result: dict[str, Any], path: Path) -> None:
    """The human-readable result block."""
    s, m, ratio = result["startup_median"], result["memory_median"], result["ratios"]
    setup = result["setup"]

    def fmt_startups(kind: str, devices: int) -> str:
        values = [
            r["startup_s"]
            for r in result["runs"]
            if r["kind"] == kind and r["devices"] == devices and not r["hold_s"]
        ]
        return ", ".join(f"{v:.3f}" for v in values)

    def mem(key: str) -> str:
        x = m[key]
        return (
            f"VmRSS {x['vm_rss']:5.1f} MiB  VmHWM {x['vm_hwm']:5.1f} MiB"
            f"  (anon {x['rss_anon']:.1f}, file {x['rss_file']:.1f})"
        )

    ok = {True: "OK", False: "MISSED"}
    lines = [
        f"== {NAME}: gatewayd start-up and footprint vs a bare aiomqtt process ==",
        f"  start-up = spawn -> first reading at a subscriber; median of {setup['startup_runs']}",
        f"  gatewayd, 10 devices   {s['gatewayd_10_devices_s']:.3f} s   "
        f"[{fmt_startups('gatewayd', 10)}]",
        f"  gatewayd, 1 device     {s['gatewayd_1_device_s']:.3f} s   "
        f"[{fmt_startups('gatewayd', 1)}]",
        f"  baseline (aiomqtt)     {s['baseline_s']:.3f} s   [{fmt_startups('baseline', 1)}]",
        f"  ratio gatewayd(10)/baseline = {ratio['startup_gatewayd10_over_baseline']:.2f}"
        f"   target < {TARGET_STARTUP_S} s: {ok[result['meets_startup_target']]}",
        f"  memory after {setup['hold_s']:g} s (median of {setup['memory_runs']}):",
        f"  gatewayd, 10 devices   {mem('gatewayd_10_devices_mib')}",
        f"  gatewayd, 1 device     {mem('gatewayd_1_device_mib')}",
        f"  baseline (aiomqtt)     {mem('baseline_mib')}",
        f"  ratio RSS gatewayd(10)/baseline = {ratio['rss_gatewayd10_over_baseline']:.2f}, "
        f"gatewayd(1)/baseline = {ratio['rss_gatewayd1_over_baseline']:.2f}"
        f"   target <= {TARGET_RSS_MB:g} MiB with 10 devices: {ok[result['meets_rss_target']]}",
    ]
    lines += [f"  PROBLEM: {p}" for p in result["problems"]]
    lines.append(f"  json: {path}")
    print("\n".join(lines), flush=True)


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="start-up runs per kind")
    parser.add_argument("--memory-runs", type=int, default=2, help="memory runs per kind")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds before reading RSS")
    args = parser.parse_args()
    runs: list[Run] = []

    def note(run: Run) -> None:
        runs.append(run)
        extra = f", VmRSS {run.memory.vm_rss:.1f} MiB" if run.memory else ""
        print(
            f"[{NAME}] {run.kind} ({run.devices}): first reading after {run.startup_s:.3f} s"
            f"{extra}",
            file=sys.stderr,
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        bench = Bench(Path(tmp))
        try:
            note(bench.run("baseline", 1, 0))  # warm the page cache; not counted
            note(bench.run("gatewayd", 10, 0))
            runs.clear()
            for n in range(args.runs):
                pair = [("baseline", 1), ("gatewayd", 10)]
                for kind, devices in pair if n % 2 == 0 else pair[::-1]:
                    note(bench.run(kind, devices, 0))
                note(bench.run("gatewayd", 1, 0))
            for _ in range(args.memory_runs):
                for kind, devices in (("gatewayd", 10), ("gatewayd", 1), ("baseline", 1)):
                    note(bench.run(kind, devices, args.hold))
        finally:
            bench.close()
    result = summarize(runs, args)
    path = write_result(NAME, result)
    print_block(result, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
