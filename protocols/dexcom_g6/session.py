"""Sans-I/O Dexcom G5/G6 transmitter session (protocols.md §2.4-§2.6): bytes in, events out.

The family's API reference is the `protocols.dexcom_g6` package docstring. The driver owns the BLE
link, the clock and the timeouts; this object owns the procedure (CGMBLEKit `Transmitter.swift`
active mode): auth request -> read challenge -> answer -> read status -> (keep-alive + bond
request when not bonded) -> time -> glucose -> backfill `backfill_from`..transmitter now.
Authentication steps are a WRITE then a READ of Authentication, as CGMBLEKit and xDrip do; an
indication of the answer is accepted in place of the read value.
"""

from __future__ import annotations

import contextlib
import secrets
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from protocols.dexcom_g6.auth import (
    BOND_KEEP_ALIVE_S,
    END_BYTE_ALTERNATE,
    END_BYTE_STANDARD,
    AuthChallengeTx,
    AuthenticationFailed,
    AuthRequestRx,
    AuthRequestTx,
    AuthStatusRx,
    BondRequestTx,
    KeepAliveTx,
    auth_hash,
    normalize_transmitter_id,
)
from protocols.dexcom_g6.backfill import BackfillRx, BackfillStream, BackfillTx
from protocols.dexcom_g6.framing import (
    AUTHENTICATION,
    BACKFILL,
    COMMUNICATION,
    CONTROL,
    STATUS_LOW_BATTERY,
    Opcode,
)
from protocols.dexcom_g6.glucose import (
    RELIABLE_STATES,
    CalibrationState,
    GlucoseRecord,
    GlucoseRx,
    GlucoseTx,
    TransmitterTimeRx,
    TransmitterTimeTx,
    at,
    state_flags,
    state_name,
)
from protocols.errors import CrcError, ProtocolError
from protocols.gatt.session import (
    ProcedureFailed,
    RecordRejected,
    Request,
    RequestKind,
    SessionEvent,
    UnexpectedData,
)
from protocols.gatt.uuids import normalize_uuid

#: CGMBLEKit only trusts values inside 40..400 mg/dL (it clamps to them, §2.5).
GLUCOSE_MIN: Final = 40
GLUCOSE_MAX: Final = 400

G6Event = SessionEvent  # what `receive()` / `timeout()` return


@dataclass(frozen=True, slots=True)
class Authenticated(G6Event):
    """AuthStatus said authenticated; `bonded` False means a bond request follows (if enabled)."""

    bonded: bool


@dataclass(frozen=True, slots=True)
class BondRequested(G6Event):
    """The session will write `06 19` and `07`: pair (Just Works) right after the WRITE
    labelled "bond_request", then enable Control indications (allow 15 s, CGMBLEKit)."""


@dataclass(frozen=True, slots=True)
class TimeRead(G6Event):
    """Transmitter time 0x25. `activation` = now - `transmitter_time` (None without `now` and
    without a constructor `activation`); `session_start` None when no session runs."""

    activation: datetime | None
    transmitter_time: int
    session_start: datetime | None
    status: int


@dataclass(frozen=True, slots=True)
class Glucose(G6Event):
    """One glucose value (live 0x31/0x4F, or a backfill record when `backfill`).

    `value` is the raw 12-bit mg/dL, meaningful only when `reliable`; `glucose_mgdl` and
    `out_of_range` apply CGMBLEKit's validity rule. `time` = activation + `transmitter_time`
    (None while the activation is unknown). `sequence` is None for backfill records.
    """

    value: int
    transmitter_time: int
    time: datetime | None
    trend: float | None
    calibration_state: CalibrationState | int
    display_only: bool
    sequence: int | None = None
    status: int = 0
    backfill: bool = False

    @classmethod
    def from_record(
        cls,
        record: GlucoseRecord,
        activation: datetime | None,
        *,
        sequence: int | None = None,
        status: int = 0,
        backfill: bool = False,
    ) -> Glucose:
        """The event of one decoded record."""
        time = at(activation, record.timestamp)
        return cls(
            record.glucose,
            record.timestamp,
            time,
            record.trend_mgdl_min,
            record.state,
            record.display_only,
            sequence,
            status,
            backfill,
        )

    @property
    def reliable(self) -> bool:
        """State 6/7/14 and value ≥ 39 (CGMBLEKit)."""
        return self.calibration_state in RELIABLE_STATES and self.value >= 39

    @property
    def state_name(self) -> str:
        """ "ok", "warmup", "needs_calibration", "sensor_failed", "session_stopped", ..."""
        return state_name(self.calibration_state)

    @property
    def flags(self) -> tuple[str, ...]:
        """Reading status flags: the calibration state's, plus "battery_low" on status 0x81."""
        battery = ("battery_low",) if self.status == STATUS_LOW_BATTERY else ()
        return state_flags(self.calibration_state) + battery

    @property
    def glucose_mgdl(self) -> int | None:
        """The value when reliable and within 40..400 mg/dL, else None."""
        if self.reliable and GLUCOSE_MIN <= self.value <= GLUCOSE_MAX:
            return self.value
        return None

    @property
    def out_of_range(self) -> str | None:
        """ "low" (39) / "high" (> 400) for a reliable value outside 40..400 [L]."""
        if not self.reliable:
            return None
        if self.value < GLUCOSE_MIN:
            return "low"
        return "high" if self.value > GLUCOSE_MAX else None


