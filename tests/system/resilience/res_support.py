"""Helpers of the resilience tests: a scripted driver, in-process daemons, clocks, a small disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatewayd.daemon import Daemon, Plan
from gatewayd.driver import DeviceContext
from gatewayd.models import Reading
from gatewayd.ops.config import Config, parse
from gatewayd.timesync import ClockStatus
from mosquitto import Mosquitto
from scripted_driver import Make, Script, plan_of, scripted_plugin

# -- a small disk --------------------------------------------------------------------------------


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes at `folder` for the block; skips when it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs the suite as root)")
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) on this machine")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill(folder: Path, name: str = "filler") -> Path:
    """Write a file in `folder` until the filesystem has no byte left; returns its path."""
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = bytes(4096)
    try:
        while True:
            os.write(fd, block)
    except OSError:
        pass
    try:  # whatever is left is smaller than a block
        while True:
            os.write(fd, b"\0")
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


# -- clocks ----------------------------------------------------------------------------------


@dataclass
class HubClock:
    """The hub's wall clock: the real one shifted by `offset` (a Pi that booted at 1970)."""

    offset: timedelta = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def boot_at(self, moment: datetime) -> None:
        """Make the wall clock read `moment` now (then run on from there)."""
        self.offset = moment - datetime.now(UTC)


@dataclass
class ClockSwitch:
    """A `ClockStatus` probe a test flips: not synchronised (with a time service) until set."""

    status: ClockStatus = field(
        default_factory=lambda: ClockStatus(False, True, "test", "STA_UNSYNC")
    )

    def probe(self) -> ClockStatus:
        return self.status

    def synchronise(self) -> None:
        self.status = ClockStatus(True, True, "test", "synchronised")


# -- a scripted driver -----------------------------------------------------------------------


FED = scripted_plugin("fed")


def reading_at(seq: int, *, age: float = 0.0, glucose: float = 100.0) -> Make:
    """A reading measured `age` seconds before the hub's wall clock says it arrives."""

    def make(ctx: DeviceContext[Script]) -> Reading:
        now = ctx.now()
        return Reading(
            device=ctx.device_id,
            driver="fed",
            serial=ctx.options.serial,
            session="sess-1",
            seq=seq,
            time=now - timedelta(seconds=age),
            received=now,
            glucose_mgdl=glucose + seq % 50,
            backfilled=age > 0,
        )

    return make


# -- an in-process daemon --------------------------------------------------------------------


def new_hub() -> str:
    return f"hub-res-{uuid.uuid4().hex[:8]}"


def make_plan(store: Path, broker: Mosquitto, hub: str, devices: dict[str, str]) -> Plan:
    """A plan with one scripted device per entry (id -> serial), wired like `daemon.plan`."""
    config: Config = parse(
        {
            "hub": {"id": hub},
            "store": {"path": str(store)},
            "mqtt": {
                "url": broker.url(),
                "username": broker.username,
                "password": broker.password,
            },
            "supervisor": {"backoff_min": 0.05, "backoff_max": 0.2},
            "devices": [
                {"driver": "fed", "id": device_id, "serial": serial}
                for device_id, serial in devices.items()
            ],
        }
    )
    return plan_of(config, FED)


@contextlib.asynccontextmanager
async def started(daemon: Daemon) -> AsyncIterator[asyncio.Task[None]]:
    """Run the daemon for the block (ready once `on_ready` fired); stop it after."""
    ready = asyncio.Event()
    task = asyncio.create_task(daemon.run(on_ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield task
    finally:
        if not task.done():
            daemon.stop()
        await asyncio.wait_for(asyncio.shield(task), 15)
