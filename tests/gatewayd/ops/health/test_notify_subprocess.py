"""`gatewayd run` as systemd starts it: NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID set.

A real daemon process with simulated CGMs and the real mosquitto reports READY=1 once its
broker link is up, a STATUS= summary, WATCHDOG=1 every WATCHDOG_USEC/2 while the data path is
healthy, and STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mosquitto import Mosquitto

from integration_support import GATEWAYD, write_config

if (
    TYPE_CHECKING
):  # the fixture's type (tests/gatewayd/ops/health/conftest.py is not importable by name)
    from conftest import NotifySocket

pytestmark = pytest.mark.timeout(60)

#: Simulated CGMs reading every 0.2 s, no warm-up, no dropouts: a healthy data path.
DEVICE = "interval = 0.2\nwarmup = 0\ndropout_rate = 0\nmissed_rate = 0"


async def test_ready_status_watchdog_and_stopping_from_a_real_daemon(
    broker: Mosquitto, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    # A hub of its own: the session broker keeps retained topics for the tests that follow.
    hub = f"hub-{uuid.uuid4().hex[:10]}"
    config = write_config(tmp_path / "hub", broker, {"sim-a": DEVICE, "sim-b": DEVICE}, hub=hub)
    log = (tmp_path / "daemon.log").open("wb")
    # WATCHDOG_PID names the daemon itself: the shell exports its own pid, then execs.
    process = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        'export WATCHDOG_PID=$$; exec "$0" run --config "$1"',
        GATEWAYD,
        str(config),
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "NOTIFY_SOCKET": str(notify_socket.path),
            "WATCHDOG_USEC": "400000",  # ping every 0.2 s
            "PYTHONUNBUFFERED": "1",
        },
    )
    log.close()
    try:
        await notify_socket.wait_for(
            lambda m: any(x.get("READY") == "1" for x in m), timeout=30, what="READY=1"
        )
        await notify_socket.wait_for(
            lambda m: sum(x.get("WATCHDOG") == "1" for x in m) >= 3, timeout=10, what="3 pings"
        )
        await notify_socket.wait_for(
            lambda m: any(
                x.get("STATUS", "").startswith("2 devices (2 connected); broker connected")
                for x in m
            ),
            timeout=10,
            what="a STATUS with both devices connected",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 20)
    messages = notify_socket.poll()
    assert code == 0, (tmp_path / "daemon.log").read_text()[-2000:]

    ready = next(i for i, m in enumerate(messages) if "READY" in m)
    first_ping = next(i for i, m in enumerate(messages) if "WATCHDOG" in m)
    stopping = [i for i, m in enumerate(messages) if m.get("STOPPING") == "1"]
    assert ready < first_ping  # no ping before READY (systemd arms the watchdog at READY)
    assert "broker connected" in messages[ready]["STATUS"]
    assert stopping == [len(messages) - 1]  # said once, last
    assert not any(m.get("STATUS", "").startswith("WEDGED") for m in messages)
