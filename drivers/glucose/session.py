"""The glucose meter driver's session: scan, connect, backfill by sequence number, end.

One session is one connection: find the meter while it advertises (`scan_timeout`), connect
(bonding per `bond`), read Device Information (the serial is the reading ids' key), subscribe to
Glucose Measurement, Measurement Context and RACP, then run `protocols.glucose.session`'s
`GlucoseCollector`: read the Glucose Feature and ask RACP for the records with sequence number
>= the newest stored one + 1 (all of them when nothing of this meter is stored). Readings are
yielded as they arrive, each at most once (a result the meter notifies by itself before the
first report has ended is left to the report, which brings it in order), except the first
record of a report, which waits for the next arrival: one the meter had queued before it read
the request may come before the report's oldest records (`drivers.glucose.placement`). Once
the report has ended the session waits `linger` seconds for the meter to close the link (meters
do, a few seconds after a transfer) or to notify a new result, then ends; the supervisor
reconnects with its backoff.

Clock (`drivers.glucose.clock`): where the meter serves the Current Time Service (0x1805), its
Current Time is read at connect (and followed while connected when it notifies) and every
record is dated on the hub's clock, ``hub_now - (meter_now - record_time)``; the offset is
reported (`DeviceContext.set_clock_offset`, meter minus hub). Without it, a record keeps the
meter's calendar and the status ``device_clock_unverified``.

Failures: a link lost before the report ended raises `LinkLost` (what was yielded is stored; the
next connection asks from there). A record that cannot be decoded in a report follows
`DeviceContext.record_damaged`, keyed by its place - ("gls", sequence number of the intact
record before it, damaged ones between) - the same on every connection: while it says "ask
again", the rest of that report is not yielded (never a reading after a hole) and the records
after the last one yielded are asked for again on the same connection; once it says "passed
over", the report is asked for again past the damaged record, so everything before and after
it flows. A damaged result notified outside a report is counted (`drop_packet`) and ends the
session, so that the next connection asks from the newest stored one (where the same policy
applies). A result notified outside a report that repeats one yielded is dropped; one that
does not follow the last one yielded (another came late or not at all) is left to a report
asked for at once from there, so results are yielded once and in order; one numbered below
the newest with another time means the meter's memory was reset: the session ends, and the
next connection, finding the newest stored record gone ("number of records >= it" is 0),
starts a new session (`drivers.glucose.convert.era_session`). A meter that refuses
"records >= n" is asked for all of them (those before n are skipped); a meter that needs bonding
while `bond = "never"`, or refuses the bond, is `DeviceRefused` (`gatewayd.transport.gatt`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import Final, Self

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from drivers.glucose.clock import MeterClock
from drivers.glucose.convert import SESSION, Skip, era_session, is_gls_session, to_reading
from drivers.glucose.options import GlucoseOptions
from drivers.glucose.placement import Progress, arrived, rejected_seq
from gatewayd.plugin import (
    AttError,
    BleConfig,
    CollectorLoop,
    DeviceContext,
    DeviceError,
    DeviceIdentity,
    GattLink,
    LinkLost,
    Reading,
    gatt_text,
)
from protocols.errors import ProtocolError
from protocols.gatt.racp import RECORD_ACCESS_CONTROL_POINT, RacpResponseCode
from protocols.gatt.session import (
    ProcedureFailed,
    RecordRejected,
    Request,
    RequestKind,
    SessionEvent,
    UnexpectedData,
)
from protocols.gatt.uuids import FIRMWARE_REVISION, MANUFACTURER_NAME, MODEL_NUMBER, SERIAL_NUMBER
from protocols.glucose.clock import CURRENT_TIME, CurrentTime
from protocols.glucose.session import (
    GlucoseCollector,
    GlucoseReading,
    Ready,
    RecordCount,
    TransferComplete,
    UnmatchedContext,
)
from protocols.glucose.uuids import (
    GLUCOSE_MEASUREMENT,
    GLUCOSE_MEASUREMENT_CONTEXT,
    GLUCOSE_SERVICE,
)

#: Seconds one GATT operation, a bonding, or the silence within a RACP report, may take.
RESPONSE_TIMEOUT: Final = 30.0
#: RACP answers to "records >= n" after which all records are asked for instead.
FILTER_REFUSED: Final = frozenset(
    {
        RacpResponseCode.INVALID_OPERATOR,
        RacpResponseCode.OPERATOR_NOT_SUPPORTED,
        RacpResponseCode.INVALID_OPERAND,
        RacpResponseCode.OPERAND_NOT_SUPPORTED,
    }
)
#: Times one session asks for records again after rejected ones (`record_damaged` bounds
#: each record's retries; this bounds a meter whose damaged packets carry no usable place).
MAX_ASKS: Final = 32


def _is_read(request: Request) -> bool:
    """A refused read (the Feature) is skipped; a refused RACP write ends the session."""
    return request.kind is RequestKind.READ


class GlucoseSession:
    """One connection to one glucose meter (see the module docstring)."""

    def __init__(self, ctx: DeviceContext[GlucoseOptions]) -> None:
        self.identity: DeviceIdentity | None = None
        self._asks = 0  # times records were asked for again
        #: Sequence numbers yielded (or not wanted), with the meter's time of each.
        self._seen: dict[int, datetime | None] = {}
        self._clock = MeterClock()
        self._session = SESSION
        self._ctx = ctx
        self._options = ctx.options
        self._log = ctx.log
        self._tz = ctx.options.zone()
        self._link = GattLink(
            ctx.device_id,
            bond=ctx.options.bond,
            noun="meter",
            log=ctx.log,
            timeout=RESPONSE_TIMEOUT,
            pair_timeout=RESPONSE_TIMEOUT,
        )

    # -- connection --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        opts = self._options
        any_meter = opts.address is None and opts.name is None
        device = await self._link.find(
            self._ctx.ble or BleConfig(),
            self._matches,
            wanted=opts.address or opts.name or "a Glucose Service meter",
            scan_timeout=opts.scan_timeout,
            **({"service_uuids": [GLUCOSE_SERVICE]} if any_meter else {}),
        )
        # ble_address: redacted under `[log] privacy = "strict"`; the name may carry the serial
        self._log.info("meter_found", ble_address=device.address)
        await self._link.attach(device, self._ctx.ble or BleConfig())
        try:
            await self._prepare()
        except BaseException:
            await self._link.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._link.close()

    def _matches(self, device: BLEDevice, adv: AdvertisementData) -> bool:
        opts = self._options
        if opts.address is not None and device.address.upper() != opts.address:
            return False
        if opts.name is not None:
            return (adv.local_name or device.name or "").startswith(opts.name)
        return opts.address is not None or GLUCOSE_SERVICE in adv.service_uuids

    async def _prepare(self) -> None:
        link = self._link
        # Not DeviceRefused: BlueZ may discover a service list partly (a stale cache); the next
        # connection tries again, and a device that really is no meter only costs a scan.
        if not link.has_service(GLUCOSE_SERVICE):
            raise DeviceError(
                f"{link.address} has no Glucose Service (0x1808)", device=self._ctx.device_id
            )
        self.identity = await self._read_identity()
        self._log.info(
            "meter_identified",
            serial=self.identity.serial,
            model=self.identity.model,
            manufacturer=self.identity.manufacturer,
        )
        for uuid in (GLUCOSE_MEASUREMENT, GLUCOSE_MEASUREMENT_CONTEXT, RECORD_ACCESS_CONTROL_POINT):
            if not link.has_characteristic(uuid):
                if uuid == GLUCOSE_MEASUREMENT_CONTEXT:
                    continue  # optional in GLS
                raise DeviceError(f"{link.address} has no {uuid[4:8]}", device=self._ctx.device_id)
            await link.subscribe(uuid, what=f"subscribe {uuid[4:8]}")
        await self._read_clock()

    async def _read_clock(self) -> None:
        """The meter's Current Time, where it serves one (see the module docstring)."""
        ctx, link = self._ctx, self._link
        resume, serial = ctx.resume, self.identity.serial if self.identity else None
        fits = resume is not None and resume.serial == serial and is_gls_session(resume.session)
        self._clock = MeterClock(
            previous=ctx.findings.clock_offset_s,
            floor=resume.time if fits and resume is not None else None,
        )
        if not link.has_characteristic(CURRENT_TIME):
            self._log.info("meter_clock_unverified", reason="no Current Time Service")
            ctx.set_clock_offset(None)
            return
        before = ctx.now()
        value = await link.read(CURRENT_TIME, what="read current time")
        self._measure(value, before + (ctx.now() - before) / 2)
        characteristic = link.client.services.get_characteristic(CURRENT_TIME)
        if characteristic is not None and "notify" in characteristic.properties:
            await link.subscribe(CURRENT_TIME, what="subscribe 2a2b")

    def _measure(self, value: bytes, hub_now: datetime) -> None:
        """One Current Time value of the meter, read at `hub_now`."""
        try:
            meter_now = CurrentTime.parse(value).to_datetime(self._tz)
        except ProtocolError as exc:
            self._ctx.drop_packet(value, str(exc))
            return
        if meter_now is None:
            self._log.warning("meter_clock_not_set")
            return
        offset = self._clock.measure(meter_now, hub_now)
        self._ctx.set_clock_offset(offset)

    def _notified(
        self, collector: GlucoseCollector, uuid: str, data: bytes
    ) -> Sequence[SessionEvent]:
        """What the meter sends by itself: a new Current Time is measured at once."""
        if uuid == CURRENT_TIME:
            self._measure(data, self._ctx.now())
            self._log.info("meter_clock_set", clock_offset_s=self._ctx.findings.clock_offset_s)
            return []
        return collector.receive(uuid, data)

    async def _read_identity(self) -> DeviceIdentity:
        link = self._link

        async def read(uuid: str, *, required: bool = False) -> str | None:
            if not link.has_characteristic(uuid):
                return None
            try:
                value = await link.read(uuid, what=f"read {uuid[4:8]}")
            except AttError:
                if required:
                    raise
                return None
            return gatt_text(value) or None

        serial = await read(SERIAL_NUMBER, required=True)
        if serial is None:
            self._log.info("meter_serial_from_address", ble_address=link.address)
            serial = link.address.upper()
        return DeviceIdentity(
            manufacturer=await read(MANUFACTURER_NAME) or "unknown",
            model=await read(MODEL_NUMBER) or "Glucose meter",
            serial=serial,
            firmware=await read(FIRMWARE_REVISION),
        )

    # -- readings ----------------------------------------------------------------------------

    def _backfill_from(self, serial: str) -> int | None:
        resume = self._ctx.resume
        if resume is None:
            return None
        if resume.serial != serial or not is_gls_session(resume.session):
            self._log.info("resume_other_meter", serial=resume.serial, session=resume.session)
            return None
        self._session = resume.session
        return (resume.seq + 1) & 0xFFFF

    async def readings(self) -> AsyncIterator[Reading]:
        """The records after the newest stored one, then live ones until the link closes."""
        if self.identity is None:
            raise RuntimeError("readings() outside `async with`")
        serial = self.identity.serial
        start = self._backfill_from(serial)
        # Resuming: first ask whether the meter still holds the newest stored record (none
        # from there: its memory was reset, sequence numbers start again).
        collector = GlucoseCollector(backfill_from=start, tz=self._tz, transfer=start is None)
        if start is not None:
            collector.request_count((start - 1) & 0xFFFF)
        loop: CollectorLoop[SessionEvent] = CollectorLoop(
            self._link,
            collector,
            collector.receive,
            notified=lambda uuid, data: self._notified(collector, uuid, data),
            idle_timeout=self._options.linger,
            skip_refused=_is_read,
        )
        state = Progress(floor=start or 0, checking=start is not None)
        self._log.info("backfill_start", first_seq=start)
        while not state.end:
            for reading in self._handle(collector, state, await self._step(loop, state), serial):
                yield reading

    async def _step(self, loop: CollectorLoop[SessionEvent], state: Progress) -> list[SessionEvent]:
        """One request, or what the meter sends next. The session ends on silence when nothing
        is due (the meter is done) or when the meter closes the link after its report."""
        try:
            events = await loop.perform_next()
            if events is None:
                events = await loop.wait()
        except LinkLost:
            if not state.complete:
                raise
            self._log.info("meter_closed_link")
            state.end = True
            return []
        if events is None:
            self._log.info("meter_idle", linger=self._options.linger)
            state.end = True
            return []
        state.awaiting = loop.awaiting is not None
        return events

    def _handle(
        self,
        collector: GlucoseCollector,
        state: Progress,
        events: list[SessionEvent],
        serial: str,
    ) -> Iterator[Reading]:
        log = self._log
        for event in events:
            for record in arrived(state, event):
                reading = self._record(collector, state, record, serial)
                if state.end:
                    return
                if reading is not None:
                    yield reading
            if isinstance(event, RecordRejected):
                self._rejected(state, event)
            elif isinstance(event, TransferComplete):
                state.awaiting = False
                self._transfer_complete(collector, state, event)
            elif isinstance(event, ProcedureFailed):
                state.awaiting = False
                self._procedure_failed(collector, state, event)
            elif isinstance(event, Ready):
                features = None if event.features is None else int(event.features)
                log.info("meter_ready", features=features)
            elif isinstance(event, UnmatchedContext):
                log.warning("context_unmatched", seq=event.context.sequence_number)
            elif isinstance(event, UnexpectedData):
                log.info("meter_unexpected_data", characteristic=event.characteristic)
            elif isinstance(event, RecordCount):
                state.awaiting = False
                self._counted(collector, state, event.count)

    def _counted(self, collector: GlucoseCollector, state: Progress, count: int) -> None:
        """The meter's answer to "records >= the newest stored one"."""
        if not state.checking:
            return
        state.checking = False
        if count == 0:  # the newest stored record is gone: the memory was reset
            self._session = era_session(self._ctx.now())
            self._log.warning("meter_memory_reset", session=self._session)
            state.floor, state.fell_back = 0, True
            collector.request_records(None)
        else:
            collector.request_records(state.floor)

    def _record(
        self, collector: GlucoseCollector, state: Progress, event: GlucoseReading, serial: str
    ) -> Reading | None:
        """The reading of one record, or None when it is not to be yielded (now)."""
        log, seq = self._log, event.sequence_number
        # the report (or the one asked for again) brings it too
        early = not event.backfill and (not state.complete or state.asking)
        live = state.done and not event.backfill and not state.asking
        if live and self._live_unusable(collector, state, event):
            return None
        if state.skipping or early or seq in self._seen or seq < state.floor:
            log.debug("record_passed", seq=seq, hole=state.skipping, early=early)
            return None
        self._seen[seq] = event.time
        state.last = seq if state.last is None else max(state.last, seq)
        state.run = 0
        result = to_reading(
            event,
            device=self._ctx.device_id,
            serial=serial,
            received=self._ctx.now(),
            dated=self._clock.date,
            session=self._session,
        )
        if isinstance(result, Skip):
            log.info("record_skipped", reason=result.reason, seq=seq)
            return None
        return result

    def _live_unusable(
        self, collector: GlucoseCollector, state: Progress, event: GlucoseReading
    ) -> bool:
        """A result notified outside a report once the reports ended: whether it is not to be
        yielded now - a repeat (same number, same time); one after a gap, left to a report of
        the records after the last one yielded, asked for at once; one numbered at or below the
        newest with another time: the memory was reset, the session ends (`state.end`)."""
        seq, log = event.sequence_number, self._log
        if seq in self._seen and self._seen[seq] == event.time:
            log.info("record_repeated", seq=seq)
            return True
        if seq in self._seen or (state.last is not None and seq < state.last):
            log.warning("meter_memory_reset", seq=seq, after_seq=state.last)
            state.end = True
            return True
        if state.last is not None and seq > state.last + 1:  # one came late, or not at all
            log.info("live_gap", seq=seq, after_seq=state.last)
            state.asking = True
            collector.request_records(state.last + 1)
            return True
        return False

    def _rejected(self, state: Progress, event: RecordRejected) -> None:
        if state.done and not state.awaiting:
            # A live result: later live ones would come before it is asked for again.
            self._ctx.drop_packet(event.data, event.reason)
            self._log.info("meter_reconnect", reason="damaged live result", after_seq=state.last)
            state.end = True
            return
        if state.skipping:
            self._ctx.drop_packet(event.data, event.reason)  # after the hole: asked for again
            return
        before = state.floor - 1 if state.last is None else state.last
        key = ("gls", before, state.run)
        position = f"record after seq {before}" + (f" (+{state.run})" if state.run else "")
        state.run += 1
        if self._ctx.record_damaged(key, event.data, position=position, reason=event.reason):
            state.skipping = True  # nothing more from this report: never a reading after a hole
            return
        # passed over: what follows it flows (asked for past it, as its number says)
        seq = rejected_seq(event.data)
        state.passed = seq if seq is not None and seq > before else before + 1
        state.skipping = True

    def _transfer_complete(
        self, collector: GlucoseCollector, state: Progress, event: TransferComplete
    ) -> None:
        self._log.info("backfill_done", count=event.count, first_seq=event.first_sequence)
        state.complete = True
        state.asking = False
        if state.skipping:
            state.skipping = False
            first = self._ask_from(state)
            if first is not None:
                self._asks += 1
                state.asking = True
                self._log.info("backfill_retry", first_seq=first)
                collector.request_records(first)
                return
            self._log.warning("backfill_retry_exhausted", after_seq=state.last)
        state.done = True

    def _ask_from(self, state: Progress) -> int | None:
        """Where to ask again after a hole: after the last record yielded, or past a record
        passed over; None after `MAX_ASKS`."""
        first = state.floor if state.last is None else state.last + 1
        if state.passed is not None:
            first, state.passed = max(first, state.passed + 1), None
            state.floor = max(state.floor, first)
        state.run = 0
        if first > 0xFFFF or self._asks >= MAX_ASKS:
            return None
        return first

    def _procedure_failed(
        self, collector: GlucoseCollector, state: Progress, event: ProcedureFailed
    ) -> None:
        label = event.request.label
        self._log.warning(
            "meter_procedure_failed", what=label, reason=event.reason, code=event.code
        )
        if label == "racp_count" and state.checking:  # cannot tell: ask from the newest one
            self._counted(collector, state, 1)
            return
        if label != "racp_report":
            return  # the Feature: optional, the transfer goes on
        if event.code in FILTER_REFUSED and not state.fell_back:
            state.fell_back = True
            state.skipping = False
            collector.request_records(None)  # all: those before `floor` are skipped
            return
        raise DeviceError(
            f"record transfer failed: {event.reason}"
            + ("" if event.code is None else f" (RACP 0x{event.code:02x})"),
            device=self._ctx.device_id,
        )
