"""`gatewayd demo`: simulated CGMs -> daemon -> embedded amqtt broker -> live viewer.

The end-to-end tests run the real `gatewayd demo` entry point as a subprocess at a high
simulation speed, read its output until readings of every device have appeared, then stop it
the way a person does (Ctrl-C / SIGTERM) or let `--duration` end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gatewayd.cli import demo
from mosquitto import free_port

GATEWAYD = Path(sys.executable).parent / "gatewayd"
#: A reading line: local date and time, device, mg/dL (or LOW/HIGH).
READING = re.compile(r"^\s+\d{4}-\d{2}-\d{2} \d{2}:\d{2}\s+(cgm-\d+)\s+(\d+|LOW|HIGH)\s")
#: Bound on how long anything in a subprocess test may take (readings come in ~1 s at 3000x).
TIMEOUT_S = 60.0

needs_gatewayd = pytest.mark.skipif(
    not GATEWAYD.exists(), reason=f"the gatewayd entry point is not installed at {GATEWAYD}"
)


def hint(port: int) -> str:
    return f"mosquitto_sub -h 127.0.0.1 -p {port} -t 'gatewayd/#' -v"


@dataclass
class RunningDemo:
    """A `gatewayd demo` subprocess whose output is read line by line."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    stderr: bytes = b""

    async def read_until(
        self, done: Callable[[list[str]], bool], timeout: float = TIMEOUT_S
    ) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while not done(self.lines):
                raw = await self.proc.stdout.readline()
                if not raw:
                    pytest.fail("demo exited early:\n" + "\n".join(self.lines))
                self.lines.append(raw.decode().rstrip("\n"))

    async def finish(self, timeout: float = TIMEOUT_S) -> int:
        """Read the rest of the output and wait for the exit status."""
        async with asyncio.timeout(timeout):
            out, err = await self.proc.communicate()
        self.lines.extend(out.decode().splitlines())
        self.stderr = err
        assert self.proc.returncode is not None
        return self.proc.returncode

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@contextlib.asynccontextmanager
async def gatewayd_demo(*args: str) -> AsyncIterator[RunningDemo]:
    proc = await asyncio.create_subprocess_exec(
        str(GATEWAYD),
        "demo",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield RunningDemo(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def devices_seen(lines: list[str]) -> set[str]:
    return {m.group(1) for line in lines if (m := READING.match(line))}


def readings_of(*devices: str) -> Callable[[list[str]], bool]:
    return lambda lines: set(devices) <= devices_seen(lines)


def summary(lines: list[str]) -> dict[str, int]:
    """`gatewayd demo: stopped; 12 readings shown (cgm-1 6, cgm-2 6)` as {device: count}."""
    last = [line for line in lines if "readings shown" in line]
    assert last, "no summary line"
    inner = last[-1].rsplit("(", 1)[1].rstrip(")")
    return {name: int(n) for name, n in (part.split() for part in inner.split(", "))}


# -- end to end ---------------------------------------------------------------------------


@pytest.mark.slow
@needs_gatewayd
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_demo_shows_live_readings_and_stops_cleanly(stop: signal.Signals) -> None:
    port = free_port()
    async with gatewayd_demo("--devices", "2", "--speed", "3000", "--port", str(port)) as run:
        await run.read_until(readings_of("cgm-1", "cgm-2"))
        run.proc.send_signal(stop)
        status = await run.finish()

    assert status == 0, run.stderr.decode()
    assert hint(port) in run.output
    assert "is in use" not in run.output
    # The daemon stopped first and said so through the broker, which the viewer still saw.
    assert "hub demo-hub online" in run.output
    assert re.search(r"cgm-1\s+stopped", run.output)
    assert "hub demo-hub offline" in run.output
    counts = summary(run.lines)
    assert set(counts) == {"cgm-1", "cgm-2"}
    assert all(n >= 1 for n in counts.values())
    assert counts["cgm-1"] == sum(
        1 for line in run.lines if (m := READING.match(line)) and m.group(1) == "cgm-1"
    )
    assert "Traceback" not in run.stderr.decode()


@pytest.mark.slow
@needs_gatewayd
async def test_demo_with_duration_ends_by_itself() -> None:
    port = free_port()
    async with gatewayd_demo(
        "--duration", "3", "--devices", "2", "--speed", "3000", "--port", str(port)
    ) as run:
        status = await run.finish()

    assert status == 0, run.stderr.decode()
    assert hint(port) in run.output
    assert devices_seen(run.lines) == {"cgm-1", "cgm-2"}
    assert "hub demo-hub offline" in run.output
    assert all(n >= 1 for n in summary(run.lines).values())


@pytest.mark.slow
@needs_gatewayd
async def test_demo_moves_to_the_next_port_when_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        async with gatewayd_demo("--devices", "1", "--speed", "3000", "--port", str(port)) as run:
            await run.read_until(readings_of("cgm-1"))
            run.proc.send_signal(signal.SIGINT)
            status = await run.finish()

    assert status == 0, run.stderr.decode()
    moved = re.search(
        rf"port {port} on 127\.0\.0\.1 is in use; using port (\d+) instead", run.output
    )
    assert moved, run.output
    used = int(moved.group(1))
    assert port < used <= port + demo.PORT_TRIES
    assert hint(used) in run.output
    assert hint(port) not in run.output


# -- in process ---------------------------------------------------------------------------


async def test_start_broker_skips_a_taken_port_and_serves_the_next() -> None:
    import aiomqtt

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        broker, used = await demo.start_broker(port)
        try:
            assert port < used <= port + demo.PORT_TRIES
            async with aiomqtt.Client(
                "127.0.0.1", used, protocol=aiomqtt.ProtocolVersion.V311
            ) as client:
                await client.subscribe("t/#", qos=1)
                await client.publish("t/x", b"hi", qos=1)
                async with asyncio.timeout(10):
                    message = await anext(aiter(client.messages))
            assert message.payload == b"hi"
        finally:
            await demo.stop_broker(broker)


async def test_start_broker_fails_clearly_when_every_port_is_taken() -> None:
    from gatewayd.errors import GatewayError

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        with pytest.raises(GatewayError, match=f"ports {port}-{port} .* all in use"):
            await demo.start_broker(port, tries=0)


async def test_bad_arguments_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert await demo.run_demo(devices=0) == 2
    assert await demo.run_demo(speed=0.5) == 2
    assert await demo.run_demo(port=70000) == 2
    assert await demo.run_demo(duration=0) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4
    assert all(line.startswith("gatewayd demo: --") for line in err)


async def test_missing_amqtt_gives_an_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)  # import raises ImportError
    assert await demo.run_demo(port=free_port()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pip install 'gatewayd[demo]'" in err
    assert "./scripts/demo" in err


def test_demo_config_is_a_valid_daemon_config(tmp_path: Path) -> None:
    from gatewayd.ops.config import parse

    cfg = parse(demo.demo_config(3, 60.0, 1999, tmp_path / "demo.db"))
    assert cfg.hub.id == "demo-hub"
    assert cfg.mqtt.url == "mqtt://127.0.0.1:1999"
    assert cfg.mqtt.protocol == "3.1.1"  # amqtt refuses MQTT 5
    assert cfg.store.path == tmp_path / "demo.db"
    assert [d.id for d in cfg.devices] == ["cgm-1", "cgm-2", "cgm-3"]
    assert {d.driver for d in cfg.devices} == {"simulator"}
    assert len({d.options["seed"] for d in cfg.devices}) == 3
    assert all(d.options["history"] == 86_400 and d.options["interval"] == 300 for d in cfg.devices)


# -- the display --------------------------------------------------------------------------


def reading(device: str = "cgm-1", **fields: object) -> bytes:
    payload: dict[str, object] = {
        "schema": "gatewayd/reading/1",
        "hub": "demo-hub",
        "device": device,
        "time": "2024-03-01T12:05:00.000Z",
        "glucose_mgdl": 123,
        "glucose_mmoll": 6.8,
        "out_of_range": None,
        "direction": "FortyFiveUp",
        "backfilled": False,
    }
    payload.update(fields)
    return json.dumps(payload).encode()


def status(device: str, state: str, reason: str | None = None) -> bytes:
    return json.dumps(
        {"device": device, "state": state, "reason": reason, "retry_in_s": None}
    ).encode()


class Utf8Out(io.StringIO):
    encoding = "utf-8"


def test_display_lines() -> None:
    out = Utf8Out()
    display = demo.Display(out, ["cgm-1", "cgm-2"], colour=False)
    display.message("gatewayd/demo-hub/status", b"online")
    display.message("gatewayd/demo-hub/cgm-1/status", status("cgm-1", "connected"))
    display.message("gatewayd/demo-hub/cgm-1/status", status("cgm-1", "connected"))  # no change
    display.message("gatewayd/demo-hub/cgm-1/reading", reading())
    display.message("gatewayd/demo-hub/cgm-1/state", reading())  # retained copy: not repeated
    display.message(
        "gatewayd/demo-hub/cgm-2/reading",
        reading(
            "cgm-2",
            glucose_mgdl=None,
            glucose_mmoll=None,
            out_of_range="low",
            direction="NOT COMPUTABLE",
            backfilled=True,
        ),
    )
    display.message(
        "gatewayd/demo-hub/cgm-2/reading",
        reading(
            "cgm-2",
            glucose_mgdl=None,
            glucose_mmoll=None,
            out_of_range="high",
            direction="DoubleDown",
        ),
    )
    display.message("gatewayd/demo-hub/cgm-1/status", status("cgm-1", "backoff", "link lost"))
    display.message("gatewayd/demo-hub/status", b"offline")

    lines = out.getvalue().splitlines()
    assert lines[0].strip() == "· hub demo-hub online"
    assert lines[1].split() == ["·", "cgm-1", "connected"]
    assert lines[2].split() == ["time", "(local)", "device", "mg/dL", "mmol/L", "trend"]
    first, low, high = lines[3:6]
    assert first.split()[2:] == ["cgm-1", "123", "6.8", "↗"]
    assert low.split()[2:] == ["cgm-2", "LOW", "-", "?", "backfilled"]
    assert high.split()[2:] == ["cgm-2", "HIGH", "-", "↓↓"]
    assert len({line.index(" cgm-") for line in (first, low, high)}) == 1  # aligned
    assert lines[6].split() == ["·", "cgm-1", "backoff:", "link", "lost"]
    assert lines[7].strip() == "· hub demo-hub offline"
    assert len(lines) == 8
    assert display.hub_offline.is_set()
    assert display.counts == {"cgm-1": 1, "cgm-2": 2}
    assert display.summary().endswith("3 readings shown (cgm-1 1, cgm-2 2)")
    assert "\x1b[" not in out.getvalue()


def test_display_colours_only_when_asked() -> None:
    out = Utf8Out()
    demo.Display(out, ["cgm-1"], colour=True).message(
        "gatewayd/demo-hub/cgm-1/reading", reading(glucose_mgdl=55, glucose_mmoll=3.1)
    )
    assert "\x1b[31m" in out.getvalue()  # a low value in red


def test_display_falls_back_to_ascii_arrows() -> None:
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    display = demo.Display(out, ["cgm-1"], colour=False)
    display.message("gatewayd/demo-hub/cgm-1/reading", reading(direction="Flat"))
    out.seek(0)
    assert out.read().splitlines()[-1].split()[-1] == "->"
