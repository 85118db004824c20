"""Outbox drain: how fast gatewayd replays a backlog after an outage, against a bare publish loop.

20,000 realistic readings of several devices wait in a gatewayd `Store` on a temp path. The
measured path is gatewayd's own `Publisher` (QoS 1, the configured in-flight window, SQLite
reads, JSON re-encoding, batched outbox deletes) draining them to a fresh test mosquitto, from
`run()` until `outbox_depth() == 0` *and* a subscriber has received every message.

The baseline, in the same run, is a bare aiomqtt loop publishing the very same 20,000 payloads
(same topics, same bytes, pre-encoded) with the same window (`asyncio.Semaphore` + tasks, QoS 1,
the same client options) to the same broker, received by the same kind of subscriber. paho-mqtt
publishing from its own network thread is measured too, as an informational ceiling.

The subscriber is a paho client in a separate process (no GIL shared with the publisher), QoS 1,
fresh for every run, counting `<root>/<hub>/+/reading`; its lag behind the publisher's last
PUBACK is reported per run, so a subscriber bottleneck would show. The broker gets
`max_queued_messages 0` so a lagging subscriber can never silently lose messages.

Each round (`--rounds`, default 3) runs gatewayd and aiomqtt back to back, alternating which
goes first, then paho. Per run: msgs/s (wall clock, end to end) and CPU microseconds per message
of the publishing process (all its threads; far steadier than msgs/s on a shared VM, since time
taken by other processes does not count). The absolute figures are the medians of the runs;
every ratio is taken per round and quoted as the median of the per-round ratios with their
min-max, the wall-time ratio (msgs/s) with the CPU-time ratio (CPU per message, the other way
up so that both read "higher is better for gatewayd") beside it.
Run: `.venv/bin/python bench/outbox_drain.py` (or `scripts/bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from _common import paired, result_header, round_pairs, wall_cpu_text, write_result
from gatewayd.models import Direction, Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.mqtt.topics import Topics
from gatewayd.ops.config import MqttConfig
from gatewayd.store import Store
from gatewayd.store.codec import reading_payload
from mosquitto import Mosquitto

NAME = "outbox_drain"
TARGET_RATIO = 0.8
HUB = "bench-hub"
ROOT = "gatewayd"
#: How long one run may take before the bench gives up on it (a hang, not a slow run).
RUN_TIMEOUT_S = 120.0
_USER_ENV = "BENCH_MQTT_USERNAME"
_PASS_ENV = "BENCH_MQTT_PASSWORD"


# -- the broker ---------------------------------------------------------------------------------


class BenchMosquitto(Mosquitto):
    """The test harness's mosquitto, plus: never drop QoS 1 messages queued for a subscriber.

    mosquitto's default `max_queued_messages 1000` would silently discard messages for a
    subscriber that falls behind; the count would then never be reached.
    """

    def _write_config(self) -> Path:
        conf = super()._write_config()
        with conf.open("a") as f:
            f.write("max_queued_messages 0\n")
        return conf


# -- the data -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Sensor:
    """The running state of one simulated sensor while readings are generated."""

    serial: str
    session: str
    seq0: int
    glucose: float
    recent: list[float]


def make_readings(count: int, devices: int, seed: int = 20240611) -> list[Reading]:
    """`count` plausible CGM readings of `devices` sensors, 5 minutes apart, oldest first.

    A noisy random walk in mg/dL (out of range below 40 / above 400), the trend over the last
    15 minutes with its arrow, a quality figure, the odd status flag; most are backfilled, as a
    replay after an outage would be.
    """
    rng = random.Random(seed)
    interval = timedelta(minutes=5)
    per_device = -(-count // devices)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - interval * per_device
    sensors = [
        _Sensor(
            serial=f"SIM{rng.randrange(10**7):07d}",
            session=f"s{rng.randrange(1000, 3000):04d}",
            seq0=rng.randrange(0, 500),
            glucose=rng.uniform(90, 160),
            recent=[],
        )
        for _ in range(devices)
    ]
    readings: list[Reading] = []
    for step in range(per_device):
        for index, s in enumerate(sensors):
            if len(readings) == count:
                return readings
            g = s.glucose + rng.gauss(0, 6) + 4 * rng.choice((-1, 0, 0, 1))
            s.glucose = g = min(max(g, 30.0), 420.0)
            s.recent = [*s.recent[-3:], g]
            trend = None
            if len(s.recent) > 1:
                trend = round((s.recent[-1] - s.recent[0]) / (5 * (len(s.recent) - 1)), 2)
            low, high = g < 40, g > 400
            t = start + interval * step + timedelta(seconds=rng.uniform(0, 3))
            status: tuple[str, ...] = ()
            if rng.random() < 0.03:
                status = (rng.choice(("calibration_recommended", "temperature_high")),)
            readings.append(
                Reading(
                    device=f"cgm-{index + 1:02d}",
                    driver="simulator",
                    serial=s.serial,
                    session=s.session,
                    seq=s.seq0 + step,
                    time=t,
                    received=t + timedelta(milliseconds=rng.randrange(40, 900)),
                    glucose_mgdl=None if low or high else float(round(g)),
                    out_of_range="low" if low else "high" if high else None,
                    trend_mgdl_min=trend,
                    direction=Direction.from_rate(trend),
                    quality_pct=float(rng.randrange(85, 101)),
                    status=status,
                    backfilled=rng.random() < 0.9,
                )
            )
    return readings


def build_template(path: Path, readings: list[Reading]) -> None:
    """A closed store holding `readings` in its outbox (filled with synchronous=NORMAL: fast)."""
    store = Store(path, synchronous="normal")
    try:
        for reading in readings:
            if not store.add(reading):
                raise RuntimeError(f"duplicate reading id {reading.id}")
    finally:
        store.close()


def expected_messages(template: Path, hub: str, count: int) -> list[tuple[str, bytes]]:
    """The exact (topic, payload) pairs gatewayd publishes for the template's outbox."""
    store = Store(template)
    try:
        rows = store.pending(count + 1)
    finally:
        store.close()
    if len(rows) != count:
        raise RuntimeError(f"template holds {len(rows)} pending rows, expected {count}")
    topics = Topics(ROOT, hub)
    return [
        (
            topics.reading(row.device),
            json.dumps(
                reading_payload({**json.loads(row.record), "serial": row.serial}, hub),
                separators=(",", ":"),
            ).encode(),
        )
        for row in rows
    ]


