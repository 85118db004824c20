"""The Dexcom receiver driver's `DriverKit` (`gatewayd.testing.driverkit`): its pty emulator.

`ReceiverKit` runs a G4 receiver (`ReceiverEmulator`) behind a symlink in a temporary folder,
storing one EGV record every receiver second (`INTERVAL`) on a `ReplayClock` that replays the
last hour at `SPEED`x (a new record every 0.1 s, never one dated after the wall clock), so the
driver's fast polls keep finding new records. A forced link drop pulls the cable (`unplug()`:
the port disappears, the driver's link is lost and reopening it fails) and plugs it back in
after `AWAY` seconds (records to backfill from the database pages); corruption gives the next
answer a wrong CRC (the link counts it and sends the request again).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from drivers.dexcom_receiver.emulator import ReceiverEmulator, ReplayClock
from drivers.dexcom_receiver.session import SESSION
from gatewayd.driver import DriverPlugin
from gatewayd.models import Reading
from gatewayd.testing.driverkit import DriverKit, Key, Target

__all__ = ["AWAY", "INTERVAL", "SPEED", "ReceiverKit"]

#: Receiver seconds between two EGV records of the emulated receiver.
INTERVAL = 1
#: How fast the receiver's clock replays its last hour: a record every 0.1 s.
SPEED = 10.0
#: Receiver history replayed before its clock reaches the wall clock (seconds).
HISTORY = 3600.0
#: Seconds a forced link drop keeps the cable out: about five records to backfill.
AWAY = 0.5


def _plugin() -> DriverPlugin[Any]:
    from drivers.dexcom_receiver import plugin

    return plugin


class ReceiverKit(DriverKit):
    """The driver test kit's view of the receiver driver and its emulator (see the module)."""

    #: The receiver streams (a record every 0.1 s): wait for live polls, not the backfill.
    live = True

    def __init__(self, options: Mapping[str, Any] | None = None, **emulator: Any) -> None:
        self.table: dict[str, Any] = {
            "poll_interval": 0.05,
            "backfill_hours": 10 / 3600,  # a first contact backfills the last ~10 records
            "timeout": 0.3,
        }
        self.table.update(options or {})
        self.emulator_kwargs = emulator
        self.emulator: ReceiverEmulator | None = None

    def make_plugin(self) -> DriverPlugin[Any]:
        """The plugin, as the daemon loads it."""
        return _plugin()

    @contextlib.asynccontextmanager
    async def start_emulator(self) -> AsyncIterator[Target]:
        """The receiver on a pty behind a symlink, its clock replaying the last hour."""
        kwargs: dict[str, Any] = {"interval": INTERVAL}
        kwargs.update(self.emulator_kwargs)
        with tempfile.TemporaryDirectory(prefix="dexcom-receiver-kit-") as folder:
            link = Path(folder) / "receiver"
            clock = ReplayClock(history=HISTORY, speed=SPEED)
            async with ReceiverEmulator(link, clock=clock, **kwargs) as emulator:
                self.emulator = emulator
                yield Target(options={"path": str(link), **self.table})

    def _emulator(self) -> ReceiverEmulator:
        if self.emulator is None:
            raise RuntimeError("the emulator is not running")
        return self.emulator

    async def force_link_drop(self) -> None:
        """Pull the cable, and plug it back in `AWAY` seconds later."""
        emulator = self._emulator()
        emulator.unplug()
        await asyncio.sleep(AWAY)  # the receiver stores records meanwhile
        emulator.replug()

    async def corrupt_next(self) -> None:
        """Give the next answer a wrong CRC."""
        self._emulator().corrupt_next()

    def expected_sequence(self, readings: Sequence[Reading]) -> Sequence[Key]:
        """Every record with a glucose value from the oldest to the newest reading."""
        if not readings:
            return []
        database = self._emulator().database
        seqs = [r.seq for r in readings]
        low, high = min(seqs), max(seqs)
        first = max(0, -((database.origin - low) // database.interval))
        last = database.newest(high)
        return [
            (SESSION, database.time(i))
            for i in range(first, last + 1)
            if database.record(i).special is None
        ]
