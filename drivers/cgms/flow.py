"""When a record may go to the store: what is handed on always forms a gap-free prefix.

The supervisor resumes a new connection after the NEWEST stored reading, so a reading handed on
before an older one is complete would turn a link drop into a permanent hole. `RecordFlow`
therefore releases a record only when every older record of its session that the sensor holds
has been released (or is released with it):

* live records that arrive before setup is done are left to the first report (their session
  may not be settled yet: a SOCP start may just have begun a new one);
* a record of a RACP report that directly follows the last released one (offset + interval)
  goes out at once, so an incremental backfill makes progress even if the link drops midway;
* everything else (a live record, which may have been in flight when the report began; a record
  after a hole; every record of a report of all records, whose first record is unknown) is held
  while a report runs or is queued (after `Ready`, a `GapDetected`, a `SessionChanged`) and
  released, oldest first, once nothing is pending (`idle()`);
* a damaged record inside a report (CRC mismatch, malformed) stops the release of that report;
  when it ends, the rest is asked for again after the last released record (`request_backfill`);
* held records of a sensor session that ended are released when the new one is seen (its
  memory is gone: they are all there will be);
* a report that timed out sets `failure`: the driver ends the connection and the next one
  resumes from what was released. Releasing never repeats a (session, offset).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from drivers.cgms.convert import session_key
from gatewayd.models import Reading
from protocols.cgms_session import (
    BackfillComplete,
    CgmsCollector,
    CgmsEvent,
    GapDetected,
    Measurement,
    ProcedureFailed,
    Ready,
    RecordRejected,
    SessionChanged,
)
from protocols.gatt import Request
from protocols.racp import RacpCommand, RacpOperator, parse_racp

__all__ = ["MAX_REFETCH", "RecordFlow"]

#: Damaged reports asked for again per connection before the connection is given up.
MAX_REFETCH = 5
_REPORT = "racp_report"


@dataclass(slots=True)
class _Report:
    first: int | None
    last: int | None  # None: open-ended
    damaged: bool = False


class RecordFlow:
    """Readings in a safe order (see the module docstring); `ready` holds what may go out."""

    def __init__(
        self,
        collector: CgmsCollector,
        convert: Callable[[Measurement], Reading | None],
        *,
        released: tuple[str, int] | None = None,
    ) -> None:
        """`convert` makes a record's reading (None: not publishable); `released` is the
        (session, seq) of the newest reading already stored for this sensor."""
        self.ready: deque[Reading] = deque()
        #: Why the connection should end (a report that timed out), else None.
        self.failure: str | None = None
        self._collector = collector
        self._convert = convert
        self._last: dict[str, int] = dict([released]) if released else {}
        self._held: dict[tuple[str, int], Reading] = {}
        self._holding = True
        self._report: _Report | None = None
        self._refetched = 0

    def sent(self, request: Request) -> None:
        """The driver performs `request` now."""
        if request.label != _REPORT:
            return
        self._holding = True
        command = parse_racp(request.data)  # the collector's own, valid request
        if not isinstance(command, RacpCommand):  # pragma: no cover - it only sends commands
            return
        values = [v for v in command.values if isinstance(v, int)]
        ranged = command.operator == RacpOperator.WITHIN_RANGE
        self._report = _Report(values[0] if values else None, values[1] if ranged else None)

    def events(self, events: Sequence[CgmsEvent]) -> None:
        """Take what one `receive()` / `timeout()` returned."""
        if any(isinstance(e, (GapDetected, Ready)) for e in events):
            self._holding = True  # a backfill is queued: hold what this batch brings
        for event in events:
            if isinstance(event, Measurement):
                self._measurement(event)
            elif isinstance(event, RecordRejected) and self._report is not None:
                self._report.damaged = True
            elif isinstance(event, BackfillComplete):
                self._complete()
            elif isinstance(event, ProcedureFailed) and event.request.label == _REPORT:
                self._report = None
                if event.reason == "timeout":
                    self.failure = "the sensor stopped answering a RACP report"
            elif isinstance(event, SessionChanged):
                self._holding = True
                if event.previous is not None:
                    self._release_session(session_key(event.previous))

    def idle(self) -> None:
        """Nothing is pending or queued: release what is held."""
        if not self._holding or self._report is not None or not self._collector.ready:
            return
        self._holding = False
        held = sorted(self._held.values(), key=lambda r: (r.time, r.seq))
        self._held.clear()
        for reading in held:
            self._release(reading)

    def _measurement(self, event: Measurement) -> None:
        if not event.backfill and not self._collector.ready:
            return  # before setup ends: the first report (open-ended) brings it, placed right
        reading = self._convert(event)
        if reading is None:
            return
        report, offset = self._report, event.time_offset
        if event.backfill and report is not None:
            in_range = report.last is None or offset <= report.last
            if report.damaged and in_range:
                return  # asked for again once the report ends
            step, last = self._collector.interval_min, self._last.get(reading.session)
            if not report.damaged and step and last is not None and offset == last + step:
                self._release(reading)
                return
        if self._holding or report is not None:
            self._held[(reading.session, reading.seq)] = reading
        else:
            self._release(reading)

    def _complete(self) -> None:
        report, self._report = self._report, None
        if report is None or not report.damaged:
            return
        self._refetched += 1
        if self._refetched > MAX_REFETCH:
            self.failure = "records keep arriving damaged"
            return
        start = self._collector.session_start
        last = self._last.get(session_key(start)) if start is not None else None
        first = report.first if last is None else last + 1
        self._collector.request_backfill(first, report.last)

    def _release(self, reading: Reading) -> None:
        if reading.seq > self._last.get(reading.session, -1):
            self._last[reading.session] = reading.seq
            self.ready.append(reading)

    def _release_session(self, session: str) -> None:
        """A new sensor session: what is held of the previous one will never be backfilled
        (the sensor's memory now holds the new one), so it goes out as it is."""
        for key in sorted(k for k in self._held if k[0] == session):
            self._release(self._held.pop(key))
