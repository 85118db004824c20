"""A daemon in-process with scripted devices and only the services under test.

`rig` builds configs and `Daemon`s whose devices yield what the test feeds them (the real
driver contract, fed through a queue), against the session's real mosquitto.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gatewayd.daemon import Daemon
from gatewayd.models import Direction, OutOfRange, Reading
from gatewayd.ops.config import Config, parse
from gatewayd.services import ServiceSpec
from mosquitto import Mosquitto
from polling import wait_until
from scripted_driver import Drop, Item, Script, plan_of, scripted_plugin, scripts

NOW = datetime.now(UTC).replace(microsecond=0)


FED = scripted_plugin("fed")


def reading(
    device: str,
    seq: int,
    glucose: float | None = 120.0,
    *,
    out_of_range: OutOfRange | None = None,
    minutes_ago: float | None = None,
    trend: float | None = 0.5,
) -> Reading:
    """A reading of a fed device, measured `minutes_ago` (default: 5 min per seq before NOW)."""
    measured = NOW - timedelta(minutes=minutes_ago if minutes_ago is not None else 300 - 5 * seq)
    return Reading(
        device=device,
        driver="fed",
        serial=f"SN-{device}",
        session="s1",
        seq=seq,
        time=measured,
        received=measured + timedelta(seconds=1),
        glucose_mgdl=glucose,
        out_of_range=out_of_range,
        trend_mgdl_min=trend,
        direction=Direction.from_rate(trend),
    )


class Rig:
    """Configs and daemons of one hub, against one broker, with one store."""

    reading = staticmethod(reading)
    wait_until = staticmethod(wait_until)
    now = NOW

    def __init__(self, folder: Path, broker: Mosquitto) -> None:
        self.folder = folder
        self.broker = broker
        self.hub = f"hub-{uuid.uuid4().hex[:8]}"
        self.feeds: dict[str, Script] = {}

    def config(
        self,
        devices: tuple[str, ...] = ("cgm-a",),
        *,
        tables: dict[str, dict[str, Any]] | None = None,
        **sections: dict[str, Any],
    ) -> Config:
        """A config of `devices` (each with its `tables`, e.g. `alerts`) and `sections`."""
        return parse(
            {
                "hub": {"id": self.hub},
                "store": {"path": str(self.folder / "gatewayd.db")},
                "mqtt": {
                    "url": self.broker.url(),
                    "username": self.broker.username,
                    "password": self.broker.password,
                },
                "supervisor": {"backoff_min": 0.05, "backoff_max": 0.2},
                "devices": [
                    {"driver": "fed", "id": d, "serial": f"SN-{d}", **(tables or {}).get(d, {})}
                    for d in devices
                ],
                **sections,
            },
            self.folder / "gatewayd.toml",
        )

    def daemon(self, config: Config, *specs: ServiceSpec[Any]) -> Daemon:
        """A daemon of `config` running only the given services (the ones under test)."""
        plan = plan_of(config, FED)
        self.feeds.update(scripts(plan))
        services = tuple((s, o) for s in specs if (o := s.parse(config)) is not None)
        return Daemon(replace(plan, services=services), flush_timeout=5.0)

    @staticmethod
    def drop(reason: str) -> Drop:
        """A queue item: the driver discards a packet for `reason`."""
        return Drop(reason=reason)

    def feed(self, device: str, *items: Item) -> None:
        self.feeds[device].put(*items)

    @asynccontextmanager
    async def running(self, daemon: Daemon) -> AsyncIterator[Daemon]:
        ready = asyncio.Event()
        task = asyncio.create_task(daemon.run(on_ready=ready.set))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            yield daemon
        finally:
            daemon.stop()
            await asyncio.wait_for(task, 15)


@pytest.fixture
def rig(tmp_path: Path, broker: Mosquitto) -> Rig:
    return Rig(tmp_path, broker)


@pytest.fixture
def own_rig(tmp_path: Path, own_broker: Mosquitto) -> Rig:
    return Rig(tmp_path, own_broker)
