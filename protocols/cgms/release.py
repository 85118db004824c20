"""When a CGMS record may go to the store: what is released always forms a gap-free prefix.

Pure logic over the events of `protocols.cgms.session.CgmsCollector`: no I/O, no clock, no
collector. A driver feeds it every batch of events with the communication interval in force
(`events(batch, interval_min=...)`), calls `idle()` when nothing is pending, takes what
`ready` holds to the store, and asks the collector for the reports in `asks`.

The store resumes a new connection after the NEWEST stored reading, so a reading released
before an older one is complete would turn a link drop into a permanent hole. `ReleaseRule`
therefore releases a record only when every older record of its session that the sensor holds
has been released (or passed over as unreadable, below):

* live records that arrive before setup is done (`Ready`) are left to the first report (their
  session may not be settled yet: a SOCP start may just have begun a new one);
* a record of a RACP report (its range comes on `ReportStarted`) goes out at once when it
  directly follows the last released one (offset + interval), so an incremental backfill makes
  progress even if the link drops midway;
* everything else (a live record, which may have been in flight when the report began; a record
  after a hole; every record of a report of all records, whose first record is unknown: a live
  one in flight may come first) is held while a report runs or is queued (after `Ready`, a
  `GapDetected`, a damaged live record, a `SessionChanged`) and released, oldest first, once
  nothing is pending (`idle()`);
* held records of a sensor session that ended are released when the new one is seen (its
  memory is gone: they are all there will be);
* a report that timed out sets `failure`: the driver ends the connection and the next one
  resumes from what was released. Releasing never repeats a (session, offset).

Damaged records (E2E-CRC mismatch, malformed: `RecordRejected`, which has no trustworthy
offset) follow one policy, the `DamagePolicy` given (a gatewayd `DeviceContext`). A damaged
record in a report is named by its position: (session, offset of the intact record before it in
the sensor's memory, how many damaged ones came between) - the same on every read and every
connection. The records of one report come in offset order, but a live record that was in
flight when the sensor began the report may come first, so a damaged record's position is
settled only when the next intact record shows that the one before it was in order (an intact
record at or before it means that what came so far was in flight). While the policy says "ask
again", the rest of the report is dropped; when the report ends, what it brought before that
record goes out (if the report began right after the released prefix, or with the oldest
record) and the rest is asked for again (`asks`) after the last released record. Once the
policy passes the record over, the records after it go out as if it had been released: the
next intact record is expected one interval further per record passed over. A damaged live
record is only counted (`drop_packet`); the collector fetches its interval from the memory at
once, where the same policy applies. Records that are intact but not publishable (`convert`
gives None) are passed over the same way, without a retry.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from protocols.cgms.events import (
    BackfillComplete,
    CgmsEvent,
    GapDetected,
    Measurement,
    Ready,
    ReportStarted,
    SessionChanged,
)
from protocols.gatt.session import ProcedureFailed, RecordRejected

__all__ = ["DamagePolicy", "Placed", "Position", "ReleaseRule"]

#: Label of the collector's RACP report request (`ProcedureFailed.request.label`).
_REPORT = "racp_report"

#: Where a damaged record sits: ("cgms", session, offset of the intact record before it, how
#: many damaged records came between).
Position = tuple[str, str | None, int | None, int]


class Placed(Protocol):
    """What the rule needs of a reading: its session, its offset in it, and its time."""

    @property
    def session(self) -> str: ...

    @property
    def seq(self) -> int: ...

    @property
    def time(self) -> datetime: ...


class DamagePolicy(Protocol):
    """What to do with damaged records (gatewayd's `DeviceContext` is one)."""

    def drop_packet(self, data: bytes, reason: str) -> None:
        """Count a damaged packet that is not asked for again."""
        ...

    def record_damaged(self, key: Hashable, data: bytes, *, position: str, reason: str) -> bool:
        """One damaged arrival of the record at `key`: True while it should be asked again."""
        ...

    def record_recovered(self, key: Hashable) -> None:
        """The record at `key` arrived intact after arriving damaged."""
        ...


R = TypeVar("R", bound=Placed)


@dataclass(slots=True)
class _Report:
    """One running RACP report and where its records stand."""

    first: int | None
    last: int | None  # None: open-ended
    session: str | None
    #: It starts right after the released prefix (or is a report of all records), so what it
    #: brings up to a damaged record is complete.
    continuous: bool
    prev: int | None = None  # offset of the last intact record of this report
    run: int = 0  # damaged records since `prev`
    skipped: int = 0  # records passed over since the last released one (bridged by the chain)
    chained: bool = True  # every record so far went out in order (or was passed over)
    blocked: bool = False  # a damaged record is asked for again: the rest comes again too
    block_after: int | None = None  # offset of the intact record before the first such one
    #: The position of the intact record at `prev`, and the damaged arrivals after it (data,
    #: reason), not yet put to the policy: they are known to be in place only once the next
    #: intact record shows that `prev` was in order (see `ReleaseRule._in_flight_before`).
    intact: Position | None = None
    unjudged: list[tuple[bytes, str]] = field(default_factory=list)

    def in_range(self, offset: int) -> bool:
        return self.last is None or offset <= self.last

    def start(self) -> int | None:
        """The anchor of the report's first record: the offset before its range, if known."""
        return None if self.first is None else self.first - 1

    def position(self) -> Position:
        """The key of the record arriving now (stable across reads and connections)."""
        anchor = self.start() if self.prev is None else self.prev
        return ("cgms", self.session, anchor, self.run)


def describe(position: Position) -> str:
    """`position` in words, for the log line of a record passed over."""
    _, session, anchor, run = position
    where = "the oldest record" if anchor is None else f"the record after offset {anchor}"
    more = f" (+{run} damaged before it)" if run else ""
    return f"{where}{more} of session {session}"


class ReleaseRule(Generic[R]):
    """Readings in a safe order (see the module docstring); `ready` holds what may go out."""

    def __init__(
        self,
        convert: Callable[[Measurement], R | None],
        session_key: Callable[[datetime], str],
        damage: DamagePolicy,
        *,
        released: tuple[str, int] | None = None,
    ) -> None:
        """`convert` makes a record's reading (None: not publishable); `session_key` names the
        session of a session start as readings do; `damage` judges damaged records; `released`
        is the (session, seq) of the newest reading already stored for this sensor."""
        #: Readings that may go to the store now, oldest first.
        self.ready: deque[R] = deque()
        #: Reports (first, last offset; None: open end) to ask the collector for.
        self.asks: deque[tuple[int | None, int | None]] = deque()
        #: Why the connection should end (a report that timed out), else None.
        self.failure: str | None = None
        self._convert = convert
        self._key = session_key
        self._damage = damage
        self._last: dict[str, int] = dict([released]) if released else {}
        self._held: dict[tuple[str, int], R] = {}
        self._holding = True
        self._setup_done = False
        self._report: _Report | None = None
        self._interval: int | None = None

    def events(self, events: Sequence[CgmsEvent], *, interval_min: int | None) -> None:
        """Take what one `receive()` / `timeout()` returned; `interval_min` is the collector's
        communication interval now (None: not known yet)."""
        self._interval = interval_min
        if any(isinstance(e, (GapDetected, Ready)) for e in events):
            self._holding = True  # a backfill is queued: hold what this batch brings
        for event in events:
            if isinstance(event, Ready):
                self._setup_done = True
            elif isinstance(event, ReportStarted):
                self._started(event)
            elif isinstance(event, Measurement):
                self._measurement(event)
            elif isinstance(event, RecordRejected):
                self._rejected(event)
            elif isinstance(event, BackfillComplete):
                self._complete()
            elif isinstance(event, ProcedureFailed) and event.request.label == _REPORT:
                if self._report is not None:
                    self._settle(self._report)  # counted: the next read asks for them again
                self._report = None
                if event.reason == "timeout":
                    self.failure = "the sensor stopped answering a RACP report"
            elif isinstance(event, SessionChanged):
                self._holding = True
                if event.previous is not None:
                    self._release_session(self._key(event.previous))

    def idle(self) -> None:
        """Nothing is pending or queued: release what is held."""
        if not self._holding or self._report is not None or not self._setup_done:
            return
        self._holding = False
        held = sorted(self._held.values(), key=lambda r: (r.time, r.seq))
        self._held.clear()
        for reading in held:
            self._release(reading)

    def _started(self, event: ReportStarted) -> None:
        self._holding = True
        start = event.session_start
        session = self._key(start) if start is not None else None
        last = self._last.get(session) if session is not None else None
        first = event.first
        continuous = first is None or (last is not None and first <= last + 1)
        self._report = _Report(first, event.last, session, continuous)

    def _measurement(self, event: Measurement) -> None:
        if not event.backfill and not self._setup_done:
            return  # before setup ends: the first report (open-ended) brings it, placed right
        reading = self._convert(event)
        report = self._report
        if event.backfill and report is not None and report.in_range(event.time_offset):
            self._reported(report, event.time_offset, reading)
            return
        if reading is None:
            return
        if self._holding or report is not None:
            self._held[(reading.session, reading.seq)] = reading
        else:
            self._release(reading)

    def _reported(self, report: _Report, offset: int, reading: R | None) -> None:
        """An intact record of the running report."""
        if report.prev is not None and offset <= report.prev:
            self._in_flight_before(report)
        self._settle(report)
        report.intact = report.position()  # it may have arrived damaged before
        report.prev, report.run = offset, 0
        if report.blocked:
            return  # asked for again once the report ends
        if reading is None:  # intact but not publishable (counted by `convert`): pass over
            report.skipped += 1
            return
        last = self._last.get(reading.session)
        if last is not None and offset <= last:
            return  # released before (a resumed or repeated report)
        # (the first record of a report of all records may be a live one that was in flight)
        step = self._interval
        follows = (
            last is not None and step is not None and offset == last + step * (1 + report.skipped)
        )
        if report.chained and follows:
            report.skipped = 0
            self._release(reading)
        else:
            report.chained = False
            self._held[(reading.session, reading.seq)] = reading

    @staticmethod
    def _in_flight_before(report: _Report) -> None:
        """An intact record at or before `prev`: what the report brought so far was in flight
        when the sensor began it (a live record sent before it read the request), since the
        records of one report come in offset order. The report proper begins here: positions
        count from the report's start again, and the damaged arrivals not judged yet are taken
        as its first records (had one been in flight instead, that costs one more read, never
        a record). A block decided after a record in flight stops the release at the start."""
        report.prev, report.run, report.skipped, report.intact = None, 0, 0, None
        if report.blocked:
            report.block_after = report.start()

    def _rejected(self, event: RecordRejected) -> None:
        report = self._report
        if report is None:  # live: the collector fetches its interval from the memory
            self._damage.drop_packet(event.data, event.reason)
            self._holding = True
            return
        report.unjudged.append((event.data, event.reason))

    def _settle(self, report: _Report) -> None:
        """`prev` is in place: its record is intact there, and the damaged arrivals after it go
        to the policy, each at its position."""
        if report.intact is not None:
            self._damage.record_recovered(report.intact)
            report.intact = None
        for data, reason in report.unjudged:
            key = report.position()
            report.run += 1
            position = describe(key)
            if self._damage.record_damaged(key, data, position=position, reason=reason):
                if not report.blocked:
                    report.blocked, report.block_after = True, key[2]
            elif not report.blocked:
                report.skipped += 1
        report.unjudged.clear()

    def _complete(self) -> None:
        report, self._report = self._report, None
        if report is not None:
            self._settle(report)
        if report is None or not report.blocked:
            return
        if report.continuous and report.block_after is not None:  # what precedes it is whole
            low, high = report.first or 0, report.block_after
            for key in sorted(k for k in self._held if k[0] == report.session):
                if low <= key[1] <= high:
                    self._release(self._held.pop(key))
        last = self._last.get(report.session) if report.session is not None else None
        first = report.first if last is None else last + 1
        self.asks.append((first, report.last))

    def _release(self, reading: R) -> None:
        if reading.seq > self._last.get(reading.session, -1):
            self._last[reading.session] = reading.seq
            self.ready.append(reading)

    def _release_session(self, session: str) -> None:
        """A new sensor session: what is held of the previous one will never be backfilled
        (the sensor's memory now holds the new one), so it goes out as it is."""
        for key in sorted(k for k in self._held if k[0] == session):
            self._release(self._held.pop(key))