# -- the subscriber (a child process) -----------------------------------------------------------


def subscriber_main(port: int, topic: str, count: int, timeout: float) -> int:
    """Child process: subscribe (QoS 1), print `ready`, count to `count`, print the times."""
    username, password = os.environ[_USER_ENV], os.environ[_PASS_ENV]
    done = threading.Event()
    received = 0
    first = last = 0.0

    def on_connect(
        client: paho.Client,
        _userdata: Any,
        _flags: paho.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            print(f"error connect {reason}", flush=True)
            done.set()
            return
        client.subscribe(topic, qos=1)

    def on_subscribe(
        _client: paho.Client,
        _userdata: Any,
        _mid: int,
        _reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        print("ready", flush=True)

    def on_message(_client: paho.Client, _userdata: Any, _msg: paho.MQTTMessage) -> None:
        nonlocal received, first, last
        received += 1
        if received == 1:
            first = time.monotonic()
        if received == count:
            last = time.monotonic()
            done.set()

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}", protocol=paho.MQTTv311
    )
    client.username_pw_set(username, password)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    finished = done.wait(timeout)
    if not finished:
        last = time.monotonic()
    # CLOCK_MONOTONIC is system-wide on Linux: the parent compares these with its own readings.
    print(f"done {received} {first:.6f} {last:.6f}", flush=True)
    client.disconnect()
    client.loop_stop()
    return 0 if finished else 1


