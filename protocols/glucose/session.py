"""Sans-I/O Glucose Service collector (fingerstick meters, GLS 0x1808; protocols.md §1.13).

Same shape as `protocols.cgms.session` (h11 style; see there for the driver loop)::

    session = GlucoseCollector(backfill_from=last_sequence + 1, tz=meter_zone)
    # after bonding: notify on GLUCOSE_MEASUREMENT (+ GLUCOSE_MEASUREMENT_CONTEXT),
    # indicate on RECORD_ACCESS_CONTROL_POINT; then loop over next_request()/receive()
    events = session.receive(characteristic, data)     # reads, notifications, indications
    events = session.timeout()                          # the awaited answer did not come

Procedure: read Glucose Feature -> RACP "report stored records" with sequence number
>= `backfill_from` (`01 03 01 <seq LE16>`; `01 01` when None) -> measurements and contexts ->
RACP response -> `TransferComplete`. A measurement whose flag b4 says "context follows" is held
until the context with the same sequence number arrives, and then emitted as one `GlucoseReading`
with both; the next measurement, the end of the transfer or `timeout()` releases a held one
without context (at most one is ever held). Each step is tried once; failures become events.
Only a characteristic that is not part of GLS raises (`ProtocolError`).

Events (deriving from `protocols.gatt.session.SessionEvent`):
`Ready(features)` (None when the read failed);
`GlucoseReading(measurement, context, time, backfill)` (`time` = base time + offset read in the
collector's `tz`, None without `tz` or for an invalid date; `backfill` = during a transfer);
`TransferComplete(count, first_sequence)` (success or "no records found");
`RecordCount(count)` (answer to `request_count()`); `UnmatchedContext(context)`;
shared with CGMS: `RecordRejected(reason, data)`, `ProcedureFailed(request, reason, code, data)`,
`UnexpectedData(characteristic, data)`. Commands: `request_records(first_sequence)`,
`request_count(first_sequence)`. State: `features`, `last_sequence` (highest seen), `ready`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, tzinfo

from protocols.errors import ProtocolError
from protocols.gatt.collector import CollectorBase
from protocols.gatt.racp import (
    RECORD_ACCESS_CONTROL_POINT,
    RacpCommand,
    RacpNumberOfRecords,
    RacpOperator,
    RacpResponse,
    RacpResponseCode,
    parse_racp,
    report_number_of_records,
    report_records,
)
from protocols.gatt.session import (
    ProcedureFailed,
    RecordRejected,
    Request,
    RequestKind,
    SessionEvent,
)
from protocols.gatt.uuids import normalize_uuid
from protocols.glucose.context import GlucoseContext
from protocols.glucose.feature import GlucoseFeature, parse_feature
from protocols.glucose.measurement import GlucoseMeasurement
from protocols.glucose.uuids import (
    GLUCOSE_FEATURE,
    GLUCOSE_MEASUREMENT,
    GLUCOSE_MEASUREMENT_CONTEXT,
)

__all__ = [
    "GlucoseCollector",
    "GlucoseReading",
    "Ready",
    "RecordCount",
    "TransferComplete",
    "UnmatchedContext",
    "count_records_from",
    "report_records_from",
]


def report_records_from(sequence_number: int) -> RacpCommand:
    """RACP "report stored records with sequence number >= n" (`01 03 01 <n LE16>`)."""
    return report_records(RacpOperator.GREATER_THAN_OR_EQUAL, sequence_number)


def count_records_from(sequence_number: int) -> RacpCommand:
    """RACP "report number of stored records with sequence number >= n"."""
    return report_number_of_records(RacpOperator.GREATER_THAN_OR_EQUAL, sequence_number)


@dataclass(frozen=True, slots=True)
class Ready(SessionEvent):
    """The Feature was read (or failed); the transfer comes next."""

    features: GlucoseFeature | None


@dataclass(frozen=True, slots=True)
class GlucoseReading(SessionEvent):
    """One measurement, with its context when the meter sent one."""

    measurement: GlucoseMeasurement
    context: GlucoseContext | None
    time: datetime | None
    backfill: bool

    @property
    def sequence_number(self) -> int:
        """The meter's record key."""
        return self.measurement.sequence_number


@dataclass(frozen=True, slots=True)
class TransferComplete(SessionEvent):
    """A RACP report ended (success or "no records found")."""

    count: int
    first_sequence: int | None


@dataclass(frozen=True, slots=True)
class RecordCount(SessionEvent):
    """Answer to "report number of stored records"."""

    count: int


@dataclass(frozen=True, slots=True)
class UnmatchedContext(SessionEvent):
    """A context whose measurement was not the one held (or none was held)."""

    context: GlucoseContext


