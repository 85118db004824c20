"""`gatewayd simulate --device dexcom-receiver`: a standalone emulated receiver that the driver
reads through the printed path; its signal hooks; and the command's option handling."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from drivers.dexcom_receiver import plugin
from drivers.dexcom_receiver.options import ReceiverOptions
from drivers.dexcom_receiver.session import ReceiverSession
from drivers.dexcom_receiver.simulate import simulate
from gatewayd.cli import main
from gatewayd.driver import DeviceContext
from gatewayd.emulators import SimulateContext, parse_settings, resolve
from gatewayd.errors import UsageError
from gatewayd.plugin import Emulator

pytestmark = pytest.mark.timeout(30)
GATEWAYD = str(Path(sys.executable).parent / "gatewayd")


async def wait_for_path(link: Path, present: bool) -> None:
    """Poll the filesystem (nothing to wait on: the symlink is another process's doing)."""
    async with asyncio.timeout(5):
        while await asyncio.to_thread(link.exists) != present:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_simulate_prints_the_path_the_driver_reads(tmp_path: Path) -> None:
    link = tmp_path / "rx"
    process = await asyncio.create_subprocess_exec(
        GATEWAYD,
        "simulate",
        "--device",
        "dexcom-receiver",
        "--pty-link",
        str(link),
        "--duration",
        "25",
        "--set",
        "history=3600",
        "--set",
        "serial=SM77777777",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(10):
            lines = [(await process.stdout.readline()).decode() for _ in range(3)]
        assert f'path = "{link}"\n' in lines
        options = ReceiverOptions(path=str(link), poll_interval=0.05, backfill_hours=1, timeout=1)
        ctx = DeviceContext("rx", "dexcom_receiver", options, None, structlog.get_logger())
        async with ReceiverSession(ctx) as session:
            assert session.identity is not None
            assert session.identity.serial == "SM77777777"
            async with contextlib.aclosing(session.readings()) as stream, asyncio.timeout(5):
                first = [await anext(stream) for _ in range(12)]
        assert [b.seq - a.seq for a, b in itertools.pairwise(first)] == [300] * 11

        os.kill(process.pid, signal.SIGUSR1)  # unplug
        await wait_for_path(link, present=False)
        os.kill(process.pid, signal.SIGUSR1)  # plug back in
        await wait_for_path(link, present=True)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert not link.exists()


def test_settings_are_toml_values_or_strings() -> None:
    assert parse_settings(["interval=60", "speed=2.5", "model=g6", "on=true", "x=[1, 2]"]) == {
        "interval": 60,
        "speed": 2.5,
        "model": "g6",
        "on": True,
        "x": [1, 2],
    }
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_settings(["interval"])


def test_the_plugin_declares_the_emulator() -> None:
    assert plugin.emulator == Emulator(
        "dexcom-receiver", "drivers.dexcom_receiver.simulate:simulate"
    )
    assert callable(resolve("dexcom-receiver"))
    with pytest.raises(UsageError, match="dexcom-receiver"):
        resolve("no-such-device")


def test_bad_simulate_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--device", "no-such-device"]) == 2
    assert "no emulator called 'no-such-device'" in capsys.readouterr().err
    assert main(["simulate", "--device", "dexcom-receiver", "--set", "model=g9"]) == 2
    assert "model: must be one of g4, g6" in capsys.readouterr().err
    assert main(["simulate", "--device", "dexcom-receiver", "--duration", "0"]) == 2


async def test_simulate_faults(tmp_path: Path) -> None:
    # A receiver an hour fast, its newest-but-two record damaged in memory, one record stored
    # twice and one stored late: the driver dates by the hub's clock, passes the damaged
    # record over and delivers every other record once.
    link = tmp_path / "faulty"
    options = {
        "clock_error": 3600,
        "damaged_records": [2],
        "duplicates": [5],
        "late": [9],
    }
    context = SimulateContext("dexcom-receiver", options=options, pty_link=link, out=io.StringIO())
    server = asyncio.create_task(simulate(context))
    try:
        await wait_for_path(link, present=True)
        read = ReceiverOptions(path=str(link), poll_interval=0.05, backfill_hours=1, timeout=1)
        ctx = DeviceContext("rx", "dexcom_receiver", read, None, structlog.get_logger())
        async with (
            ReceiverSession(ctx) as session,
            contextlib.aclosing(session.readings()) as stream,
            asyncio.timeout(5),
        ):
            readings = [await anext(stream) for _ in range(11)]
    finally:
        context.stop.set()
        await asyncio.wait_for(server, 5)
    now = datetime.now(UTC)
    seqs = sorted(r.seq for r in readings)
    steps = [b - a for a, b in itertools.pairwise(seqs)]
    assert sorted(steps) == [300] * 9 + [600]  # one record missing: the damaged one
    assert steps[-2] == 600  # the gap is the newest-but-two record
    assert ctx.findings.unreadable == 1
    assert ctx.findings.clock_offset_s == pytest.approx(3600, abs=2)
    assert all(timedelta(0) <= now - r.time < timedelta(hours=1) for r in readings)


def test_bad_fault_options_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--device", "dexcom-receiver", "--set", "damaged_pages=3"]) == 2
    assert "damaged_pages: must be a list of integers >= 0" in capsys.readouterr().err