class SubscriberProcess:
    """The parent's handle on one subscriber child."""

    def __init__(self, broker: Mosquitto, topic: str, count: int) -> None:
        self.broker = broker
        self.topic = topic
        self.count = count
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Spawn the child and wait until its subscription is acknowledged."""
        env = {**os.environ, _USER_ENV: self.broker.username, _PASS_ENV: self.broker.password}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--subscriber",
            str(self.broker.port),
            self.topic,
            str(self.count),
            str(RUN_TIMEOUT_S),
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        line = await self._line(30.0)
        if line != "ready":
            raise RuntimeError(f"subscriber did not get ready: {line!r}")

    async def _line(self, limit_s: float) -> str:
        assert self._proc is not None
        assert self._proc.stdout is not None
        async with asyncio.timeout(limit_s):
            raw = await self._proc.stdout.readline()
        return raw.decode().strip()

    async def result(self) -> tuple[int, float, float]:
        """(messages received, monotonic time of the first, of the last) once the child is done."""
        assert self._proc is not None
        line = await self._line(RUN_TIMEOUT_S + 30.0)
        await self._proc.wait()
        parts = line.split()
        if len(parts) != 4 or parts[0] != "done":
            raise RuntimeError(f"subscriber said {line!r}")
        return int(parts[1]), float(parts[2]), float(parts[3])

    async def kill(self) -> None:
        """Make sure the child is gone."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()


# -- the three publishers -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One measured run."""

    variant: str
    round: int
    messages: int
    seconds: float
    msgs_per_s: float
    #: Subscriber's last receipt minus the publisher's own end (all PUBACKs / outbox empty).
    subscriber_lag_ms: float
    #: CPU time of this (publishing) process per message, all threads: less noisy than msgs/s
    #: on a shared VM, since time stolen by other processes does not count.
    cpu_us_per_msg: float


@dataclass(frozen=True, slots=True)
class Timing:
    """When a publisher started and finished (monotonic), and the CPU this process spent."""

    start: float
    end: float
    cpu_s: float


class _Clock:
    """Starts a `Timing`: wall and process CPU time together."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self._cpu = time.process_time()

    def stop(self) -> Timing:
        return Timing(self.start, time.monotonic(), time.process_time() - self._cpu)


@dataclass
class Context:
    """What every run needs."""

    broker: Mosquitto
    template: Path
    work: Path
    messages: list[tuple[str, bytes]]
    window: int


def _quiet_logger() -> logging.Logger:
    """What gatewayd hands aiomqtt: its per-publish 'pending calls' warnings are filtered."""
    log = logging.getLogger("bench.aiomqtt")
    log.setLevel(logging.ERROR)
    return log


def _fresh_copy(template: Path, path: Path) -> Path:
    """`template` copied to `path`, with no WAL left over from a previous run."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, path)
    return path


async def run_gatewayd(ctx: Context, count: int) -> Timing:
    """gatewayd's Publisher drains a copy of the template store."""
    path = _fresh_copy(ctx.template, ctx.work / "drain.db")
    store = Store(path)  # the daemon's default: synchronous=FULL
    if store.outbox_depth() < count:
        raise RuntimeError("template store holds too few rows")
    if count < store.outbox_depth():  # warm-up: keep only the first `count` rows pending
        store.mark_delivered(r.rowid for r in store.pending(10**9, after=0)[count:])
    config = MqttConfig(
        host="127.0.0.1",
        port=ctx.broker.port,
        username=ctx.broker.username,
        password=ctx.broker.password,
        client_id="bench-gatewayd",
        inflight=ctx.window,
    )
    publisher = Publisher(config, HUB, store)
    try:
        clock = _Clock()
        task = asyncio.create_task(publisher.run())
        while publisher.delivered < count:  # an attribute read: costs the drain nothing
            if task.done():
                raise RuntimeError(f"publisher stopped early: {task!r}")
            await asyncio.sleep(0.002)
        while store.outbox_depth() != 0:  # noqa: ASYNC110 - no event to wait on: poll it
            await asyncio.sleep(0.002)
        timing = clock.stop()
        publisher.stop()
        await asyncio.wait_for(task, 30.0)
    finally:
        store.close()
    return timing


