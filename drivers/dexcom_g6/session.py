"""The Dexcom G5/G6 driver session: one wake-up of the transmitter, one connection.

A session scans for ``Dexcom<last two of the id>`` (`scan_timeout`: a transmitter advertises for a
few seconds every 5 minutes), connects, enables Authentication indications, then runs
`protocols.dexcom_g6.session.G6Session` on `gatewayd.transport.collector.CollectorLoop`:
authenticate (a token hash that does not match the configured id is `DeviceRefused`: the supervisor
parks the device), keep-alive + bond request and OS pairing when the transmitter is not bonded to us
(a refused pairing is `DeviceRefused` too; then Control indications and Backfill notifications),
time (places readings on the wall clock: activation = now - transmitter time), glucose, and a
backfill from the newest stored record + 1 up to the transmitter's now. The session then ends (our
disconnect lets the transmitter sleep); the supervisor scans again for the next wake-up.

Never a gap: the live value is yielded only after the backfills that cover the time before it
are done, because the store resumes from its newest reading. A backfill that brings nothing (a
timeout) is asked once more on the same connection; if it fails again, or the link drops first,
nothing newer than the stored data is yielded and the next wake-up asks again. A damaged backfill
(length, CRC, frames) is split in two at its middle record until the bad record is alone; that
one is asked again while `DeviceContext.record_damaged` says so, then passed over (counted in
`records_unreadable`) and the rest flows. A backfill that fills all 255 frames (573 records), or
whose newest record is more than `BACKFILL_SLACK_S` before the end asked, may have been cut: the
rest is asked for from the newest record + 1 (until a backfill brings nothing newer). Malformed
notifications are counted and dropped (`DeviceContext.drop_packet`).

Clocks (docs/dexcom-g6.md, "Clocks"): a record's time is the hub's now minus the transmitter's
age of it (transmitter now - record timestamp), never the transmitter's clock at face value.
The transmitter's activation as anchored now is compared with the one the stored readings were
anchored with: a difference beyond `CLOCK_JUMP_S` is the clock offset reported
(`DeviceContext.set_clock_offset`), and a clock that went back (a reset) starts a new clock
epoch - the session ids after it carry the new activation (`convert.session_id`), so its
reused timestamps never collide with stored ids and nothing stored is re-dated.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Self

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from drivers.dexcom_g6.convert import Skip, parse_session, session_epoch, session_id, to_reading
from drivers.dexcom_g6.options import G6Options
from gatewayd.plugin import (
    BleConfig,
    CollectorLoop,
    DeviceContext,
    DeviceError,
    DeviceIdentity,
    DeviceRefused,
    GattLink,
    Reading,
    honour_cancellation,
)
from protocols.dexcom_g6.auth import AuthenticationFailed
from protocols.dexcom_g6.framing import (
    AUTHENTICATION,
    BACKFILL,
    CGM_SERVICE,
    CONTROL,
    advertised_name,
)
from protocols.dexcom_g6.glucose import TransmitterTimeRx
from protocols.dexcom_g6.session import (
    Authenticated,
    BackfillDamaged,
    BackfillRecords,
    BondRequested,
    Completed,
    G6Event,
    G6Session,
    Glucose,
    TimeRead,
)
from protocols.errors import ProtocolError
from protocols.gatt.session import ProcedureFailed, RecordRejected, Request, UnexpectedData

#: Seconds one GATT operation or an awaited indication may take (CGMBLEKit allows 2 s per
#: command; BlueZ on a busy hub needs more, and a silent transmitter costs only this once).
RESPONSE_TIMEOUT: Final = 10.0
#: Seconds for OS pairing after the bond request (CGMBLEKit waits 15 s, protocols.md §2.4).
BOND_TIMEOUT: Final = 15.0
#: The most records one backfill can carry: 255 frames (1-byte index) x 18 payload bytes,
#: minus the 4-byte header, in 8-byte records (§2.6).
MAX_BACKFILL_RECORDS: Final = (255 * 18 - 4) // 8
#: Backfill attempts per connection that bring nothing (a timeout): the second ends the wake-up.
BACKFILL_ATTEMPTS: Final = 2
#: Damaged backfills one connection works through (splitting ranges, asking one record again
#: `DAMAGED_RETRIES` times): three bad records in a day's 288 take ~40; beyond this the link,
#: not the memory, is bad - the wake-up ends and nothing is passed over for it.
DAMAGED_PER_WAKEUP: Final = 64
#: Seconds the transmitter's activation, anchored now, may differ from the one the stored
#: readings were anchored with before its clock counts as jumped (gone back: a reset): link
#: latency and a crystal's drift over a transmitter's life stay well below it.
CLOCK_JUMP_S: Final = 120
#: A backfill whose first record comes later than this after the start asked for (1.5
#: measurement intervals) did not reach back that far: the transmitter's memory ended.
BACKFILL_SLACK_S: Final = 450


def _never(_request: Request) -> bool:
    """The transmitter refusing any step (an ATT error) ends the wake-up: try the next one."""
    return False


@dataclass(frozen=True, slots=True)
class _Stored:
    """The newest stored reading of this transmitter, and how it was anchored."""

    seq: int
    session: int
    epoch: int | None
    time: datetime

    @property
    def activation(self) -> datetime:
        """The transmitter's activation as anchored when that reading was stored."""
        return self.time - timedelta(seconds=self.seq)


