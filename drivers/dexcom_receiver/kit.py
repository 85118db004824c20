"""The Dexcom receiver driver's `DriverKit` (`gatewayd.plugin.kit`): its pty emulator.

`ReceiverKit` runs a G4 receiver (`ReceiverEmulator`) behind a symlink in a temporary folder,
storing one EGV record every receiver second (`INTERVAL`) on a `ReplayClock` that replays the
last hour at `SPEED`x (a new record every 0.1 s, never one dated after the wall clock), so the
driver's fast polls keep finding new records. A forced link drop pulls the cable (`unplug()`:
the port disappears, the driver's link is lost and reopening it fails) and plugs it back in
after `AWAY` seconds (records to backfill from the database pages); corruption gives the next
answer a wrong CRC (the link counts it and sends the request again).

Every fault hook of the kit is implemented (`driverkit.FAULT_CHECKS`): records whose CRC fails
in memory; the receiver's clock an hour ahead, seven months behind or reset to its epoch (its
records stamped by it from then on); a memory reset, as a receiver reset does it (the database
erased and the clock restarting at its epoch, so system times, the readings' `seq`, start
again); records stored twice and one stored late; a 3,000-record database on first contact;
the cable pulled in the middle of the first backfill. The hub's clock is the wall clock while
the receiver's replays its last hour: a record's true time (`true_time`) is the wall-clock
moment the replay reached it, and the clock offset the hooks report is the receiver's clock
minus the wall clock at the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drivers.dexcom_receiver.emulator import ReceiverEmulator, ReplayClock
from drivers.dexcom_receiver.session import SESSION
from gatewayd.plugin import DriverPlugin, Reading
from gatewayd.plugin.kit import DriverKit, Key, Target
from protocols.dexcom_receiver.commands import receiver_seconds, receiver_time

__all__ = ["AWAY", "INTERVAL", "SPEED", "ReceiverKit"]

#: Receiver seconds between two EGV records of the emulated receiver.
INTERVAL = 1
#: How fast the receiver's clock replays its last hour: a record every 0.1 s.
SPEED = 10.0
#: Receiver history replayed before its clock reaches the wall clock (seconds).
HISTORY = 3600.0
#: Seconds a forced link drop keeps the cable out: about five records to backfill.
AWAY = 0.5
#: The receiver's clock error per `driverkit.CLOCK_FAULTS` (None: reset to its epoch).
CLOCK_ERRORS: dict[str, int | None] = {
    "ahead_1h": 3600,
    "behind_7_months": -213 * 86400,
    "epoch": None,
    "right": 0,
}
#: Records of the first backfill (at least) where a fault needs several pages of it.
REPORT = 120
#: EGV pages read in the first backfill before `drop_in_report` pulls the cable.
DROP_AFTER_PAGES = 2


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
        #: The options the running emulator's `Target` carries (hooks widen its backfill).
        self.options: dict[str, Any] = {}
        #: Database index of the record of each reading id (`expected_sequence` places them).
        self.indices: dict[str, int] = {}
        #: The wall clock when the receiver's replay started.
        self.started = datetime.now(UTC)

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
            started = self.started = datetime.now(UTC)
            clock = ReplayClock(history=HISTORY, speed=SPEED, wall=lambda: started)
            async with ReceiverEmulator(link, clock=clock, **kwargs) as emulator:
                self.emulator = emulator
                self.options = {"path": str(link), **self.table}
                yield Target(options=self.options)

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

    def _candidates(self, reading: Reading) -> list[int]:
        """The database indices of the records stamped `reading.seq` (a clock that went back
        stamps some seconds twice)."""
        database = self._emulator().database
        found = []
        for since, error in database.clock_steps:
            index, rest = divmod(reading.seq - error - database.origin, database.interval)
            true = database.true_time(index)
            if not rest and true >= since and database.clock_error(true) == error:
                found.append(index)
        if not found:
            raise AssertionError(f"no record of the receiver is stamped {reading.seq}")
        return found

    def _place(self, readings: Sequence[Reading]) -> None:
        """The index of each reading's record: sessions follow each other in time, so a
        reading's record comes after every record of the sessions stored before its own."""
        before: dict[str, int] = {}  # per session: the newest index of the sessions before it
        newest = -1
        for reading in readings:
            if reading.session not in before:
                before[reading.session] = newest
            later = [i for i in self._candidates(reading) if i > before[reading.session]]
            index = min(later) if later else max(self._candidates(reading))
            self.indices[reading.id] = index
            newest = max(newest, index)

    def _index(self, reading: Reading) -> int:
        """The database index of the record `reading` came from (placed by `_place`, or the
        record stamped `reading.seq` measured nearest to `reading.time`)."""
        if reading.id in self.indices:
            return self.indices[reading.id]
        database = self._emulator().database
        return min(
            self._candidates(reading),
            key=lambda i: abs(self._wall(database.true_time(i)) - reading.time),
        )

    def _wall(self, true: int) -> datetime:
        """The wall-clock moment the receiver's replayed clock read `true` (right)."""
        start = receiver_seconds(self.started)
        if true >= start:
            return receiver_time(true)
        return self.started + timedelta(seconds=(true - start + HISTORY) / SPEED)

    def expected_sequence(self, readings: Sequence[Reading]) -> Sequence[Key]:
        """Every record with a glucose value and intact in memory from the oldest to the newest
        reading of each session (a session's records are consecutive in the database)."""
        database = self._emulator().database
        self._place(readings)
        keys: list[Key] = []
        for session in {r.session for r in readings}:
            indices = [self._index(r) for r in readings if r.session == session]
            keys += [
                (session, database.time(i))
                for i in range(min(indices), max(indices) + 1)
                if database.record(i).special is None and i not in database.damaged_records
            ]
        return keys

    # -- fault hooks -----------------------------------------------------------------------------

    def true_time(self, reading: Reading) -> datetime:
        return self._wall(self._emulator().database.true_time(self._index(reading)))

    def _first_report(self, records: int) -> None:
        """The first contact backfills at least the last `records` records."""
        hours = max(self.options["backfill_hours"], records * INTERVAL / 3600)
        self.options["backfill_hours"] = hours

    async def damage_in_memory(self, where: Sequence[str]) -> Sequence[Key]:
        """The CRC of records at the start, middle and end of the first backfill fails."""
        self._first_report(REPORT)
        emulator = self._emulator()
        database = emulator.database
        newest = database.newest(emulator.clock.now())
        # the first backfill reaches REPORT records back from the connection: a little later
        place = {"start": newest - REPORT // 2, "middle": newest - REPORT // 4, "end": newest}
        indices = [place[w] for w in where]
        database.damaged_records.update(indices)
        return [(SESSION, database.time(i)) for i in indices]

    async def set_device_clock(self, fault: str) -> float:
        emulator = self._emulator()
        error = CLOCK_ERRORS[fault]
        if error is None:
            emulator.reset_clock()
        else:
            emulator.set_clock_error(error)
        # the error takes effect a receiver second from now
        now = emulator.clock.now() + 1
        system = now + emulator.database.clock_error(now)
        return (receiver_time(system) - self._wall(now)).total_seconds()

    async def reset_memory(self) -> None:
        """A receiver reset: the database is erased and the clock restarts at its epoch."""
        emulator = self._emulator()
        emulator.erase()
        emulator.reset_clock()

    async def disorder_records(self) -> None:
        """The next records: one stored twice, one stored late (after the next)."""
        emulator = self._emulator()
        database = emulator.database
        newest = database.newest(emulator.clock.now())
        database.duplicate(newest + 2)
        database.store_late(newest + 4, newest + 5)
        database.duplicate(newest + 5)

    async def fill_memory(self, count: int) -> None:
        """The first contact backfills the last `count` records (a replayed hour holds them)."""
        self.options["backfill_hours"] = count * INTERVAL / 3600
        # the window is the hub's clock at connection: records stored since are new anyway

    async def drop_in_report(self) -> None:
        self._first_report(REPORT)
        self._emulator().unplug_after(DROP_AFTER_PAGES, replug_after=AWAY)
