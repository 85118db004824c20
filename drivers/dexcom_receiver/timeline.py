"""The receiver's clock anchored to the hub's: the session, `seq` and `time` of each EGV record.

No I/O and no clock of its own: the session hands it each ReadSystemTime answer with the hub's
clock read around the request, and the records of the pages it read, in storage order.

Time. A receiver's system clock is set at the factory and never by the user: it can be hours or
months off, and it restarts at its epoch (2009-01-01) after a reset. Every poll measures
``offset = receiver_now - hub_now`` (`hub_now` the middle of the request) and dates a record
``time = system_time - offset``, i.e. ``hub_now - (receiver_now - system_time)``, the way the
Nightscout uploader anchors records to the phone's clock (protocols.md §6.5).

Ids. `seq` is the record's system_time, `session` is "egv": neither depends on the offset, so a
record keeps its id however often the offset is measured again.

Jumps. An offset that moves by more than `JUMP_TOLERANCE` from the one measured before (the
previous poll, or the one the newest stored reading was dated with) is a jump of the receiver's
clock. The records of that poll not yet delivered are split where the jump happened in storage
order: the records before it are dated with the old offset, the ones after with the new.

* Forward (the clock moved ahead): system times keep increasing, ids stay unique; the session is
  unchanged. The split is the smallest gap in system time larger than the jump (less the
  tolerance); with none, the records are all from before the jump unless the newest of them,
  dated with the old offset, would be in the future.
* Backward (reset to the epoch, or moved back): records stored after it may carry system times
  the hub already delivered. Once the records show it (the clock now reads at or before the
  newest system time delivered, a record falls back by more than the tolerance after the one
  before it, or a record is ahead of the receiver's clock), the records stored after it get a
  new session, ``egv-YYYYMMDDHHMM``: the minute, by the hub's clock, at which the receiver's
  clock read its epoch (for a reset to the epoch: when the reset happened), with "-2", "-3"...
  when that is the session's own name (the clock went back to an offset it had, or was reset
  twice in a minute): records of two eras never share a session. The split is after
  the last record that is ahead of the receiver's clock or is followed by such a fall.

The records a poll delivers go out in time order within each session (a record the receiver
stored late, after newer ones of the same poll, is not delivered out of order). Delivered
records are never yielded again: the cursor is the record's position in the database (its page
header's first index plus its place in the page), not its time, so records stored after it with
smaller system times (a clock that went back, records stored out of order) are still read once.
A new connection finds its place again from the newest stored reading (the same system time in
the same database); when that record is gone (the database was erased or wrapped past it), from
its time: everything dated after it. A database whose newest position falls below the cursor was
erased: the same rule by time. A record ahead of the receiver's clock that no measured jump
explains was stamped before a reset the hub never saw (first contact after it): its time cannot
be known, it is passed over and counted (`unanchored`, logged as `egv_ahead_of_clock`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from protocols.dexcom_receiver.commands import EPOCH, receiver_time
from protocols.dexcom_receiver.records import EgvRecord

#: The session of every reading while the receiver's clock never went back.
SESSION = "egv"
#: A change of the clock offset beyond this is a jump (seconds): far above the jitter of one
#: request (well under 1 s) and any drift of a receiver's quartz between two polls.
JUMP_TOLERANCE = 120.0
#: Delivered (session, seq) remembered to drop a record stored twice (a few days of records).
_RECENT = 2048


@dataclass(frozen=True, slots=True)
class Stored:
    """An EGV record where the receiver keeps it: page number and database position."""

    page: int
    position: int
    record: EgvRecord


@dataclass(frozen=True, slots=True)
class Dated:
    """A record to deliver: its session and its time on the hub's clock."""

    stored: Stored
    session: str
    time: datetime


@dataclass(frozen=True, slots=True)
class Jump:
    """A jump of the receiver's clock, as measured (seconds, new offset minus old)."""

    seconds: float
    previous: float


def era_session(offset: float) -> str:
    """The session of records stamped after the clock went back, `offset` being the new one."""
    return f"{SESSION}-{EPOCH - timedelta(seconds=offset):%Y%m%d%H%M}"


def is_egv_session(session: str) -> bool:
    """Whether `session` is one this driver gives readings."""
    return session == SESSION or session.startswith(SESSION + "-")


