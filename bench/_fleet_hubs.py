"""A hub worker of `bench/fleet.py`: many simulated hubs on one asyncio loop in one process.

`--mode gatewayd`: each hub is a real gatewayd `Publisher` with its own `Store` (an SQLite file
in the shared folder, `--synchronous` as given), its own MQTT connection, client id
(`gatewayd-<hub>`) and LWT, the production backoff and in-flight window. A reading is what a
driver hands the daemon: `store.add()` then `publisher.notify()`.

`--mode bare` (the baseline): each hub is one bare aiomqtt client with the same client options
(MQTT 5, LWT, keepalive, window), that publishes the very same payload bytes (QoS 1) directly:
no store, no outbox, no retained `state`.

Commands arrive as JSON lines on stdin (see `Worker.handle`); answers go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import json
import logging
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import structlog

from _fleet_common import (
    PASS_ENV,
    ROOT,
    USER_ENV,
    hub_id,
    latency_summary,
    make_reading,
    memory_mib,
    note,
    reply,
    stdin_reader,
)
from gatewayd.models import Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.mqtt.topics import Topics
from gatewayd.ops.config import MqttConfig
from gatewayd.store import Store
from gatewayd.store.codec import encode_record, reading_payload_json

#: Yield to the connections after this many readings emitted back to back (a late scheduler).
_YIELD_EVERY = 32


class Hub(Protocol):
    """What the worker needs of a simulated hub, whichever the mode."""

    id: str
    emitted: int

    def start(self) -> None: ...
    def is_connected(self) -> bool: ...
    def emit(self, reading: Reading) -> None: ...
    def backlog(self) -> int: ...
    def faults(self) -> int: ...
    async def close(self) -> None: ...


def empty_store(folder: Path, synchronous: str) -> Path:
    """An empty store file (schema made) to copy for each hub: opening a fresh store costs
    ~10 ms of schema writes, 10 s for a fleet of 1000; a copy costs ~0.1 ms."""
    path = folder / f"empty-{os.getpid()}.db"
    Store(path, synchronous=synchronous).close()
    return path


class GatewaydHub:
    """A hub as gatewayd runs it: Store + Publisher."""

    def __init__(self, index: int, args: argparse.Namespace, username: str, password: str) -> None:
        self.id = hub_id(index)
        self.emitted = 0
        path = args.folder / f"{self.id}.db"
        shutil.copyfile(args.empty_store, path)
        path.chmod(0o600)
        self.store = Store(path, synchronous=args.synchronous)
        config = MqttConfig(
            host="127.0.0.1",
            port=args.port,
            username=username,
            password=password,
            client_id=f"gatewayd-{self.id}",
            inflight=args.inflight,
        )
        self.publisher = Publisher(config, self.id, self.store)  # production backoff 1-60 s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.publisher.run())

    def is_connected(self) -> bool:
        return self.publisher.connected.is_set()

    def emit(self, reading: Reading) -> None:
        self.store.add(reading)
        self.publisher.notify()
        self.emitted += 1

    def backlog(self) -> int:
        # `delivered` counts PUBACKs (a cheap attribute read); the outbox is checked at the end.
        return max(0, self.emitted - self.publisher.delivered)

    def faults(self) -> int:
        return self.publisher.reconnects

    async def close(self) -> None:
        self.publisher.stop()
        if self._task is not None:
            try:
                async with asyncio.timeout(15):
                    await self._task
            except TimeoutError:
                self._task.cancel()
        self.store.close()


class BareHub:
    """The baseline: one aiomqtt client publishing the same bytes, nothing else."""

    def __init__(self, index: int, args: argparse.Namespace, username: str, password: str) -> None:
        self.id = hub_id(index)
        self.emitted = 0
        self.acked = 0
        self.errors = 0
        self.topics = Topics(ROOT, self.id)
        log = logging.getLogger("bench.fleet.aiomqtt")
        log.setLevel(logging.ERROR)
        self.client = aiomqtt.Client(
            "127.0.0.1",
            args.port,
            username=username,
            password=password,
            identifier=f"bare-{self.id}",
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self.topics.hub_status, b"offline", qos=1, retain=True),
            keepalive=MqttConfig().keepalive,
            timeout=10.0,
            logger=log,
            max_inflight_messages=args.inflight,
            max_queued_outgoing_messages=0,
        )
        self._up = False
        self._pending: set[asyncio.Task[None]] = set()
        self._connecting: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._connecting = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await self.client.__aenter__()
            await self.client.publish(self.topics.hub_status, b"online", qos=1, retain=True)
            self._up = True
        except aiomqtt.MqttError:
            self.errors += 1

    def is_connected(self) -> bool:
        return self._up

    def emit(self, reading: Reading) -> None:
        payload = reading_payload_json(encode_record(reading), reading.serial, self.id)
        task = asyncio.create_task(self._send(self.topics.reading(reading.device), payload))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        self.emitted += 1

    async def _send(self, topic: str, payload: bytes) -> None:
        try:
            await self.client.publish(topic, payload, qos=1)
            self.acked += 1
        except aiomqtt.MqttError:
            self.errors += 1

    def backlog(self) -> int:
        return self.emitted - self.acked - self.errors

    def faults(self) -> int:
        return self.errors

    async def close(self) -> None:
        if self._connecting is not None:
            await self._connecting
        if not self._up:
            return
        try:
            async with asyncio.timeout(15):
                await asyncio.gather(*self._pending)
                await self.client.publish(self.topics.hub_status, b"offline", qos=1, retain=True)
                await self.client.__aexit__(None, None, None)
        except (TimeoutError, aiomqtt.MqttError):
            self.errors += 1


class Worker:
    """The hubs `first .. first+count-1` of a fleet of `total`."""

    def __init__(self, args: argparse.Namespace) -> None:
        username, password = os.environ[USER_ENV], os.environ[PASS_ENV]
        kind = GatewaydHub if args.mode == "gatewayd" else BareHub
        if args.mode == "gatewayd":
            args.empty_store = empty_store(args.folder, args.synchronous)
        self.args = args
        self.hubs: list[Hub] = [
            kind(i, args, username, password) for i in range(args.first, args.first + args.count)
        ]
        self.seq = [0] * len(self.hubs)
        self._schedule: asyncio.Task[dict[str, Any]] | None = None

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any] | None:
        """One command; None means quit after answering."""
        match cmd["cmd"]:
            case "connect":
                for hub in self.hubs:
                    hub.start()
                answer = await self._wait_connected(cmd["timeout"])
                # Hundreds of hubs in one process make a heap no hub has: a full collection
                # of it stalls every hub of the worker (~110 ms with 500 gatewayd hubs, seen as
                # latency spikes). Freeze what exists now (hubs, clients, stores) out of GC.
                gc.freeze()
                return answer
            case "wait_connected":
                return await self._wait_connected(cmd["timeout"])
            case "run":  # starts the schedule; `finish` waits for it (other commands meanwhile)
                if self._schedule is not None:
                    raise RuntimeError("a schedule is already running")
                self._schedule = asyncio.create_task(self._run(cmd))
                return {"started": True}
            case "finish":
                if self._schedule is None:
                    raise RuntimeError("no schedule is running")
                try:
                    return await self._schedule
                finally:
                    self._schedule = None
            case "drain":
                return await self._drain(cmd["timeout"])
            case "status":
                return self._status()
            case "close":
                t = time.monotonic()
                await asyncio.gather(*(hub.close() for hub in self.hubs))
                return {"closed": len(self.hubs), "seconds": round(time.monotonic() - t, 2)}
        raise ValueError(f"unknown command {cmd}")

    def _status(self) -> dict[str, Any]:
        return {
            "connected": sum(hub.is_connected() for hub in self.hubs),
            "faults": sum(hub.faults() for hub in self.hubs),
            "backlog": sum(hub.backlog() for hub in self.hubs),
            "cpu_s": time.process_time(),
            "memory": memory_mib(os.getpid()),
        }

    async def _wait_connected(self, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        """Until every hub is connected; also when each came up (wall clock, 20 ms polls)."""
        t = time.monotonic()
        deadline = t + timeout
        up: dict[int, float] = {}
        while time.monotonic() < deadline:
            now = time.time()
            for i, hub in enumerate(self.hubs):
                if i not in up and hub.is_connected():
                    up[i] = now
            if len(up) == len(self.hubs):
                break
            await asyncio.sleep(0.02)  # polling a condition with a deadline
        return {
            **self._status(),
            "seconds": round(time.monotonic() - t, 3),
            "up_at": sorted(up.values()),
        }

    async def _run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Readings at `interval` s per hub for `duration` s from wall time `start`; the hubs of
        the whole fleet are staggered evenly over one interval (hub g at g/total of it)."""
        phase, start, interval = cmd["phase"], cmd["start"], cmd["interval"]
        end = start + cmd["duration"]
        total = self.args.total
        due = [(start + (self.args.first + i) / total * interval, i) for i in range(len(self.hubs))]
        heapq.heapify(due)
        lags: list[float] = []
        cpu0 = time.process_time()
        burst = 0
        while due and due[0][0] < end:
            when, i = due[0]
            now = time.time()
            if when > now:
                burst = 0
                await asyncio.sleep(when - now)
                continue
            heapq.heapreplace(due, (when + interval, i))
            lags.append((now - when) * 1000)
            hub = self.hubs[i]
            self.seq[i] += 1
            hub.emit(make_reading(hub.id, self.seq[i], phase, datetime.now(UTC)))
            burst += 1
            if burst >= _YIELD_EVERY:
                burst = 0
                await asyncio.sleep(0)
        return {
            "emitted": len(lags),
            "schedule_lag_ms": latency_summary(lags),
            "cpu_s": round(time.process_time() - cpu0, 4),
            "backlog": sum(hub.backlog() for hub in self.hubs),
        }

    async def _drain(self, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        t = time.monotonic()
        deadline = t + timeout
        while any(hub.backlog() for hub in self.hubs) and time.monotonic() < deadline:  # noqa: ASYNC110 - counters, no event to wait on
            await asyncio.sleep(0.05)
        status = self._status()
        if isinstance(self.hubs[0], GatewaydHub):
            status["outbox"] = sum(
                hub.store.outbox_depth() for hub in self.hubs if isinstance(hub, GatewaydHub)
            )
        return {**status, "seconds": round(time.monotonic() - t, 3)}


async def serve(args: argparse.Namespace) -> None:
    """Build the hubs, then answer commands until `close`."""
    before = memory_mib(os.getpid())
    worker = Worker(args)
    reply({"ready": len(worker.hubs), "memory_before": before})
    commands = await stdin_reader()
    while line := await commands.readline():
        cmd = json.loads(line)
        try:
            answer = await worker.handle(cmd)
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})
            continue
        reply(answer or {})
        if cmd["cmd"] == "close":
            return


def main() -> int:
    """Entry point (spawned by bench/fleet.py)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("gatewayd", "bare"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--synchronous", default="full", choices=("full", "normal"))
    parser.add_argument("--inflight", type=int, default=MqttConfig().inflight)
    args = parser.parse_args()
    # gatewayd logs every connect and (during the outage phase) every retry: keep stderr useful.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    # ... and aiomqtt logs each connection the outage phase breaks ("Connection reset by peer").
    logging.getLogger("gatewayd.aiomqtt").setLevel(logging.CRITICAL)
    try:
        asyncio.run(serve(args))
    except Exception as exc:
        note(f"[fleet worker {args.first}] failed: {exc!r}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
