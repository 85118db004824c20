"""The simulator driver's `DriverKit` (`gatewayd.plugin.kit`): its virtual sensor.

The simulated sensor lives in the plugin's `SensorRegistry` (no emulator process, no radio):
`SimulatorKit` gives it a reading every 0.1 s on the hub's clock, no warm-up and no random
link trouble, and forces what the checks need through the sensor's link hooks: a link drop
(the sensor stays away three intervals, then the reconnection backfills from its memory), a
damaged notification (counted, the record fetched from memory), notifications that arrive
twice or late (`disorder_records`).

The fault hooks a virtual sensor cannot honour raise `FaultUnsupportedError`, each saying why
in its docstring, and their checks skip.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from drivers.simulator import SensorRegistry, SimulatorOptions, create_plugin
from drivers.simulator.sensor import SimulatedSensor
from gatewayd.plugin import DriverPlugin, Reading
from gatewayd.plugin.kit import DriverKit, FaultUnsupportedError, Key, Target

__all__ = ["INTERVAL", "SimulatorKit"]

#: Seconds between two readings of the kit's sensor.
INTERVAL = 0.1


class SimulatorKit(DriverKit):
    """The simulator driver against its virtual sensor (see the module docstring)."""

    live = True  # a CGM streams: each event comes once readings flow

    def __init__(self) -> None:
        self.registry = SensorRegistry()
        self.options: dict[str, Any] = {
            "interval": INTERVAL,
            "seed": 7,
            "dropout_rate": 0,
            "missed_rate": 0,
            "warmup": 0,
        }

    def make_plugin(self) -> DriverPlugin[SimulatorOptions]:
        return create_plugin(self.registry)

    @contextlib.asynccontextmanager
    async def start_emulator(self) -> AsyncIterator[Target]:
        yield Target(options=self.options)

    def sensor(self) -> SimulatedSensor:
        """The sensor the gateway opened."""
        return self.registry.get(self.device_id)

    async def force_link_drop(self) -> None:
        self.sensor().force_dropout()

    async def corrupt_next(self) -> None:
        self.sensor().force("corrupt")

    def expected_sequence(self, readings: Sequence[Reading]) -> Sequence[Key]:
        """Every record of each session from the oldest to the newest reading (a sensor
        session's records are consecutive)."""
        keys: list[Key] = []
        for session in {r.session for r in readings}:
            seqs = [r.seq for r in readings if r.session == session]
            keys += [(session, seq) for seq in range(min(seqs), max(seqs) + 1)]
        return keys

    # -- fault hooks -----------------------------------------------------------------------------

    async def disorder_records(self) -> None:
        """The next notifications: one arrives twice, one only after the next one."""
        self.sensor().force(None, "twice", None, "late", None)

    async def damage_in_memory(self, where: Sequence[str]) -> Sequence[Key]:
        """Unsupported: the sensor's memory is computed, never carried as bytes that could be
        damaged (a damaged notification is `corrupt_next`)."""
        raise FaultUnsupportedError("damage_in_memory")

    async def set_device_clock(self, fault: str) -> float:
        """Unsupported: a virtual sensor dates its records on the hub's clock; it has no
        calendar of its own that could be wrong."""
        raise FaultUnsupportedError("set_device_clock")

    def true_time(self, reading: Reading) -> datetime:
        """Unsupported: see `set_device_clock` (a reading's time is its true time)."""
        raise FaultUnsupportedError("true_time")

    async def reset_memory(self) -> None:
        """Unsupported: the sensor's memory and sessions are a pure function of the seed and
        the time (a session ends after `session_days`); it cannot be erased on demand."""
        raise FaultUnsupportedError("reset_memory")

    async def fill_memory(self, count: int) -> None:
        """Unsupported: a first contact takes nothing old from the simulated sensor (live from
        then on, as documented), so no first backfill can be large."""
        raise FaultUnsupportedError("fill_memory")

    async def drop_in_report(self) -> None:
        """Unsupported: a first contact has no backfill to cut (see `fill_memory`)."""
        raise FaultUnsupportedError("drop_in_report")