class Timeline:
    """Where delivery stands in one receiver's database, and its clock's offset."""

    def __init__(
        self,
        *,
        session: str = SESSION,
        newest: int | None = None,
        newest_time: datetime | None = None,
        offset: float | None = None,
        backfill: timedelta,
    ) -> None:
        #: The session of records stamped by the receiver's current clock.
        self.session = session
        #: Newest system time delivered in `session`, and the newest time delivered.
        self.newest, self.newest_time = newest, newest_time
        #: The receiver clock minus the hub clock (s), as last measured (or as the newest
        #: stored reading was dated with).
        self.offset = offset
        #: Database position of the newest record handled, and its page (None: find it).
        self.position: int | None = None
        self.page: int | None = None
        #: Records passed over for being ahead of the receiver's clock (see the module).
        self.unanchored = 0
        self._backfill = backfill
        self._receiver_now = 0
        self._hub = EPOCH
        self._since = EPOCH
        self._jump: Jump | None = None
        self._recent: dict[tuple[str, int], None] = {}

    # -- measuring -------------------------------------------------------------------------------

    def measure(self, receiver_now: int, hub_before: datetime, hub_after: datetime) -> Jump | None:
        """One ReadSystemTime answer and the hub's clock before and after the request: the
        new offset (`self.offset`), and the jump when the clock jumped."""
        hub = hub_before + (hub_after - hub_before) / 2
        offset = (receiver_time(receiver_now) - hub).total_seconds()
        jump = None
        if self.offset is not None and abs(offset - self.offset) > JUMP_TOLERANCE:
            jump = Jump(offset - self.offset, self.offset)
            if self._jump is None:  # a jump not placed yet keeps the offset before it
                self._jump = jump
        self.offset, self._receiver_now, self._hub = offset, receiver_now, hub
        fresh = self.newest_time is None or self.newest_time > hub + timedelta(
            seconds=JUMP_TOLERANCE
        )  # nothing stored yet, or a stored time in the future: the first-contact window
        self._since = hub - self._backfill if fresh else self.newest_time or hub
        return jump

    def date(self, system_time: int, offset: float | None = None) -> datetime:
        """The hub time of a record stamped `system_time` (with the current offset)."""
        used = self.offset if offset is None else offset
        return receiver_time(system_time) - timedelta(seconds=used or 0.0)

    def _ahead(self, record: EgvRecord) -> bool:
        return record.system_time > self._receiver_now + JUMP_TOLERANCE

    # -- reading pages ---------------------------------------------------------------------------

    def erased(self, page: int, position: int | None) -> bool:
        """Whether a database whose newest page is `page` (its newest record at `position`,
        when read) was erased since the last poll; then the cursor is found again by time."""
        if self.page is None or self.position is None:
            return False
        if page >= self.page and (position is None or position >= self.position):
            return False
        self.position = self.page = None
        return True

    def reaches(self, page: Sequence[Stored]) -> bool:
        """Whether the pages before `page` (storage order) hold nothing to deliver."""
        if not page:
            return False
        if self.position is not None:
            return page[0].position <= self.position
        if any(s.record.system_time == self.newest for s in page):
            return True
        times = [self.date(s.record.system_time) for s in page if not self._ahead(s.record)]
        return not times or max(times) <= self._since

    def wanted(self, stored: Sequence[Stored]) -> int:
        """The position from which the records read (storage order) are new."""
        if self.position is not None:
            return self.position + 1
        if self.newest is not None:
            hits = [s.position for s in stored if s.record.system_time == self.newest]
            if hits:
                return hits[-1] + 1
        for s in stored:
            if not self._ahead(s.record) and self.date(s.record.system_time) > self._since:
                return s.position
        return stored[-1].position + 1 if stored else 0

    def place(self, stored: Sequence[Stored], start: int) -> list[Dated]:
        """The records at `start` and after (storage order) that are new, dated, each once;
        the cursor moves past every record read."""
        pending = [s for s in stored if s.position >= start]
        if self.position is None:  # found by time: what the old clock stamped is left behind
            self.unanchored += sum(
                1 for s in stored if s.position < start and self._ahead(s.record)
            )
        jump, self._jump = self._jump, None
        split, new_era = (0, False) if jump is None else self._split(pending, jump)
        out: list[Dated] = []
        for i, s in enumerate(pending):
            if i == split and new_era:
                self._new_era()
            if i >= split and self._ahead(s.record):
                self.unanchored += 1
                continue
            offset = jump.previous if jump is not None and i < split else self.offset
            dated = Dated(s, self.session, self.date(s.record.system_time, offset))
            if self._deliver(dated):
                out.append(dated)
        if new_era and split >= len(pending):
            self._new_era()
        if stored:
            last = max(stored, key=lambda s: s.position)
            if self.position is None or last.position >= self.position:
                self.position, self.page = last.position, last.page
        # a record stored late (after newer ones) goes out in time order within its session
        sessions = {session: n for n, session in enumerate(dict.fromkeys(d.session for d in out))}
        out.sort(key=lambda d: (sessions[d.session], d.stored.record.system_time))
        return out

    def _split(self, pending: Sequence[Stored], jump: Jump) -> tuple[int, bool]:
        """Where, in `pending`, the records stamped after `jump` start; and whether they start
        a new session (see the module)."""
        times = [s.record.system_time for s in pending]
        before = [self.newest, *times][: len(times)]
        if jump.seconds > 0:
            # The jump's gap is a step plus the jump; of the gaps that large, the smallest (a
            # longer one is the receiver without a sensor, or switched off, as well).
            gaps = {
                i: t - last
                for i, (t, last) in enumerate(zip(times, before, strict=True))
                if last is not None and t - last > jump.seconds - JUMP_TOLERANCE
            }
            if gaps:
                return min(gaps, key=lambda i: gaps[i]), False
            late = bool(times) and self.date(times[-1], jump.previous) > self._hub
            return (0 if late else len(times)), False
        breaks = [i + 1 for i, s in enumerate(pending) if self._ahead(s.record)]
        breaks += [
            i
            for i, (t, last) in enumerate(zip(times, before, strict=True))
            if last is not None and t < last - JUMP_TOLERANCE
        ]
        behind = self.newest is not None and self._receiver_now <= self.newest + JUMP_TOLERANCE
        return max(breaks, default=0), bool(breaks) or behind

    def _new_era(self) -> None:
        assert self.offset is not None  # noqa: S101 - measured before any record is placed
        session = era_session(self.offset)
        if self.session.startswith(session):  # back to the same offset, or reset in the minute
            tail = self.session.removeprefix(session).removeprefix("-")
            session += f"-{int(tail) + 1 if tail.isdigit() else 2}"
        self.session, self.newest = session, None

    def _deliver(self, dated: Dated) -> bool:
        key = (dated.session, dated.stored.record.system_time)
        if key in self._recent:
            return False  # the same record stored twice
        self._recent[key] = None
        if len(self._recent) > _RECENT:
            del self._recent[next(iter(self._recent))]
        if dated.session == self.session:
            seq = dated.stored.record.system_time
            self.newest = seq if self.newest is None else max(self.newest, seq)
        if self.newest_time is None or dated.time > self.newest_time:
            self.newest_time = dated.time
        return True
