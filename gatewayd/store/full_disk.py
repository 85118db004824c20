"""A full disk: the daemon keeps running, keeps the newest data it can, and recovers by itself.

SQLite refuses a write with SQLITE_FULL (`store.StoreFull`) when the filesystem is full. The
supervisor stores every reading through an `Intake`, which handles that refusal:

1. **Make room** (once per episode): give back the reserve file beside the store
   (`file.Reserve`: without it SQLite cannot even delete rows, because a delete appends to
   the WAL and the checkpoint that recycles the WAL needs room), then delete the oldest
   *delivered* readings more than `emergency_retention` older than the newest stored one, in
   chunks with a checkpoint after each, and try the insert again. Undelivered and clock-held
   readings are never deleted. The freed pages stay inside the store file, so whatever else
   filled the disk cannot take them back.
2. **Hold in memory**: still full, the reading waits in a bounded queue per device (the newest
   `queue_per_device` are kept; older ones are dropped and counted). `store_full` is logged
   once per episode at error level, and every connected device reports the condition in its
   status `reason`.
3. **Recover**: every `retry_s` seconds (and with each new reading) the queues are written
   again, oldest first per device; when all have landed, `store_full_recovered` is logged,
   the statuses clear, and publishing goes on. The reserve is re-created once there is room
   for it twice over.

A crash or stop during an episode loses what waits in memory (`store_full_lost` on a clean
stop). The driver's resume point is the newest *stored* reading, so a sensor that still holds
those readings in its own memory gives them back at the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import structlog

from gatewayd.errors import StoreError, StoreFull
from gatewayd.models import Reading
from gatewayd.store.file import Reserve, free_bytes
from gatewayd.store.store import FILE_CHECK_EVERY_S, Hold, Store

#: The status `reason` of a connected device while the store refuses writes.
FULL_REASON = "store full: readings wait in memory until disk space returns"


class Outcome(StrEnum):
    """What happened to a reading handed to `Intake.put`."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    QUEUED = "queued"


@dataclass(frozen=True, slots=True)
class FullDiskOptions:
    """Limits of the disk-full handling (the defaults are the production values)."""

    #: Bytes of the reserve file beside the store (0: none).
    reserve_bytes: int = 1 << 20
    #: On a full disk, delivered readings this much older than the newest one are deleted.
    emergency_retention: timedelta = timedelta(days=14)
    #: Readings kept in memory per device while the disk is full (~3.5 days at 5 min).
    queue_per_device: int = 1000
    #: Seconds between attempts to write what waits in memory.
    retry_s: float = 5.0
    #: Readings deleted per transaction by the emergency prune.
    chunk: int = 500


Landed = Callable[[Reading, Hold | None], None]