async def run_aiomqtt(ctx: Context, count: int) -> Timing:
    """Bare aiomqtt: the same payloads, window and client options."""
    messages = ctx.messages[:count]
    clock = _Clock()
    client = aiomqtt.Client(
        "127.0.0.1",
        ctx.broker.port,
        username=ctx.broker.username,
        password=ctx.broker.password,
        identifier="bench-aiomqtt",
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=10.0,
        logger=_quiet_logger(),
        max_inflight_messages=ctx.window,
        max_queued_outgoing_messages=0,
    )
    async with client:
        window = asyncio.Semaphore(ctx.window)

        async def send(topic: str, payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=1)
            finally:
                window.release()

        async with asyncio.TaskGroup() as tasks:
            for topic, payload in messages:
                await window.acquire()
                tasks.create_task(send(topic, payload))
        return clock.stop()  # before the disconnect, as for gatewayd


async def run_paho_thread(ctx: Context, count: int) -> Timing:
    """paho-mqtt with its network loop in its own thread (the ceiling)."""
    return await asyncio.to_thread(_paho_publish, ctx, count)


def _paho_publish(ctx: Context, count: int) -> Timing:
    acked = 0
    all_acked = threading.Event()
    connected = threading.Event()

    def on_connect(
        _c: paho.Client, _u: Any, _f: paho.ConnectFlags, _r: ReasonCode, _p: Properties | None
    ) -> None:
        connected.set()

    def on_publish(
        _c: paho.Client, _u: Any, _mid: int, _r: ReasonCode, _p: Properties | None
    ) -> None:
        nonlocal acked
        acked += 1
        if acked == count:
            all_acked.set()

    clock = _Clock()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-paho", protocol=paho.MQTTv5)
    client.username_pw_set(ctx.broker.username, ctx.broker.password)
    client.max_inflight_messages_set(ctx.window)
    client.max_queued_messages_set(0)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect("127.0.0.1", ctx.broker.port)
    client.loop_start()
    try:
        if not connected.wait(10.0):
            raise RuntimeError("paho did not connect")
        for topic, payload in ctx.messages[:count]:
            client.publish(topic, payload, qos=1)
        if not all_acked.wait(RUN_TIMEOUT_S):
            raise RuntimeError(f"paho: only {acked} of {count} acknowledged")
        timing = clock.stop()
    finally:
        client.disconnect()
        client.loop_stop()
    return timing


Variant = Callable[[Context, int], Coroutine[Any, Any, Timing]]
VARIANTS: dict[str, Variant] = {
    "gatewayd": run_gatewayd,
    "aiomqtt": run_aiomqtt,
    "paho_thread": run_paho_thread,
}


async def measure(ctx: Context, variant: str, count: int, round_no: int) -> Run:
    """One run of one variant with a fresh subscriber counting every reading."""
    subscriber = SubscriberProcess(ctx.broker, Topics(ROOT, HUB).reading("+"), count)
    try:
        await subscriber.start()
        async with asyncio.timeout(RUN_TIMEOUT_S):
            timing = await VARIANTS[variant](ctx, count)
        received, _first, last = await subscriber.result()
    finally:
        await subscriber.kill()
    if received != count:
        raise RuntimeError(f"{variant}: subscriber received {received} of {count}")
    seconds = max(timing.end, last) - timing.start
    lag_ms = (last - timing.end) * 1000
    cpu_us = timing.cpu_s / count * 1e6
    return Run(variant, round_no, count, seconds, count / seconds, lag_ms, cpu_us)


# -- the report ---------------------------------------------------------------------------------