@dataclass(slots=True)
class _Run:
    """Progress of one connection's procedure."""

    stored: _Stored | None
    #: Start of the backfill asked first (None: none asked yet).
    backfill_from: int | None = None
    #: Session start of the resume point, while the clock epoch is the same.
    resume_session: int | None = None
    #: The clock epoch of this connection's readings (`convert.session_id`).
    epoch: int | None = None
    #: Backfill ranges still to ask, in order; `asked` the one asked last.
    pending: deque[tuple[int, int]] = field(default_factory=deque)
    asked: tuple[int, int] | None = None
    damaged: int = 0
    time: TransmitterTimeRx | None = None
    #: The live value, held back until the backfill before it succeeded.
    live: Glucose | None = None
    backfill_failures: int = 0
    #: Work was queued while handling this batch of events: a `Completed` in it is stale.
    more: bool = False
    completed: bool = False
    yielded: set[int] = field(default_factory=set)


class DexcomG6Session:
    """One connection to one G5/G6 transmitter (see the module docstring)."""

    def __init__(self, ctx: DeviceContext[G6Options]) -> None:
        self.identity: DeviceIdentity | None = None
        self._ctx = ctx
        self._options = ctx.options
        self._log = ctx.log.bind(transmitter=ctx.options.transmitter_id)
        self._name = advertised_name(ctx.options.transmitter_id)
        self._control_ready = False
        self._link = GattLink(
            ctx.device_id,
            bond=ctx.options.bond,
            noun="transmitter",
            log=self._log,
            timeout=RESPONSE_TIMEOUT,
            pair_timeout=BOND_TIMEOUT,
        )

    # -- connection --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        link = self._link
        await link.connect(
            self._ctx.ble or BleConfig(),
            self._matches,
            wanted=self._name,
            scan_timeout=self._options.scan_timeout,
            name=self._name,
        )
        try:
            honour_cancellation()
            self._log.info("transmitter_found", address=link.address, name=self._name)
            self._check_service()
            await link.subscribe(AUTHENTICATION, what="subscribe authentication")
        except BaseException:
            await self._close()
            raise
        self.identity = DeviceIdentity(
            manufacturer="Dexcom",
            model="G5/G6 transmitter",
            serial=self._options.transmitter_id,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    def _check_service(self) -> None:
        if not self._link.has_service(CGM_SERVICE):
            raise DeviceRefused(
                f"{self._name} ({self._link.address}) has no Dexcom G5/G6 CGM service "
                f"({CGM_SERVICE}): not a G5/G6 transmitter (G7 / ONE+ are not supported)",
                device=self._ctx.device_id,
            )

    async def _close(self) -> None:
        await self._link.close()
        honour_cancellation()

    def _matches(self, device: BLEDevice, adv: AdvertisementData) -> bool:
        address = self._options.address
        if address is not None and device.address.upper() != address:
            return False
        return (adv.local_name or device.name) == self._name

    async def _before(self, request: Request) -> None:
        """Control indications and Backfill notifications before the first Control write
        (once authenticated, and bonded)."""
        if request.characteristic == CONTROL and not self._control_ready:
            await self._link.subscribe(CONTROL, what="subscribe control")
            await self._link.subscribe(BACKFILL, what="subscribe backfill")
            self._control_ready = True

    async def _after(self, request: Request) -> None:
        """The transmitter asked for a bond: pair now (before it refuses Control)."""
        if request.label == "bond_request":
            await self._link.pair("bond request")

    # -- the procedure -----------------------------------------------------------------------

    def _refused(self, exc: AuthenticationFailed) -> DeviceRefused:
        opts = self._options
        return DeviceRefused(
            f"transmitter {opts.transmitter_id}: authentication failed ({exc.reason}): the "
            f"transmitter advertising as {self._name} does not share the configured "
            f"transmitter_id; check transmitter_id (or set address when two transmitters "
            f"ending in {opts.transmitter_id[-2:]} are in range)",
            device=self._ctx.device_id,
        )

    def _notified(self, g6: G6Session, uuid: str, data: bytes) -> list[G6Event]:
        if uuid == AUTHENTICATION:  # answers are read, as CGMBLEKit and xDrip do
            self._log.debug("authentication_indication_ignored", hex=data.hex())
            return []
        return self._feed(g6, uuid, data)

    def _feed(self, g6: G6Session, uuid: str, data: bytes) -> list[G6Event]:
        try:
            return g6.receive(uuid, data, now=self._ctx.now())
        except AuthenticationFailed as exc:
            raise self._refused(exc) from exc
        except ProtocolError:  # a characteristic outside the service: not one we listen to
            self._ctx.drop_packet(data, "unexpected_characteristic")
            return []

    def _resume(self) -> _Stored | None:
        """The newest stored reading, when it is this transmitter's."""
        resume = self._ctx.resume
        if resume is None:
            return None
        start = parse_session(resume.session)
        if resume.serial != self._options.transmitter_id or start is None:
            self._log.info("resume_other_transmitter", serial=resume.serial)
            return None
        return _Stored(resume.seq, start, session_epoch(resume.session), resume.time)

    async def readings(self) -> AsyncIterator[Reading]:
        """Backfilled records after the newest stored one, then the live value; ends after
        one wake-up's work (the supervisor scans again for the next one)."""
        opts = self._options
        g6 = G6Session(
            opts.transmitter_id,
            alternate=opts.alternate,
            bond=opts.bond != "never",
            g6_glucose=opts.g6_glucose,
        )
        loop: CollectorLoop[G6Event] = CollectorLoop(
            self._link,
            g6,
            lambda uuid, data: self._feed(g6, uuid, data),
            notified=lambda uuid, data: self._notified(g6, uuid, data),
            idle_timeout=RESPONSE_TIMEOUT,
            skip_refused=_never,
            before=self._before,
            after=self._after,
        )
        run = _Run(self._resume())
        async for events in loop.steps():
            honour_cancellation()
            run.more = False
            for reading in self._handle(g6, run, events):
                yield reading
            if g6.failed:
                raise DeviceError(
                    "authentication did not complete; trying again at the next wake-up",
                    device=self._ctx.device_id,
                )
            if run.completed:
                self._log.info("transmitter_done", backfilled_from=run.backfill_from)
                return
        raise DeviceError("the transmitter went silent", device=self._ctx.device_id)

    # -- events ------------------------------------------------------------------------------

    def _handle(self, g6: G6Session, run: _Run, events: list[G6Event]) -> Iterator[Reading]:
        for event in events:
            if isinstance(event, Glucose):
                run.live = event
            elif isinstance(event, BackfillRecords):
                yield from self._backfilled(g6, run, event)
            elif isinstance(event, BackfillDamaged):
                yield from self._damaged(g6, run, event)
            elif isinstance(event, TimeRead):
                self._time_read(g6, run, event)
            elif isinstance(event, Completed):
                if run.more:
                    continue  # a backfill was queued after it
                if run.live is not None:
                    yield from self._yield(run, [run.live])
                    run.live = None
                run.completed = True
            elif isinstance(event, ProcedureFailed):
                self._failed(g6, run, event)
            else:
                self._note(event)

    def _note(self, event: G6Event) -> None:
        """Events that only count or log."""
        log = self._log
        if isinstance(event, RecordRejected):
            self._ctx.drop_packet(event.data, event.reason)
        elif isinstance(event, Authenticated):
            log.info("transmitter_authenticated", bonded=event.bonded)
        elif isinstance(event, BondRequested):
            log.info("transmitter_bond_requested")
        elif isinstance(event, UnexpectedData):
            log.info("transmitter_unexpected_data", characteristic=event.characteristic)

    def _time_read(self, g6: G6Session, run: _Run, event: TimeRead) -> None:
        message = g6.time
        run.time = message
        if message is None or event.activation is None:
            return
        current = message.current_time
        session = message.session_start_time if message.has_session else None
        self._log.info(
            "transmitter_time",
            transmitter_time=current,
            session_start=session,
            activation=event.activation.isoformat(),
            status=event.status,
        )
        if session is None:
            self._log.warning("transmitter_no_session")
        start = self._anchor(run, event.activation, current)
        if start is None and session is not None and self._options.history > 0:
            start = max(session, current - int(self._options.history), 0)
        if start is not None and start <= current:
            run.backfill_from = start
            run.pending.append((start, current))
            self._ask_next(g6, run)

    def _anchor(self, run: _Run, activation: datetime, current: int) -> int | None:
        """Measure the transmitter's clock against the stored readings' anchor; choose the
        clock epoch; the first transmitter time to backfill (None: first contact).

        A G5/G6 has no calendar: its clock is its activation, as the hub anchored the stored
        readings, plus its time now. Against the hub's clock that is 0 while the transmitter
        counts as the hub does; a jump beyond `CLOCK_JUMP_S` is reported as the clock offset
        (kept until the next jump: the next readings are anchored anew). An activation that
        came later means the clock went back (a reset): its timestamps start again, so a new
        clock epoch (`session_id(start, epoch)`) keeps their ids apart from the stored ones,
        and the backfill starts at the new clock's time of the newest stored reading.
        """
        stored, known = run.stored, self._ctx.findings.clock_offset_s is not None
        if stored is None:
            if not known:
                self._ctx.set_clock_offset(0.0)  # first contact: the anchor is now
            return None
        offset = (stored.activation - activation).total_seconds()
        if abs(offset) > CLOCK_JUMP_S or not known:
            self._ctx.set_clock_offset(offset)
        if -offset <= CLOCK_JUMP_S:
            run.epoch, run.resume_session = stored.epoch, stored.session
            if offset > CLOCK_JUMP_S:
                self._log.warning("transmitter_clock_jumped_ahead", seconds=round(offset))
            return stored.seq + 1
        run.epoch = math.floor(activation.timestamp())
        since = math.ceil((stored.time - activation).total_seconds()) + 1
        self._log.warning(
            "transmitter_clock_went_back", seconds=round(-offset), transmitter_time=current
        )
        return max(since, 0)

    def _ask_next(self, g6: G6Session, run: _Run) -> bool:
        """Ask the next pending backfill range; False when none is left."""
        if not run.pending:
            return False
        run.asked = run.pending.popleft()
        run.more = True
        g6.request_backfill(*run.asked)
        return True

    def _backfilled(self, g6: G6Session, run: _Run, event: BackfillRecords) -> Iterator[Reading]:
        records = list(event.records)
        self._log.info("backfill_received", count=len(records), start=event.start, end=event.end)
        if records and run.stored is not None and event.start == run.backfill_from:
            oldest = min(r.transmitter_time for r in records)
            if oldest - event.start > BACKFILL_SLACK_S:  # e.g. the hub was away for days
                self._log.warning("backfill_gap", lost_from=event.start, lost_until=oldest)
        newest = max((r.transmitter_time for r in records), default=None)
        # full, or ending well before the end asked: the transmitter may have cut it
        if newest is not None and (
            len(records) >= MAX_BACKFILL_RECORDS or event.end - newest > BACKFILL_SLACK_S
        ):
            self._log.info("backfill_continue", start=newest + 1)
            run.pending.appendleft((newest + 1, event.end))
        for record in records:
            self._ctx.record_recovered(self._key(run, record.transmitter_time))
        yield from self._after_backfill(g6, run, records)

    def _after_backfill(
        self, g6: G6Session, run: _Run, records: list[Glucose]
    ) -> Iterator[Reading]:
        """Yield a backfill's records; ask the next range, or - none left: the time before
        the live value is covered - release the live value after them."""
        if not self._ask_next(g6, run) and run.live is not None:
            records = [r for r in records if r.transmitter_time != run.live.transmitter_time]
            records.append(run.live)
            run.live = None
        yield from self._yield(run, records)

    def _damaged(self, g6: G6Session, run: _Run, event: BackfillDamaged) -> Iterator[Reading]:
        """A damaged backfill: split a range of several records in two (the bad one is found
        in a few requests, the good ones flow); ask a single record again while
        `DeviceContext.record_damaged` says so, then pass over it."""
        run.damaged += 1
        if run.damaged > DAMAGED_PER_WAKEUP:
            raise DeviceError(
                f"{run.damaged} damaged backfills in one wake-up: asking again at the next one",
                device=self._ctx.device_id,
            )
        start, end = event.start, event.end
        stamps = sorted({t for t in event.timestamps if start <= t <= end})
        if len(stamps) > 1:
            middle = stamps[(len(stamps) - 1) // 2]
            self._ctx.drop_packet(event.data, event.reason)
            self._log.info("backfill_split", start=start, end=end, at=middle)
            run.pending.extendleft([(middle + 1, end), (start, middle)])
        else:
            at = stamps[0] if stamps else start
            position = f"transmitter time {at} (backfill {start}..{end})"
            if self._ctx.record_damaged(
                self._key(run, at), event.data, position=position, reason=event.reason
            ):
                run.pending.appendleft((start, end))
        yield from self._after_backfill(g6, run, [])

    def _key(self, run: _Run, ts: int) -> tuple[str, int]:
        """A record's key across connections: (session id, transmitter time)."""
        session = self._session_of(run, ts)
        return ("?" if session is None else session_id(session, run.epoch), ts)

    def _failed(self, g6: G6Session, run: _Run, event: ProcedureFailed) -> None:
        label = event.request.label
        self._log.warning("transmitter_procedure_failed", what=label, reason=event.reason)
        if event.data:
            self._ctx.drop_packet(event.data, event.reason)
        device = self._ctx.device_id
        if label == "time":
            raise DeviceError(
                f"transmitter time: {event.reason}; readings cannot be placed on the clock",
                device=device,
            )
        if label != "backfill":
            return  # glucose: the backfill covers it; auth steps: `g6.failed` ends the run
        run.backfill_failures += 1
        if run.backfill_failures >= BACKFILL_ATTEMPTS or run.asked is None:
            if run.live is not None:
                self._log.info("live_withheld", transmitter_time=run.live.transmitter_time)
            raise DeviceError(
                f"backfill failed {run.backfill_failures} times ({event.reason}); asking again "
                "at the next wake-up",
                device=device,
            )
        run.pending.appendleft(run.asked)
        self._ask_next(g6, run)

    def _session_of(self, run: _Run, ts: int) -> int | None:
        message = run.time
        if message is not None and message.has_session and ts >= message.session_start_time:
            return message.session_start_time
        if run.resume_session is not None and ts >= run.resume_session:
            return run.resume_session
        return None

    def _yield(self, run: _Run, events: Iterable[Glucose]) -> Iterator[Reading]:
        """Readings of `events`, oldest first, each transmitter time once per connection."""
        serial = self._options.transmitter_id
        for event in sorted(events, key=lambda e: e.transmitter_time):
            ts = event.transmitter_time
            if ts in run.yielded:
                continue
            run.yielded.add(ts)
            result = to_reading(
                event,
                device=self._ctx.device_id,
                serial=serial,
                session=self._session_of(run, ts),
                received=self._ctx.now(),
                epoch=run.epoch,
            )
            if isinstance(result, Skip):
                self._log.info("record_skipped", reason=result.reason, transmitter_time=ts)
                continue
            yield result
