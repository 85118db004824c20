"""What the processes of `bench/fleet.py` share: the readings, the line protocol, /proc figures.

The bench is several processes (the orchestrator, hub workers, consumer group members) talking
JSON lines over stdin/stdout; progress and errors go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gatewayd.models import Direction, Reading

ROOT = "gatewayd"
#: Every reading of every hub: the filter the backend consumes (behind `$share/<group>/`).
READINGS_FILTER = f"{ROOT}/+/+/reading"
DEVICE = "cgm-1"  # one CGM per hub, as in a home
USER_ENV = "BENCH_MQTT_USERNAME"
PASS_ENV = "BENCH_MQTT_PASSWORD"
#: Broker options of the test mosquitto for a fleet: never drop QoS 1 messages queued for a
#: subscriber (mosquitto's default of 1000 drops silently), no 40 ms delayed-ACK stalls.
BROKER_CONFIG = ("max_queued_messages 0", "set_tcp_nodelay true")


def hub_id(index: int) -> str:
    """The hub id of fleet member `index`: topic-safe and unique."""
    return f"hub-{index:05d}"


def make_reading(hub: str, seq: int, phase: str, now: datetime) -> Reading:
    """A live reading of `hub`'s CGM, received `now`; `phase` is its sensor session.

    Putting the phase into `session` makes each message say which phase it belongs to (the
    consumers bucket by it) and keeps ids unique across phases (the id hashes the session).
    """
    glucose = 110.0 + 40.0 * math.sin(seq / 7.0) + (seq * 7919 % 11 - 5)
    trend = round(40.0 / 7.0 * math.cos(seq / 7.0) / 5.0, 2)
    return Reading(
        device=DEVICE,
        driver="simulator",
        serial=f"SIM{hub}",
        session=phase,
        seq=seq,
        time=now - timedelta(milliseconds=300),
        received=now,
        glucose_mgdl=float(round(glucose)),
        trend_mgdl_min=trend,
        direction=Direction.from_rate(trend),
        quality_pct=97.0,
    )


def payload_field(payload: bytes | bytearray, name: bytes) -> str:
    """A string field of a reading payload, without parsing the JSON (consumers are hot)."""
    key = b'"' + name + b'":"'
    start = payload.index(key) + len(key)
    return payload[start : payload.index(b'"', start)].decode()


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max (and mean) of latencies in ms, rounded for the report."""
    ordered = sorted(values)
    out = {f"p{p}": percentile(ordered, p) for p in (50, 95, 99)}
    out["max"] = ordered[-1] if ordered else math.nan
    out["mean"] = sum(ordered) / len(ordered) if ordered else math.nan
    return {k: round(v, 2) for k, v in out.items()}


# -- /proc ----------------------------------------------------------------------------------------


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of process `pid`, MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            out[key.lower()] = round(int(value.split()[0]) / 1024, 1)
    return out


def established_on(port: int) -> int:
    """TCP connections ESTABLISHED to 127.0.0.1:`port` (the broker's side of each client)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, state = parts[1], parts[3]
        if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


# -- the line protocol ----------------------------------------------------------------------------


def reply(message: dict[str, Any]) -> None:
    """One JSON line to the orchestrator."""
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


_T0 = time.monotonic()


def note(text: str) -> None:
    """Progress for a person (stderr), with the seconds since this process started."""
    print(f"{time.monotonic() - _T0:6.1f}s {text}", file=sys.stderr, flush=True)


async def stdin_reader() -> asyncio.StreamReader:
    """This process's stdin as an asyncio stream (commands from the orchestrator)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


@dataclass
class Child:
    """The orchestrator's handle on one child process speaking the line protocol."""

    name: str
    process: asyncio.subprocess.Process

    async def request(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        """Send one command, return its one-line answer (an `error` answer raises)."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()
        async with asyncio.timeout(timeout):
            line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}) on {command}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        return answer

    async def close(self, command: dict[str, Any] | None = None, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Ask it to quit (when `command`), then make sure it is gone."""
        try:
            if command is not None and self.process.returncode is None:
                await self.request(command, timeout)
                async with asyncio.timeout(timeout):
                    await self.process.wait()
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()


async def spawn(name: str, script: Path, args: list[str], env: dict[str, str]) -> Child:
    """Start `python script args...` with piped stdin/stdout (stderr passes through)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
        limit=2**26,
    )
    return Child(name, process)