def summarize(runs: list[Run], args: argparse.Namespace, sizes: list[int]) -> dict[str, Any]:
    """Medians of each variant, the paired per-round ratios and the verdict."""
    rates = {v: [r.msgs_per_s for r in runs if r.variant == v] for v in VARIANTS}
    medians = {v: statistics.median(x) for v, x in rates.items() if x}
    cpu = {
        v: statistics.median([r.cpu_us_per_msg for r in runs if r.variant == v]) for v in medians
    }

    def throughput(a: str, b: str) -> dict[str, Any]:
        return paired(round_pairs(runs, a, b, lambda r: r.msgs_per_s))

    def cpu_per_msg(a: str, b: str) -> dict[str, Any]:
        return paired(round_pairs(runs, a, b, lambda r: r.cpu_us_per_msg))

    figures = {
        "ratio_gatewayd_over_aiomqtt": throughput("gatewayd", "aiomqtt"),
        #: aiomqtt's CPU per message over gatewayd's: the throughput ratio if both were CPU-bound.
        "cpu_ratio_aiomqtt_over_gatewayd": cpu_per_msg("aiomqtt", "gatewayd"),
    }
    if "paho_thread" in medians:
        figures |= {
            "ratio_gatewayd_over_paho_thread": throughput("gatewayd", "paho_thread"),
            "cpu_ratio_paho_thread_over_gatewayd": cpu_per_msg("paho_thread", "gatewayd"),
            "ratio_aiomqtt_over_paho_thread": throughput("aiomqtt", "paho_thread"),
            "cpu_ratio_paho_thread_over_aiomqtt": cpu_per_msg("paho_thread", "aiomqtt"),
        }
    ratio = figures["ratio_gatewayd_over_aiomqtt"]["median"]
    per_round = round_pairs(runs, "gatewayd", "aiomqtt", lambda r: r.msgs_per_s)
    return {
        **result_header(NAME, "aiomqtt", "paho-mqtt"),
        "setup": {
            "messages": args.messages,
            "devices": args.devices,
            "inflight_window": args.window,
            "rounds": args.rounds,
            "payload_bytes": {
                "min": min(sizes),
                "mean": round(statistics.fmean(sizes), 1),
                "max": max(sizes),
            },
            "store_synchronous": "full",
        },
        "runs": [asdict(r) for r in runs],
        "median_msgs_per_s": {v: round(m, 1) for v, m in medians.items()},
        "median_cpu_us_per_msg": {v: round(c, 1) for v, c in cpu.items()},
        # Each ratio: the median of the per-round ratios (with min-max in `paired`).
        **{key: figure["median"] for key, figure in figures.items()},
        "ratio_per_round": [round(g / b, 3) for g, b in per_round],
        "paired": figures,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio is not None and ratio >= TARGET_RATIO,
        "max_subscriber_lag_ms": round(max(r.subscriber_lag_ms for r in runs), 1),
    }