@dataclass(frozen=True, slots=True)
class BackfillRecords(G6Event):
    """A backfill whose length and buffer CRC matched: its records, oldest first."""

    records: tuple[Glucose, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class BackfillDamaged(G6Event):
    """The backfill of `start`..`end` (as asked) arrived damaged: buffer length or CRC
    mismatch, frames out of sequence, or a summary that does not parse (`reason`:
    "crc_mismatch", "malformed", "frame_sequence"). `timestamps`: those of the records the
    frames seem to carry (unverified: where to split the range to find the bad one); `data`:
    the frames and the summary as received."""

    start: int
    end: int
    reason: str
    timestamps: tuple[int, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class Completed(G6Event):
    """Every queued step is done (or failed): disconnect, or queue more work."""


_RESPONSES: Final = {
    "time": frozenset({Opcode.TRANSMITTER_TIME_RX}),
    "glucose": frozenset({Opcode.GLUCOSE_RX, Opcode.GLUCOSE_G6_RX}),
    "backfill": frozenset({Opcode.BACKFILL_RX}),
}


def _reason(exc: ProtocolError) -> str:
    return "crc_mismatch" if isinstance(exc, CrcError) else "malformed"


class G6Session:
    """The hub side of one connection to a G5/G6 transmitter (see `protocols.dexcom_g6`)."""

    def __init__(
        self,
        transmitter_id: str,
        *,
        token: bytes | None = None,
        alternate: bool = False,
        bond: bool = True,
        g6_glucose: bool = False,
        backfill_from: int | None = None,
        activation: datetime | None = None,
        keep_alive_s: int = BOND_KEEP_ALIVE_S,
    ) -> None:
        """Set up the procedure (arguments documented in `protocols.dexcom_g6`)."""
        self.transmitter_id = normalize_transmitter_id(transmitter_id)
        self.token = secrets.token_bytes(8) if token is None else bytes(token)
        if len(self.token) != 8:
            raise ValueError("token must be 8 bytes")
        if backfill_from is not None and not 0 <= backfill_from <= 0xFFFFFFFF:
            raise ValueError(f"backfill_from {backfill_from} is not a uint32 transmitter time")
        if activation is not None and activation.tzinfo is None:
            raise ValueError("activation must be timezone-aware")
        if not 0 <= keep_alive_s <= 0xFF:
            raise ValueError("keep_alive_s must fit a byte")
        self.activation = activation.astimezone(UTC) if activation else None
        self.time: TransmitterTimeRx | None = None
        self.authenticated = False
        self.bonded: bool | None = None
        self.failed = False
        self._bond = bond
        self._keep_alive = keep_alive_s
        self._g6_glucose = g6_glucose
        self._backfill_from = backfill_from
        self._last_glucose: int | None = None
        end_byte = END_BYTE_ALTERNATE if alternate else END_BYTE_STANDARD
        request = AuthRequestTx(self.token, end_byte).build()
        self._auth: deque[Request] = deque(
            [_write(AUTHENTICATION, request, "auth_request"), _read_auth("auth_challenge")]
        )
        #: control steps; a tuple is a backfill (start, end or None = transmitter now)
        self._work: deque[Request | tuple[int, int | None]] = deque()
        self._awaiting: Request | None = None
        self._busy = False
        self._stream = BackfillStream()
        self._stream_error: str | None = None
        #: The range of the backfill asked last.
        self._asked: tuple[int, int] | None = None

    # -- commands -------------------------------------------------------------------------------

    def request_glucose(self) -> None:
        """Queue one more glucose request."""
        self._work.append(_write(CONTROL, GlucoseTx(self._g6_glucose).build(), "glucose", True))

    def request_backfill(self, start: int, end: int | None = None) -> None:
        """Queue a backfill of transmitter times start..end (None: the latest transmitter time
        seen, from the time message or a glucose timestamp; skipped while none is known)."""
        if not 0 <= start <= 0xFFFFFFFF or (end is not None and not 0 <= end <= 0xFFFFFFFF):
            raise ValueError("backfill bounds are uint32 transmitter times")
        self._work.append((start, end))

    # -- requests -------------------------------------------------------------------------------

    def next_request(self) -> Request | None:
        """The next GATT operation, or None (waiting for an answer, idle, or failed)."""
        if self._awaiting is not None or self.failed:
            return None
        if self._auth:
            request: Request | None = self._auth.popleft()
        else:
            request = self._next_work() if self.authenticated else None
            self._busy = self._busy or request is not None
        if request is not None and request.awaits_response:
            self._awaiting = request
        return request

    def _next_work(self) -> Request | None:
        """The first queued control step that still applies (backfills resolved now)."""
        while self._work:
            item = self._work.popleft()
            if isinstance(item, Request):
                return item
            start, end = item
            end = self._transmitter_now() if end is None else end
            if end is not None and start <= end:
                self._stream, self._stream_error = BackfillStream(), None
                self._asked = (start, end)
                data = BackfillTx(start, end).build()
                return _write(CONTROL, data, "backfill", True)
        return None

    def _transmitter_now(self) -> int | None:
        """The latest transmitter time seen (time message or glucose timestamp), if any."""
        current = None if self.time is None else self.time.current_time
        return max((t for t in (current, self._last_glucose) if t is not None), default=None)

    # -- input ----------------------------------------------------------------------------------

    def receive(
        self, characteristic: str | int, data: bytes, *, now: datetime | None = None
    ) -> list[G6Event]:
        """Feed a read value, notification or indication; returns what it meant.

        Raises `AuthenticationFailed` when the transmitter fails authentication and
        `ProtocolError` for a characteristic outside the G5/G6 service.
        """
        if now is not None and now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        uuid = normalize_uuid(characteristic)
        data = bytes(data)
        if uuid not in (AUTHENTICATION, CONTROL, BACKFILL, COMMUNICATION):
            raise ProtocolError(f"not a G5/G6 characteristic: {uuid}", data)
        events: list[G6Event] = []
        if self.failed:
            return events
        if uuid == AUTHENTICATION:
            self._authentication(data, events)
        elif uuid == CONTROL:
            self._control(data, now, events)
        elif uuid == BACKFILL:
            self._frame(data, events)
        else:
            events.append(UnexpectedData(uuid, data))
        self._check_idle(events)
        return events

    def timeout(self) -> list[G6Event]:
        """The awaited answer did not come: fail that step (all of them during authentication)."""
        request, self._awaiting = self._awaiting, None
        if request is None:
            return []
        if request.characteristic == AUTHENTICATION:
            self.failed = True
        events: list[G6Event] = [ProcedureFailed(request, "timeout")]
        self._check_idle(events)
        return events

    def _check_idle(self, events: list[G6Event]) -> None:
        if not self._busy or self._awaiting is not None or self.failed:
            return
        # resolve queued backfills: one that no longer applies must not keep us busy
        request = self._next_work()
        if request is not None:
            self._work.appendleft(request)
            return
        self._busy = False
        events.append(Completed())

    def _take(self, characteristic: str, labels: frozenset[str] | None = None) -> Request | None:
        request = self._awaiting
        if request is None or request.characteristic != characteristic:
            return None
        if labels is not None and request.label not in labels:
            return None
        self._awaiting = None
        return request

    # -- authentication -------------------------------------------------------------------------

    def _authentication(self, data: bytes, events: list[G6Event]) -> None:
        request = self._take(AUTHENTICATION)
        if request is None:  # nothing asked: a late or unsolicited value
            events.append(UnexpectedData(AUTHENTICATION, data))
            return
        try:
            if request.label == "auth_challenge":
                self._challenge(AuthRequestRx.parse(data), data)
            else:
                self._status(AuthStatusRx.parse(data), data, events)
        except AuthenticationFailed:
            self.failed = True
            raise
        except ProtocolError as exc:
            self.failed = True
            events.append(ProcedureFailed(request, _reason(exc), None, data))

    def _challenge(self, message: AuthRequestRx, data: bytes) -> None:
        if message.token_hash != auth_hash(self.transmitter_id, self.token):
            raise AuthenticationFailed(
                "transmitter failed auth challenge: token hash does not match the transmitter id",
                data,
                reason="token_hash_mismatch",
            )
        answer = AuthChallengeTx(auth_hash(self.transmitter_id, message.challenge)).build()
        self._auth.extend(
            [_write(AUTHENTICATION, answer, "auth_answer"), _read_auth("auth_status")]
        )

    def _status(self, message: AuthStatusRx, data: bytes, events: list[G6Event]) -> None:
        if not message.is_authenticated:
            raise AuthenticationFailed(
                "transmitter rejected our auth answer", data, reason="challenge_rejected"
            )
        self.authenticated, self.bonded = True, message.is_bonded
        events.append(Authenticated(message.is_bonded))
        if not message.is_bonded and self._bond:
            events.append(BondRequested())
            keep_alive = KeepAliveTx(self._keep_alive).build()
            self._auth.extend(
                [
                    _write(AUTHENTICATION, keep_alive, "keep_alive"),
                    _write(AUTHENTICATION, BondRequestTx().build(), "bond_request"),
                ]
            )
        self._work.extendleft(reversed(self._initial_steps()))

    def _initial_steps(self) -> list[Request | tuple[int, int | None]]:
        steps: list[Request | tuple[int, int | None]] = [
            _write(CONTROL, TransmitterTimeTx().build(), "time", True),
            _write(CONTROL, GlucoseTx(self._g6_glucose).build(), "glucose", True),
        ]
        if self._backfill_from is not None:
            steps.append((self._backfill_from, None))
        return steps

    # -- control --------------------------------------------------------------------------------

    def _control(self, data: bytes, now: datetime | None, events: list[G6Event]) -> None:
        opcode = data[0] if data else None
        label = next((name for name, ops in _RESPONSES.items() if opcode in ops), None)
        if label is None:
            events.append(UnexpectedData(CONTROL, data))
            return
        request = self._take(CONTROL, frozenset({label}))
        try:
            if label == "time":
                self._time(TransmitterTimeRx.parse(data), now, events)
            elif label == "glucose":
                self._glucose(GlucoseRx.parse(data), events)
            else:
                self._summary(BackfillRx.parse(data), request, data, events)
        except ProtocolError as exc:
            if label == "backfill" and request is not None:
                self._damaged(_reason(exc), data, events)
            elif request is None:
                events.append(RecordRejected(_reason(exc), data))
            else:
                events.append(ProcedureFailed(request, _reason(exc), None, data))

    def _time(
        self, message: TransmitterTimeRx, now: datetime | None, events: list[G6Event]
    ) -> None:
        self.time = message
        if now is not None:
            # a `now` within 136 years of datetime.min overflows: keep what we had
            with contextlib.suppress(OverflowError):
                self.activation = message.activation(now.astimezone(UTC))
        start = at(self.activation, message.session_start_time) if message.has_session else None
        events.append(TimeRead(self.activation, message.current_time, start, message.status))

    def _glucose(self, message: GlucoseRx, events: list[G6Event]) -> None:
        record = message.record
        self._last_glucose = record.timestamp
        events.append(
            Glucose.from_record(
                record, self.activation, sequence=message.sequence, status=message.status
            )
        )

    def _summary(
        self, summary: BackfillRx, request: Request | None, data: bytes, events: list[G6Event]
    ) -> None:
        stream, reason = self._stream, self._stream_error and "frame_sequence"
        found: list[GlucoseRecord] = []
        if reason is None:
            try:
                stream.check(summary)
                found = stream.records()
            except ProtocolError as exc:
                reason = _reason(exc)
        if reason is not None:
            if request is None:  # not asked (late): nothing to ask again
                self._stream, self._stream_error = BackfillStream(), None
                events.append(RecordRejected(reason, data))
            else:
                self._damaged(reason, data, events)
            return
        self._stream, self._stream_error = BackfillStream(), None
        records = tuple(
            Glucose.from_record(r, self.activation, status=summary.status, backfill=True)
            for r in found
        )
        events.append(BackfillRecords(records, summary.start, summary.end))

    def _damaged(self, reason: str, summary: bytes, events: list[G6Event]) -> None:
        """The backfill asked last arrived damaged: report its range and what it seemed to
        hold."""
        stream = self._stream
        self._stream, self._stream_error = BackfillStream(), None
        try:
            stamps = tuple(r.timestamp for r in stream.records())
        except ProtocolError:
            stamps = ()
        start, end = self._asked or (0, 0)
        data = b"".join(stream.frames) + summary
        events.append(BackfillDamaged(start, end, reason, stamps, data))

    def _frame(self, data: bytes, events: list[G6Event]) -> None:
        try:
            self._stream.append(data)
        except ProtocolError as exc:
            self._stream_error = str(exc)
            events.append(RecordRejected("malformed", data))
            return
        if data[0] == 1:
            self._stream_error = None


def _write(characteristic: str, data: bytes, label: str, awaits: bool = False) -> Request:
    return Request(RequestKind.WRITE, characteristic, data, awaits, label)


def _read_auth(label: str) -> Request:
    return Request(RequestKind.READ, AUTHENTICATION, b"", True, label)
