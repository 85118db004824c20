"""Sans-I/O CGMS collector session (CGMP, protocols.md §1.10): bytes in, events out, no clock.

The driver owns the BLE link; this object owns the procedure. Usage (the shape of h11)::

    session = CgmsCollector(backfill_from=last_stored + 1, session_start=stored_start)
    # after connect + bonding: enable notify on CGM_MEASUREMENT and indications on
    # RECORD_ACCESS_CONTROL_POINT and CGM_SPECIFIC_OPS_CONTROL_POINT (§1.10 step 4), then loop:
    while (request := session.next_request()) is not None:   # also after every receive()
        if request.kind is RequestKind.READ:
            events = session.receive(request.characteristic, await read(...), now=utc_now())
        else:
            await write(request.characteristic, request.data)  # ATT write with response
            # if request.awaits_response, its indication arrives through receive(), like
            # every notification: session.receive(uuid, data, now=utc_now()) -> events
    # no response in time (2 s for control points, a few s of silence during a backfill):
    events = session.timeout()

`next_request()` hands out one request at a time and returns None while a response is awaited
or when there is nothing to do. `receive(characteristic, data, now=None)` takes every read value,
notification and indication (characteristic as bleak's 128-bit string, a 16-bit form or int) and
returns a list of events; pass `now` (aware) so the session start can be derived from the CGM
Status (`start = now - time_offset`, as xDrip does; the Session Start Time is used instead when
it agrees within 2 minutes, and alone when `now` is not given) - the session reads no clock.
Pass `now` only from a synchronised clock: a Raspberry Pi has no RTC, and a wrong `now` moves
the derived start, which reads as another session (`SessionChanged`, full backfill).
Malformed measurement records become `RecordRejected` events; a malformed read value or control
point indication becomes `ProcedureFailed` (the step is skipped, the session goes on). Only a
characteristic that is not part of CGMS raises (`ProtocolError`); no loop is driven by input.

Procedure: read CGM Feature (E2E-CRC on/off), Session Start Time, CGM Status, Session Run Time ->
SOCP "start session" if the status says stopped and `start_session` -> write the current time to
Session Start Time if `sync_session_start_time` and it is unknown or > 2 min off -> SOCP "get
communication interval" if `interval_min` is None -> `Ready` -> RACP backfill (`01 03 01 <from>`,
or `01 01`) -> `BackfillComplete` -> live. Each step is tried once; a failure or timeout skips it.
Live records whose offset jumps more than the interval give `GapDetected` and a RACP "within
range" backfill of the gap (">=" if the device does not support ranges); a damaged live record
(`RecordRejected` while no report runs) queues the same backfill of the next interval at once.
Damaged records inside a report are the caller's to judge (ask again, or pass over them). An
offset going back re-reads start time and status; a different session (start moved >
`session_tolerance`, offsets behind what is held, or a successful SOCP start) gives
`SessionChanged` and a backfill of all records.

Events (frozen dataclasses deriving from `protocols.gatt.session.SessionEvent`; `RecordRejected`,
`ProcedureFailed` and `UnexpectedData` are shared with the other sessions and live there):
`Ready(feature, status, session_start, run_time_h, interval_min)`;
`Measurement(record, time, session_start, backfill)` (`time` = session start + offset, None
when the start is unknown; `backfill` = arrived while a RACP report was running; a live record
older than the newest one held has `session_start` None until the re-read settles the session,
and comes again in the backfill if it belongs to a new one);
`ReportStarted(first, last, session_start)` (a RACP report was asked for: the range as the
request says it, first in the next batch; `protocols.cgms.release` reads it);
`BackfillComplete(count, first_offset, last_offset)` (the range asked; count = records received);
`GapDetected(expected_offset, got_offset)`; `RecordRejected(reason, data)` with reason
"crc_mismatch", "missing_crc" (Feature says E2E but the record has none) or "malformed";
`SessionChanged(session_start, previous)`; `SessionStopped(time_offset)`;
`SocpResponse(packet)` (every SOCP indication); `ProcedureFailed(request, reason, code, data)`
("timeout", "error_response" + code, "crc_mismatch", "malformed", "unexpected_response");
`UnexpectedData(characteristic, data)` (e.g. a response after its timeout).
Requests: `protocols.gatt.session.Request`. Extra commands: `request_backfill(first, last)`,
`send_socp(packet)` (E2E-CRC added per Feature), `abort_backfill()`. State: `feature`,
`status`, `session_start`, `run_time_h`, `interval_min`, `ready`, `clock_offset` (the
sensor's calendar minus the hub's: Session Start Time minus `now - status offset`, None when
either is unknown; readings never depend on it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Final

from protocols.cgms.events import (
    BackfillComplete,
    CgmsEvent,
    GapDetected,
    Measurement,
    Ready,
    ReportStarted,
    SessionChanged,
    SessionStopped,
    SocpResponse,
)
from protocols.cgms.measurement import CgmMeasurement, StatusOctetOrder, decode_records
from protocols.cgms.socp import SocpOpCode, SocpPacket, SocpResult
from protocols.cgms.state import (
    CgmFeature,
    CgmStatus,
    SensorStatus,
    SessionRunTime,
    SessionStartTime,
)
from protocols.cgms.uuids import (
    CGM_FEATURE,
    CGM_MEASUREMENT,
    CGM_SESSION_RUN_TIME,
    CGM_SESSION_START_TIME,
    CGM_SPECIFIC_OPS_CONTROL_POINT,
    CGM_STATUS,
)
from protocols.errors import CrcError, ProtocolError
from protocols.gatt.collector import CollectorBase
from protocols.gatt.date_time import add_minutes
from protocols.gatt.racp import (
    RECORD_ACCESS_CONTROL_POINT,
    RacpOperator,
    RacpResponse,
    RacpResponseCode,
    abort,
    parse_racp,
    report_records,
)
from protocols.gatt.session import (
    ProcedureFailed,
    RecordRejected,
    Request,
    RequestKind,
)
from protocols.gatt.uuids import normalize_uuid

__all__ = ["SESSION_TOLERANCE", "CgmsCollector"]

#: How far a derived session start may move before it counts as another session. The status
#: offset has minute resolution and the hub's clock may have been corrected between connects.
SESSION_TOLERANCE: Final = timedelta(minutes=5)
#: xDrip rewrites Session Start Time when it is more than this off (§1.7).
SST_SYNC_THRESHOLD: Final = timedelta(seconds=120)


_READS: Final = {  # in this order: the status is judged against the start time just read
    CGM_FEATURE: "read_feature",
    CGM_SESSION_START_TIME: "read_session_start_time",
    CGM_STATUS: "read_status",
    CGM_SESSION_RUN_TIME: "read_session_run_time",
}


_READ_UUIDS: Final = {label: uuid for uuid, label in _READS.items()}
#: The control points, whose indications answer the collector's writes.
_INDICATED: Final = (RECORD_ACCESS_CONTROL_POINT, CGM_SPECIFIC_OPS_CONTROL_POINT)


def _reason(exc: ProtocolError) -> str:
    return "crc_mismatch" if isinstance(exc, CrcError) else "malformed"


class CgmsCollector(CollectorBase):
    """The collector side of one CGMS connection (see the module docstring)."""

    def __init__(
        self,
        *,
        backfill_from: int | None = None,
        session_start: datetime | None = None,
        interval_min: int | None = None,
        start_session: bool = False,
        sync_session_start_time: bool = False,
        order: StatusOctetOrder = StatusOctetOrder.SIG,
        session_tolerance: timedelta = SESSION_TOLERANCE,
        default_interval_min: int | None = None,
    ) -> None:
        """Set up the procedure.

        `backfill_from`: first time offset wanted (last stored + 1; None = all records);
        `session_start`: the aware start of the session that offset belongs to, if known;
        `interval_min`: the communication interval (None = ask the sensor, else learn it from
        the backfill); `start_session`: send SOCP "start the session" when the status says
        stopped; `sync_session_start_time`: write the current time to Session Start Time when
        it is unknown or off; `order`: the device's status-octet quirk;
        `default_interval_min`: the interval assumed when the first backfill is complete and it
        was neither configured, answered by the sensor nor learnt from the records.
        """
        if backfill_from is not None and not 0 <= backfill_from <= 0xFFFF:
            raise ValueError(f"backfill_from {backfill_from} is not a uint16 time offset")
        if session_start is not None and session_start.tzinfo is None:
            raise ValueError("session_start must be timezone-aware")
        super().__init__()
        self.order = order
        self.feature: CgmFeature | None = None
        self.status: CgmStatus | None = None
        self.session_start = session_start.astimezone(UTC) if session_start else None
        self.run_time_h: int | None = None
        #: The sensor's calendar minus the hub's: Session Start Time minus the start derived
        #: from `now` (None: either unknown); measured at each CGM Status read.
        self.clock_offset: timedelta | None = None
        self.interval_min = interval_min if interval_min and interval_min > 0 else None
        self._default_interval = default_interval_min
        self._pending: list[CgmsEvent] = []  # ReportStarted of the report just asked for
        self._tolerance = session_tolerance
        self._start_session = start_session
        self._sync_sst = sync_session_start_time
        self._done: set[str] = set()  # setup steps attempted (failed ones too)
        self._sst: SessionStartTime | None = None
        self._status_now: datetime | None = None
        self._held = None if backfill_from is None else backfill_from - 1  # highest offset held
        self._backfill_from = backfill_from
        self._backfills: deque[tuple[int | None, int | None]] = deque()
        self._range_unsupported = False
        self._socp_queue: deque[SocpPacket] = deque()
        self._abort = False
        self._racp: tuple[int | None, int | None] | None = None  # range of the running report
        self._count = 0
        self._previous: int | None = None  # last offset of the running report
        self._learnt: int | None = None  # smallest step between backfilled offsets
        self._stopped_reported = False
        self._suspect = False  # a live offset went back: the session is in doubt until re-read
        self._force_change = False  # SOCP "start the session" succeeded

    # -- commands -------------------------------------------------------------------------------

    def request_backfill(self, first: int | None = None, last: int | None = None) -> None:
        """Queue a RACP report of offsets first..last (None: open end / all records)."""
        self._backfills.append((first, last))

    def send_socp(self, packet: SocpPacket) -> None:
        """Queue a SOCP command (sent after setup); its E2E-CRC follows the Feature."""
        self._socp_queue.append(packet)

    def abort_backfill(self) -> None:
        """Queue a RACP "abort operation" and drop queued backfills."""
        self._backfills.clear()
        self._abort = True

    # -- requests -------------------------------------------------------------------------------

    def next_request(self) -> Request | None:
        """The next GATT operation to perform, or None (waiting for a response / idle)."""
        if self._awaiting is not None:
            return None
        label = self._next_setup()
        request = self._setup_request(label) if label else self._work_request()
        if request is not None and request.awaits_response:
            self._awaiting = request
        return request

    def _stopped(self) -> bool:
        return self.status is not None and bool(self.status.status & SensorStatus.SESSION_STOPPED)

    def _next_setup(self) -> str | None:
        """Label of the next setup step still to try, or None."""
        for label in _READS.values():
            if label not in self._done:
                return label
        steps = (
            ("socp_start", self._start_session and self._stopped()),
            ("write_sst", self._sync_sst and self._sst_needs_sync()),
            ("socp_interval", self.interval_min is None),
        )
        return next((label for label, due in steps if due and label not in self._done), None)

    def _setup_request(self, label: str) -> Request:
        self._done.add(label)
        if label == "socp_start":
            return self._socp_request(SocpPacket(SocpOpCode.START_SESSION), label)
        if label == "socp_interval":
            return self._socp_request(SocpPacket(SocpOpCode.GET_COMMUNICATION_INTERVAL), label)
        if label == "write_sst":
            if self._status_now is None:  # pragma: no cover - _sst_needs_sync() requires it
                raise RuntimeError("write_sst without a status time")
            # the CURRENT time: the sensor derives its start from it (§1.7); read it back (a
            # write has no answer that would move the procedure on)
            self._done.discard("read_session_start_time")
            sst = SessionStartTime.from_datetime(self._status_now, e2e_crc=self._e2e)
            return Request(RequestKind.WRITE, CGM_SESSION_START_TIME, sst.build(), False, label)
        return Request(RequestKind.READ, _READ_UUIDS[label], label=label)

    def _work_request(self) -> Request | None:
        if not self._ready:
            return None
        if self._abort:
            self._abort = False
            data = abort().build()
            return Request(RequestKind.WRITE, RECORD_ACCESS_CONTROL_POINT, data, True, "racp_abort")
        if self._backfills:
            return self._racp_request(*self._backfills.popleft())
        if self._socp_queue:
            return self._socp_request(self._socp_queue.popleft(), "socp")
        return None

    def _racp_request(self, first: int | None, last: int | None) -> Request:
        if first is None:
            command = report_records()
        elif last is None or self._range_unsupported:
            command = report_records(RacpOperator.GREATER_THAN_OR_EQUAL, first)
        else:
            command = report_records(RacpOperator.WITHIN_RANGE, first, last)
        ranged = command.operator == RacpOperator.WITHIN_RANGE
        self._pending.append(ReportStarted(first, last if ranged else None, self.session_start))
        self._racp, self._count, self._previous = (first, last), 0, None
        data = command.build()
        return Request(RequestKind.WRITE, RECORD_ACCESS_CONTROL_POINT, data, True, "racp_report")

    def _socp_request(self, packet: SocpPacket, label: str) -> Request:
        data = replace(packet, e2e_crc=self._e2e).build()
        return Request(RequestKind.WRITE, CGM_SPECIFIC_OPS_CONTROL_POINT, data, True, label)

    @property
    def _e2e(self) -> bool:
        return self.feature is not None and self.feature.e2e_crc

    def _sst_needs_sync(self) -> bool:
        """Session Start Time is unknown or > 2 min off now - status offset (xDrip's rule)."""
        if self._status_now is None or self.status is None:
            return False
        derived = self._status_now - timedelta(minutes=self.status.time_offset)
        start = self._sst.to_utc() if self._sst is not None else None
        return start is None or abs(start - derived) > SST_SYNC_THRESHOLD

    # -- input ----------------------------------------------------------------------------------

    def receive(
        self, characteristic: str | int, data: bytes, *, now: datetime | None = None
    ) -> list[CgmsEvent]:
        """Feed a read value, notification or indication; returns what it meant."""
        if now is not None and now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        uuid = normalize_uuid(characteristic)
        data = bytes(data)
        if uuid == CGM_MEASUREMENT:
            return self._take_pending() + self._measurements(data)
        if uuid not in _READS and uuid not in _INDICATED:
            raise ProtocolError(f"not a CGMS characteristic: {uuid}", data)
        events = self._take_pending()
        if uuid in _READS:
            label = _READS[uuid]
            request = self._take(label) or Request(RequestKind.READ, uuid, label=label)
            try:
                self._read_value(uuid, data, now, events)
            except ProtocolError as exc:
                events.append(ProcedureFailed(request, _reason(exc), None, data))
        elif uuid == RECORD_ACCESS_CONTROL_POINT:
            self._racp_indication(data, events)
        else:
            self._socp_indication(data, events)
        self._check_ready(events)
        return events

    def timeout(self) -> list[CgmsEvent]:
        """The awaited response did not come: fail that request and go on."""
        request = self._take_timed_out()
        if request is None:
            return self._take_pending()
        if request.label == "racp_report":
            self._racp = None
            self._abort = True  # stop a device that may still be sending
        events = [*self._take_pending(), ProcedureFailed(request, "timeout")]
        self._check_ready(events)
        return events

    def _take_pending(self) -> list[CgmsEvent]:
        """The events of the request just handed out (they lead the next batch)."""
        pending, self._pending = self._pending, []
        return pending

    def _expect_crc(self, has_crc: bool, what: str, data: bytes) -> None:
        if self._e2e and not has_crc:
            raise ProtocolError(f"{what}: E2E-CRC missing although the Feature announces it", data)

    def _read_value(
        self, uuid: str, data: bytes, now: datetime | None, events: list[CgmsEvent]
    ) -> None:
        if uuid == CGM_FEATURE:
            self.feature = CgmFeature.parse(data)
        elif uuid == CGM_SESSION_RUN_TIME:
            run_time = SessionRunTime.parse(data)
            self._expect_crc(run_time.e2e_crc, "session run time", data)
            self.run_time_h = run_time.hours
        elif uuid == CGM_SESSION_START_TIME:
            sst = SessionStartTime.parse(data)
            self._expect_crc(sst.e2e_crc, "session start time", data)
            self._sst = sst
        else:
            status = CgmStatus.parse(data)
            self._expect_crc(status.e2e_crc, "CGM status", data)
            self.status = status
            self._status_now = now.astimezone(UTC).replace(microsecond=0) if now else None
            self.clock_offset = self._clock_offset(status.time_offset)
            self._adopt_start(self._device_start(status.time_offset), status.time_offset, events)
            if status.status & SensorStatus.SESSION_STOPPED:
                self._report_stopped(status.time_offset, events)

    def _device_start(self, offset: int) -> datetime | None:
        """The sensor's session start: its Session Start Time when that agrees (within 2 min)
        with now - status offset, else the latter (xDrip's rule); without `now` the SST alone.
        """
        sst = self._sst.to_utc() if self._sst is not None else None
        if self._status_now is None:
            return sst
        derived = self._status_now - timedelta(minutes=offset)
        if sst is not None and abs(sst - derived) <= SST_SYNC_THRESHOLD:
            return sst
        return derived

    def _clock_offset(self, offset: int) -> timedelta | None:
        """Session Start Time (the sensor's calendar) minus now - status offset (the hub's)."""
        sst = self._sst.to_utc() if self._sst is not None else None
        if sst is None or self._status_now is None:
            return None
        return sst - (self._status_now - timedelta(minutes=offset))

    def _adopt_start(self, start: datetime | None, offset: int, events: list[CgmsEvent]) -> None:
        """Compare the device's session with the one held; keep the held start if the same."""
        previous = self.session_start
        moved = (
            start is not None and previous is not None and abs(start - previous) > self._tolerance
        )
        behind = self._held is not None and offset < self._held
        changed = moved or behind or self._force_change
        self._force_change = self._suspect = False  # settled by this status
        if changed:
            events.append(SessionChanged(start, previous))
            self._held = self._backfill_from = None
            self._stopped_reported = False
            self.session_start = start
            if self._ready:  # else the backfill queued by Ready covers it
                self._backfills = deque([(None, None)])
        elif previous is None:
            self.session_start = start

    def _report_stopped(self, offset: int | None, events: list[CgmsEvent]) -> None:
        if not self._stopped_reported:
            self._stopped_reported = True
            events.append(SessionStopped(offset))

    def _check_ready(self, events: list[CgmsEvent]) -> None:
        if self._ready or self._awaiting is not None or self._next_setup() is not None:
            return
        self._ready = True
        start, status = self.session_start, self.status
        events.append(Ready(self.feature, status, start, self.run_time_h, self.interval_min))
        self._backfills.appendleft((self._backfill_from, None))

    def _racp_indication(self, data: bytes, events: list[CgmsEvent]) -> None:
        request = self._take_indication(RECORD_ACCESS_CONTROL_POINT, data, events)
        if request is None:
            return
        span, self._racp = self._racp, None
        try:
            message = parse_racp(data)
        except ProtocolError as exc:
            events.append(ProcedureFailed(request, _reason(exc), None, data))
            return
        if not isinstance(message, RacpResponse):  # e.g. a number of records nobody asked for
            events.append(ProcedureFailed(request, "unexpected_response", None, data))
            return
        code = message.code
        if span is None:  # the abort
            if code != RacpResponseCode.SUCCESS:
                events.append(ProcedureFailed(request, "error_response", code, data))
            return
        if self.interval_min is None and self._learnt is not None:
            self.interval_min = self._learnt
        if code in (RacpResponseCode.SUCCESS, RacpResponseCode.NO_RECORDS_FOUND):
            if self.interval_min is None:  # neither configured, answered nor learnt
                self.interval_min = self._default_interval
            events.append(BackfillComplete(self._count, *span))
        elif span[1] is not None and not self._range_unsupported and code in _RANGE_REFUSED:
            self._range_unsupported = True  # retry the gap as ">= first"
            self._backfills.appendleft(span)
        else:
            events.append(ProcedureFailed(request, "error_response", code, data))

    def _socp_indication(self, data: bytes, events: list[CgmsEvent]) -> None:
        request = self._take_indication(CGM_SPECIFIC_OPS_CONTROL_POINT, data, events)
        if request is None:
            return
        try:
            packet = SocpPacket.parse(data)
            self._expect_crc(packet.e2e_crc, "SOCP indication", data)
        except ProtocolError as exc:
            events.append(ProcedureFailed(request, _reason(exc), None, data))
            return
        events.append(SocpResponse(packet))
        operand = packet.operand
        if packet.opcode == SocpOpCode.COMMUNICATION_INTERVAL_RESPONSE:
            if isinstance(operand, int) and 0 < operand < 0xFF:  # 0: off, 0xFF: "fastest"
                self.interval_min = operand
        elif isinstance(operand, SocpResult) and not operand.success:
            events.append(ProcedureFailed(request, "error_response", int(operand.code), data))
        elif isinstance(operand, SocpResult) and operand.request_opcode == SocpOpCode.START_SESSION:
            # a new session: read start time and status again (SessionChanged follows)
            self._done -= {"read_session_start_time", "read_status", "write_sst"}
            self._stopped_reported = False
            self._force_change = True

    def _measurements(self, data: bytes) -> list[CgmsEvent]:
        events: list[CgmsEvent] = []
        for record, result in decode_records(data, self.order):
            if isinstance(result, ProtocolError):
                events.append(RecordRejected(_reason(result), record))
                self._fetch_damaged_live()
            else:
                self._measurement(record, result, events)
        return events

    def _measurement(self, record: bytes, m: CgmMeasurement, events: list[CgmsEvent]) -> None:
        if self._e2e and not m.e2e_crc:
            events.append(RecordRejected("missing_crc", record))
            return
        offset, held = m.time_offset, self._held
        backfill = self._racp is not None
        behind = held is not None and offset < held
        if behind and not backfill and self._ready:
            self._suspect = True  # went back: did the session restart? (re-read below)
        start = None if self._suspect and behind else self.session_start
        events.append(Measurement(m, add_minutes(start, offset), start, backfill))
        if backfill:
            self._count += 1
            if self._previous is not None and offset > self._previous:
                step = offset - self._previous
                self._learnt = step if self._learnt is None else min(self._learnt, step)
            self._previous = offset
        elif held is not None and self._ready and self._gap_watch():
            if self.interval_min is not None and offset > held + self.interval_min:
                events.append(GapDetected(held + self.interval_min, offset))
                self._backfills.append((held + 1, offset - 1))
            elif offset < held and {"read_session_start_time", "read_status"} <= self._done:
                self._done -= {"read_session_start_time", "read_status"}
        if held is None or offset > held:
            self._held = offset
        if m.status & SensorStatus.SESSION_STOPPED:
            self._report_stopped(offset, events)

    def _fetch_damaged_live(self) -> None:
        """A damaged live record: fetch the next interval from the memory, as a gap, and count
        it as held (the next live record is no gap). Within a report the caller decides."""
        held, step = self._held, self.interval_min
        if self._racp is not None or not self._ready or held is None or not step:
            return
        if held + step > 0xFFFF or not self._gap_watch():
            return  # past uint16, or an open-ended backfill is queued: it brings the record
        if self._backfills and self._backfills[-1][1] == held:  # several damaged in a row
            self._backfills[-1] = (self._backfills[-1][0], held + step)
        else:
            self._backfills.append((held + 1, held + step))
        self._held = held + step

    def _gap_watch(self) -> bool:
        """No open-ended backfill is queued (it would cover any gap anyway)."""
        return all(last is not None for _, last in self._backfills)


_RANGE_REFUSED: Final = (RacpResponseCode.OPERATOR_NOT_SUPPORTED, RacpResponseCode.INVALID_OPERATOR)