def print_block(result: dict[str, Any], path: Path) -> None:
    """The human-readable result block."""
    setup = result["setup"]
    med = result["median_msgs_per_s"]
    size = setup["payload_bytes"]
    figure = result["paired"]
    lines = [
        f"== {NAME}: outbox replay vs a bare aiomqtt publish loop ==",
        f"  {setup['messages']} readings of {setup['devices']} devices, payload "
        f"{size['min']}-{size['max']} B (mean {size['mean']}), QoS 1, "
        f"window {setup['inflight_window']}, {setup['rounds']} rounds (gatewayd and aiomqtt "
        "back to back, alternating)",
    ]
    lines += [
        f"    round {run['round']} {run['variant']:<12} {run['msgs_per_s']:>9.0f} msg/s"
        f"  {run['seconds']:5.2f} s  {run['cpu_us_per_msg']:5.1f} us CPU/msg"
        f"  subscriber lag {run['subscriber_lag_ms']:6.1f} ms"
        for run in result["runs"]
    ]
    cpu = result["median_cpu_us_per_msg"]
    lines += [
        "  medians:",
        f"  gatewayd Publisher   {med['gatewayd']:>9.0f} msg/s  {cpu['gatewayd']:5.1f} us CPU/msg",
        f"  bare aiomqtt         {med['aiomqtt']:>9.0f} msg/s  {cpu['aiomqtt']:5.1f} us CPU/msg"
        "   (baseline)",
    ]
    if "paho_thread" in med:
        lines.append(
            f"  paho in a thread     {med['paho_thread']:>9.0f} msg/s  "
            f"{cpu['paho_thread']:5.1f} us CPU/msg   (ceiling, info)"
        )
    verdict = "OK" if result["meets_target"] else "BELOW TARGET"
    lines += [
        "  ratios = median of per-round ratios (min-max); CPU time = the other side's CPU per "
        "message over this side's",
        "  gatewayd/aiomqtt msg/s "
        + wall_cpu_text(
            figure["ratio_gatewayd_over_aiomqtt"], figure["cpu_ratio_aiomqtt_over_gatewayd"]
        ),
        f"    target >= {TARGET_RATIO}: {verdict}",
    ]
    if "ratio_gatewayd_over_paho_thread" in figure:
        lines += [
            "  gatewayd/paho msg/s "
            + wall_cpu_text(
                figure["ratio_gatewayd_over_paho_thread"],
                figure["cpu_ratio_paho_thread_over_gatewayd"],
            )
            + "   (info)",
            "  aiomqtt/paho msg/s "
            + wall_cpu_text(
                figure["ratio_aiomqtt_over_paho_thread"],
                figure["cpu_ratio_paho_thread_over_aiomqtt"],
            )
            + "   (info)",
        ]
    lines += [
        f"  max subscriber lag {result['max_subscriber_lag_ms']} ms (its last receipt minus the "
        "publisher's own end; negative or small: the subscriber kept up)",
        f"  json: {path}",
    ]
    print("\n".join(lines), flush=True)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Set up the broker and the template store, run the rounds, return the summary."""
    variants = ["gatewayd", "aiomqtt"] + (["paho_thread"] if args.paho else [])
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        work = Path(tmp)
        broker = BenchMosquitto(work / "broker")
        broker.start()
        try:
            template = work / "template.db"
            t = time.monotonic()
            build_template(template, make_readings(args.messages, args.devices))
            messages = expected_messages(template, HUB, args.messages)
            print(
                f"[{NAME}] store of {args.messages} readings built in "
                f"{time.monotonic() - t:.1f} s; running...",
                file=sys.stderr,
                flush=True,
            )
            ctx = Context(broker, template, work, messages, args.window)
            warm = min(2000, args.messages)
            for variant in variants:  # warm caches, imports and the broker; not measured
                await measure(ctx, variant, warm, 0)
            runs: list[Run] = []
            for round_no in range(1, args.rounds + 1):
                order = variants[:2] if round_no % 2 else variants[1::-1]
                for variant in order + variants[2:]:
                    run = await measure(ctx, variant, args.messages, round_no)
                    runs.append(run)
                    print(
                        f"[{NAME}] round {round_no} {variant}: {run.msgs_per_s:.0f} msg/s",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            broker.stop()
    return summarize(runs, args, [len(p) for _, p in messages])


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=6, choices=range(2, 11))
    parser.add_argument("--window", type=int, default=MqttConfig().inflight)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-paho", dest="paho", action="store_false", help="skip the ceiling")
    parser.add_argument("--subscriber", nargs=4, metavar=("PORT", "TOPIC", "COUNT", "TIMEOUT"))
    args = parser.parse_args()
    if args.subscriber:
        port, topic, count, timeout = args.subscriber
        return subscriber_main(int(port), topic, int(count), float(timeout))
    # gatewayd logs `broker_connected` etc. at info: keep the result block readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    result = asyncio.run(main_async(args))
    path = write_result(NAME, result)
    print_block(result, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