class GlucoseCollector(CollectorBase):
    """The collector side of one Glucose Service connection (see the module docstring)."""

    def __init__(
        self, *, backfill_from: int | None = None, tz: tzinfo | None = None, transfer: bool = True
    ) -> None:
        """`backfill_from`: first sequence number wanted (None = all); `tz`: the zone the
        meter's clock runs in (None = no `time`); `transfer`: start the RACP report at once.
        """
        if backfill_from is not None and not 0 <= backfill_from <= 0xFFFF:
            raise ValueError(f"backfill_from {backfill_from} is not a uint16 sequence number")
        super().__init__()
        self.tz = tz
        self.features: GlucoseFeature | None = None
        self.last_sequence: int | None = None
        self._feature_read = False
        self._queue: deque[tuple[str, int | None]] = deque()
        if transfer:
            self._queue.append(("racp_report", backfill_from))
        self._transferring = False  # a RACP report is running
        self._first: int | None = None  # its first sequence number
        self._count = 0
        self._held: GlucoseMeasurement | None = None
        self._held_backfill = False

    def request_records(self, first_sequence: int | None = None) -> None:
        """Queue a RACP report of records with sequence >= `first_sequence` (None = all)."""
        self._queue.append(("racp_report", first_sequence))

    def request_count(self, first_sequence: int | None = None) -> None:
        """Queue a RACP "report number of stored records" (>= `first_sequence`; None = all)."""
        self._queue.append(("racp_count", first_sequence))

    def next_request(self) -> Request | None:
        """The next GATT operation to perform, or None (waiting for a response / idle)."""
        if self._awaiting is not None:
            return None
        if not self._feature_read:
            self._feature_read = True
            request = Request(RequestKind.READ, GLUCOSE_FEATURE, label="read_feature")
        elif self._ready and self._queue:
            label, first = self._queue.popleft()
            if label == "racp_report":
                command = report_records() if first is None else report_records_from(first)
                self._transferring, self._first, self._count = True, first, 0
            else:
                command = report_number_of_records() if first is None else count_records_from(first)
            request = Request(
                RequestKind.WRITE, RECORD_ACCESS_CONTROL_POINT, command.build(), True, label
            )
        else:
            return None
        self._awaiting = request
        return request

    def receive(self, characteristic: str | int, data: bytes) -> list[SessionEvent]:
        """Feed a read value, notification or indication; returns what it meant."""
        uuid = normalize_uuid(characteristic)
        data = bytes(data)
        events: list[SessionEvent] = []
        if uuid == GLUCOSE_MEASUREMENT:
            self._measurement(data, events)
        elif uuid == GLUCOSE_MEASUREMENT_CONTEXT:
            self._context(data, events)
        elif uuid == GLUCOSE_FEATURE:
            request = self._take("read_feature")
            try:
                self.features = parse_feature(data)
            except ProtocolError:
                events.append(ProcedureFailed(request or _FEATURE_READ, "malformed", None, data))
            self._check_ready(events)
        elif uuid == RECORD_ACCESS_CONTROL_POINT:
            self._racp(data, events)
        else:
            raise ProtocolError(f"not a Glucose Service characteristic: {uuid}", data)
        return events

    def timeout(self) -> list[SessionEvent]:
        """The awaited response did not come: fail that request and go on."""
        request = self._take_timed_out()
        if request is None:
            return []
        events: list[SessionEvent] = []
        if request.label == "racp_report":
            self._release(events)
            self._transferring = False
        events.append(ProcedureFailed(request, "timeout"))
        self._check_ready(events)
        return events

    def _check_ready(self, events: list[SessionEvent]) -> None:
        if not self._ready and self._feature_read and self._awaiting is None:
            self._ready = True
            events.append(Ready(self.features))

    def _release(self, events: list[SessionEvent], context: GlucoseContext | None = None) -> None:
        held, self._held = self._held, None
        if held is not None:
            time = held.time(self.tz) if self.tz is not None else None
            events.append(GlucoseReading(held, context, time, self._held_backfill))

    def _measurement(self, data: bytes, events: list[SessionEvent]) -> None:
        try:
            measurement = GlucoseMeasurement.parse(data)
        except ProtocolError:
            events.append(RecordRejected("malformed", data))
            return
        self._release(events)
        backfill = self._transferring
        if backfill:
            self._count += 1
        seq = measurement.sequence_number
        if self.last_sequence is None or seq > self.last_sequence:
            self.last_sequence = seq
        self._held, self._held_backfill = measurement, backfill
        if not measurement.context_follows:
            self._release(events)

    def _context(self, data: bytes, events: list[SessionEvent]) -> None:
        try:
            context = GlucoseContext.parse(data)
        except ProtocolError:
            events.append(RecordRejected("malformed", data))
            return
        if self._held is not None and self._held.sequence_number == context.sequence_number:
            self._release(events, context)
        else:
            events.append(UnmatchedContext(context))

    def _racp(self, data: bytes, events: list[SessionEvent]) -> None:
        request = self._take_indication(RECORD_ACCESS_CONTROL_POINT, data, events)
        if request is None:
            return
        self._transferring = False
        self._release(events)
        try:
            message = parse_racp(data)
        except ProtocolError:
            events.append(ProcedureFailed(request, "malformed", None, data))
            return
        if isinstance(message, RacpNumberOfRecords) and request.label == "racp_count":
            events.append(RecordCount(message.count))
        elif not isinstance(message, RacpResponse):
            events.append(ProcedureFailed(request, "unexpected_response", None, data))
        elif request.label == "racp_report" and message.code in (
            RacpResponseCode.SUCCESS,
            RacpResponseCode.NO_RECORDS_FOUND,
        ):
            events.append(TransferComplete(self._count, self._first))
        else:
            events.append(ProcedureFailed(request, "error_response", int(message.code), data))


_FEATURE_READ = Request(RequestKind.READ, GLUCOSE_FEATURE, label="read_feature")