class Intake:
    """Stores readings; holds them in memory while the disk is full and writes them later."""

    def __init__(
        self,
        store: Store,
        options: FullDiskOptions | None = None,
        *,
        on_stored: Landed | None = None,
        on_full: Callable[[bool], None] | None = None,
    ) -> None:
        self.store = store
        self.options = opts = options or FullDiskOptions()
        self.reserve = Reserve(store.path, opts.reserve_bytes)
        #: Called for every reading newly stored (not for duplicates), in order per device.
        self.on_stored: Landed = on_stored or (lambda _reading, _hold: None)
        #: Called with True when an episode begins and False when it ends.
        self.on_full = on_full or (lambda _full: None)
        self.log = structlog.get_logger().bind(component="store")
        #: Whether the store refuses writes (an episode is on).
        self.full = False
        self.episodes = 0
        #: Readings deleted by emergency prunes since start.
        self.reclaimed = 0
        #: Readings dropped from full memory queues in the current episode, per device.
        self.dropped: Counter[str] = Counter()
        self._queues: dict[str, deque[tuple[Reading, Hold | None]]] = {}
        self._since = 0.0
        self._landed = 0

    def queued(self) -> int:
        """Readings waiting in memory."""
        return sum(len(q) for q in self._queues.values())

    async def accept(self, reading: Reading, hold: Hold | None = None) -> Outcome:
        """`put`, with the commit made by the store's writer thread (in a group with the other
        devices' readings) while the event loop goes on; returns once the reading is on disk.
        A refusal (a full disk) goes the way of `put`."""
        self.store.ensure_file(every=FILE_CHECK_EVERY_S)
        if not self.full:
            try:
                new = await self.store.add_soon(reading, hold=hold)
            except StoreFull:
                pass
            else:
                if new is None:
                    return Outcome.DUPLICATE
                self.on_stored(reading, hold)
                return Outcome.STORED
        return self._put(reading, hold)

    def put(self, reading: Reading, hold: Hold | None = None) -> Outcome:
        """Store `reading` (`on_stored` is called when it lands, now or later), committing on
        the caller's thread."""
        self.store.ensure_file(every=FILE_CHECK_EVERY_S)  # not for long into a deleted file
        return self._put(reading, hold)

    def _put(self, reading: Reading, hold: Hold | None) -> Outcome:
        """`put` once the store's file is known to be the open one."""
        if self.full:
            self._enqueue(reading, hold)
            self.flush()
            return Outcome.QUEUED
        try:
            return self._add(reading, hold)
        except StoreFull as exc:
            refused = exc
        if self._make_room():
            try:
                return self._add(reading, hold)
            except StoreFull as exc:
                refused = exc
        self._begin(refused)
        self._enqueue(reading, hold)
        return Outcome.QUEUED

    def flush(self) -> bool:
        """Write what waits in memory, oldest first per device; True when nothing is left."""
        for queue in self._queues.values():
            while queue:
                reading, hold = queue[0]
                try:
                    new = self.store.add(reading, hold=hold)
                except StoreFull:
                    return False
                queue.popleft()
                self._landed += 1
                if new:
                    self.on_stored(reading, hold)
        if self.full:
            self._end()
        return True

    async def run(self) -> None:
        """Keep the reserve; retry what waits in memory every `retry_s` s, until cancelled."""
        self.reserve.ensure()
        while True:
            await asyncio.sleep(self.options.retry_s)
            self.store.ensure_file()  # also while no reading comes
            if self.full:
                self.flush()
            elif not self.reserve.held:
                self.reserve.ensure()

    def close(self) -> None:
        """On stop: a last attempt to write what waits in memory; report what could not be."""
        if not self.full or self.flush():
            return
        self.log.error(
            "store_full_lost",
            count=self.queued(),
            devices={device: len(q) for device, q in self._queues.items() if q},
            note="never stored; a sensor that still holds them gives them back at the next "
            "start (backfill from the newest stored reading)",
        )

    # -- internals --------------------------------------------------------------------------

    def _add(self, reading: Reading, hold: Hold | None) -> Outcome:
        if not self.store.add(reading, hold=hold):
            return Outcome.DUPLICATE
        self.on_stored(reading, hold)
        return Outcome.STORED

    def _enqueue(self, reading: Reading, hold: Hold | None) -> None:
        queue = self._queues.get(reading.device)
        if queue is None:
            queue = self._queues[reading.device] = deque(maxlen=self.options.queue_per_device)
        if len(queue) == queue.maxlen:
            if not self.dropped[reading.device]:
                self.log.warning(
                    "store_full_dropping",
                    device=reading.device,
                    kept=queue.maxlen,
                    note="the oldest reading waiting in memory is dropped for each new one",
                )
            self.dropped[reading.device] += 1
        queue.append((reading, hold))

    def _make_room(self) -> bool:
        """Give back the reserve and prune old delivered history; True if anything was freed."""
        released = self.reserve.release()
        deleted = self._emergency_prune()
        if released or deleted:
            self.log.warning(
                "store_space_reclaimed",
                reserve_released=released,
                deleted=deleted,
                older_than=str(self.options.emergency_retention),
            )
        return released or deleted > 0

    def _emergency_prune(self) -> int:
        """Delete delivered readings older than the newest minus `emergency_retention`."""
        try:
            newest = self.store.newest_time_ms()
        except StoreError:
            return 0
        if newest is None:
            return 0
        cutoff = int(newest) - int(self.options.emergency_retention.total_seconds() * 1000)
        deleted = 0
        while True:
            try:
                count = self.store.delete_delivered(cutoff, self.options.chunk)
            except StoreFull:
                break
            deleted += count
            with contextlib.suppress(StoreError):
                self.store.checkpoint()
            if count < self.options.chunk:
                break
        self.reclaimed += deleted
        return deleted

    def _begin(self, exc: StoreFull) -> None:
        self.full = True
        self.episodes += 1
        self._since = time.monotonic()
        self._landed = 0
        self.dropped.clear()
        try:
            free: int | None = free_bytes(self.store.path.parent)
        except OSError:
            free = None
        self.log.error(
            "store_full",
            path=str(self.store.path),
            error=str(exc),
            free_bytes=free,
            action=f"readings wait in memory (up to {self.options.queue_per_device} per "
            f"device) and are written when space returns; retry every {self.options.retry_s} s",
        )
        self.on_full(True)

    def _end(self) -> None:
        self.full = False
        self.log.info(
            "store_full_recovered",
            stored=self._landed,
            dropped=sum(self.dropped.values()),
            lasted_s=round(time.monotonic() - self._since, 1),
        )
        self.on_full(False)
