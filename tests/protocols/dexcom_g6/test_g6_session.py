"""protocols.dexcom_g6 session: the G5/G6 procedure against a fake transmitter.

The fake is built from the same codecs an emulator would use: it answers the authentication
reads, the Control commands and the backfill (frames on Backfill, then the summary), with
switches for the faults under test. Fuzzing at the end: arbitrary and mutated inputs give
events or ProtocolError only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.dexcom_g6.auth import (
    AuthChallengeTx,
    AuthenticationFailed,
    AuthRequestRx,
    AuthRequestTx,
    AuthStatusRx,
    BondRequestTx,
    KeepAliveTx,
    auth_hash,
    parse_authentication,
)
from protocols.dexcom_g6.backfill import BackfillRx, BackfillTx, build_backfill_frames
from protocols.dexcom_g6.control import parse_control
from protocols.dexcom_g6.framing import AUTHENTICATION, BACKFILL, COMMUNICATION, CONTROL
from protocols.dexcom_g6.glucose import (
    CalibrationState,
    GlucoseRecord,
    GlucoseRx,
    GlucoseTx,
    TransmitterTimeRx,
    TransmitterTimeTx,
)
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
from protocols.gatt.session import (
    ProcedureFailed,
    RecordRejected,
    Request,
    RequestKind,
    UnexpectedData,
)

#: A hang is a failure: every input is handled in bounded time.
pytestmark = pytest.mark.timeout(20)

TXID = "8G1234"
TOKEN = bytes.fromhex("118a8327702f45ee")
NOW = datetime(2024, 5, 2, 10, 15, tzinfo=UTC)
CURRENT = 5_440_700  # transmitter seconds since activation at NOW
ACTIVATION = NOW - timedelta(seconds=CURRENT)
RECORDS = [  # the verified backfill vector of protocols.md §2.6
    GlucoseRecord(5_439_415, 139, 6, -18),
    GlucoseRecord(5_439_715, 133, 6, -21),
    GlucoseRecord(5_440_015, 128, 6, -18),
    GlucoseRecord(5_440_314, 126, 6, -11),
    GlucoseRecord(5_440_614, 121, 6, -8),
]
LIVE = GlucoseRecord(5_440_614, 121, 6, -8)

Inputs = list[tuple[str, bytes]]


@dataclass
class FakeTransmitter:
    """A G5/G6 transmitter built from protocols.dexcom_g6 (what a Bumble emulator would run)."""

    txid: str = TXID
    bonded: bool = False
    reject_challenge: bool = False
    current: int = CURRENT
    session_start: int = 5_000_000
    live: GlucoseRecord = LIVE
    records: Sequence[GlucoseRecord] = tuple(RECORDS)
    status: int = 0
    corrupt_frame: bool = False
    drop_frame: int | None = None
    silent: frozenset[str] = frozenset()  # request labels left unanswered
    auth_value: bytes = b""
    end_byte: int | None = None
    keep_alive: int | None = None
    bond_requested: bool = False
    written: list[bytes] = field(default_factory=list)
    challenge: bytes = bytes.fromhex("a1a2a3a4a5a6a7a8")

    def handle(self, request: Request) -> Inputs:
        """The values and indications that answer one request."""
        if request.label in self.silent:
            return []
        if request.kind is RequestKind.READ:
            assert request.characteristic == AUTHENTICATION
            return [(AUTHENTICATION, self.auth_value)]
        self.written.append(request.data)
        if request.characteristic == AUTHENTICATION:
            self._auth(request.data)
            return []
        assert request.characteristic == CONTROL
        return self._control(request.data)

    def _auth(self, data: bytes) -> None:
        message = parse_authentication(data)
        if isinstance(message, AuthRequestTx):
            self.end_byte = message.end_byte
            token_hash = auth_hash(self.txid, message.token)
            self.auth_value = AuthRequestRx(token_hash, self.challenge).build()
        elif isinstance(message, AuthChallengeTx):
            ok = message.challenge_hash == auth_hash(self.txid, self.challenge)
            ok = ok and not self.reject_challenge
            self.auth_value = AuthStatusRx(int(ok), int(self.bonded)).build()
        elif isinstance(message, KeepAliveTx):
            self.keep_alive = message.seconds
        elif isinstance(message, BondRequestTx):
            self.bond_requested = self.bonded = True

    def _control(self, data: bytes) -> Inputs:
        message = parse_control(data)
        if isinstance(message, TransmitterTimeTx):
            reply = TransmitterTimeRx(self.status, self.current, self.session_start)
            return [(CONTROL, reply.build())]
        if isinstance(message, GlucoseTx):
            reply_g = GlucoseRx(self.status, 2664, self.live, g6=message.g6)
            return [(CONTROL, reply_g.build())]
        assert isinstance(message, BackfillTx)
        chosen = [r for r in self.records if message.start <= r.timestamp <= message.end]
        frames = build_backfill_frames(chosen)
        summary = BackfillRx.for_frames(frames, message.start, message.end, status=self.status)
        if self.corrupt_frame:
            frames[0] = frames[0][:-1] + bytes((frames[0][-1] ^ 0xFF,))
        if self.drop_frame is not None:
            del frames[self.drop_frame]
        return [(BACKFILL, f) for f in frames] + [(CONTROL, summary.build())]


def drive(
    session: G6Session, tx: FakeTransmitter, now: datetime | None = NOW, log: Inputs | None = None
) -> tuple[list[G6Event], list[Request]]:
    """Run the session to idle: (events, requests performed)."""
    events: list[G6Event] = []
    requests: list[Request] = []
    for _ in range(50):
        request = session.next_request()
        if request is None:
            break
        requests.append(request)
        answers = tx.handle(request)
        if request.awaits_response and not answers:
            events += session.timeout()
        for uuid, data in answers:
            if log is not None:
                log.append((uuid, data))
            events += session.receive(uuid, data, now=now)
    return events, requests


def of(events: Sequence[G6Event], kind: type[G6Event]) -> list[G6Event]:
    return [e for e in events if isinstance(e, kind)]


def test_full_flow_auth_bond_time_glucose_backfill() -> None:
    session = G6Session(TXID, token=TOKEN, backfill_from=5_439_415)
    tx = FakeTransmitter()
    events, requests = drive(session, tx)
    assert [r.label for r in requests] == [
        "auth_request",
        "auth_challenge",
        "auth_answer",
        "auth_status",
        "keep_alive",
        "bond_request",
        "time",
        "glucose",
        "backfill",
    ]
    assert [type(e) for e in events] == [
        Authenticated,
        BondRequested,
        TimeRead,
        Glucose,
        BackfillRecords,
        Completed,
    ]
    assert events[0] == Authenticated(bonded=False)
    assert (tx.keep_alive, tx.bond_requested, tx.end_byte) == (25, True, 0x02)
    assert requests[0].data == bytes.fromhex("01118a8327702f45ee02")
    assert requests[4].data == bytes.fromhex("0619")
    assert requests[5].data == b"\x07"
    assert (requests[6].data, requests[7].data) == (
        bytes.fromhex("24e664"),
        bytes.fromhex("305336"),
    )
    assert session.authenticated
    assert session.bonded is False
    assert not session.failed
    assert session.next_request() is None


def test_time_gives_the_activation_date() -> None:
    events, _ = drive(G6Session(TXID, token=TOKEN), FakeTransmitter(bonded=True))
    (time,) = of(events, TimeRead)
    assert time == TimeRead(ACTIVATION, CURRENT, ACTIVATION + timedelta(seconds=5_000_000), 0)


def test_glucose_event_carries_the_reading() -> None:
    session = G6Session(TXID, token=TOKEN)
    events, _ = drive(session, FakeTransmitter(bonded=True))
    (glucose,) = of(events, Glucose)
    assert isinstance(glucose, Glucose)
    assert (glucose.value, glucose.transmitter_time, glucose.sequence) == (121, 5_440_614, 2664)
    assert glucose.time == ACTIVATION + timedelta(seconds=5_440_614)
    assert glucose.trend == pytest.approx(-0.8)
    assert glucose.calibration_state is CalibrationState.OK
    assert (glucose.display_only, glucose.backfill, glucose.reliable) == (False, False, True)
    assert (glucose.glucose_mgdl, glucose.out_of_range, glucose.flags) == (121, None, ())
    assert glucose.state_name == "ok"


def test_backfill_request_and_records_match_the_verified_vector() -> None:
    tx = FakeTransmitter(bonded=True, current=5_440_614)
    log: Inputs = []
    events, requests = drive(G6Session(TXID, token=TOKEN, backfill_from=5_439_415), tx, log=log)
    assert requests[-1].data == bytes.fromhex("50050200b7ff5200660453000000000000007138")
    assert [d.hex() for u, d in log if u == BACKFILL] == [
        "0100bc460000b7ff52008b0006eee30053008500",
        "020006eb0f025300800006ee3a0353007e0006f5",
        "030066045300790006f8",
    ]
    assert log[-1] == (CONTROL, bytes.fromhex("51000100b7ff52006604530032000000e6cb9805"))
    (backfill,) = of(events, BackfillRecords)
    assert isinstance(backfill, BackfillRecords)
    assert (backfill.start, backfill.end) == (5_439_415, 5_440_614)
    values = [(g.transmitter_time, g.value, g.trend) for g in backfill.records]
    assert values == [(r.timestamp, r.glucose, r.trend_mgdl_min) for r in RECORDS]
    assert all(g.backfill and g.sequence is None for g in backfill.records)
    activation = NOW - timedelta(seconds=5_440_614)
    assert backfill.records[0].time == activation + timedelta(seconds=5_439_415)


def test_wrong_transmitter_id_fails_authentication() -> None:
    session = G6Session("123456", token=TOKEN)
    tx = FakeTransmitter(txid=TXID)
    with pytest.raises(AuthenticationFailed) as info:
        drive(session, tx)
    assert info.value.reason == "token_hash_mismatch"
    assert info.value.retryable is False
    assert info.value.data[0] == 0x03
    assert session.failed
    assert session.next_request() is None
    assert session.receive(AUTHENTICATION, b"\x05\x01\x01") == []


def test_rejected_challenge_fails_authentication() -> None:
    session = G6Session(TXID, token=TOKEN)
    with pytest.raises(AuthenticationFailed) as info:
        drive(session, FakeTransmitter(reject_challenge=True))
    assert info.value.reason == "challenge_rejected"
    assert not session.authenticated


def test_bonded_transmitter_skips_the_bond_request() -> None:
    tx = FakeTransmitter(bonded=True)
    events, requests = drive(G6Session(TXID, token=TOKEN), tx)
    assert "bond_request" not in [r.label for r in requests]
    assert not of(events, BondRequested)
    assert events[0] == Authenticated(bonded=True)
    assert tx.keep_alive is None


def test_bond_can_be_left_to_the_driver() -> None:
    events, requests = drive(G6Session(TXID, token=TOKEN, bond=False), FakeTransmitter())
    assert "bond_request" not in [r.label for r in requests]
    assert not of(events, BondRequested)


def test_alternate_slot_sets_the_end_byte() -> None:
    tx = FakeTransmitter(bonded=True)
    drive(G6Session(TXID, token=TOKEN, alternate=True), tx)
    assert tx.end_byte == 0x01


def test_g6_glucose_request_and_0x4f_reply() -> None:
    tx = FakeTransmitter(bonded=True)
    events, requests = drive(G6Session(TXID, token=TOKEN, g6_glucose=True), tx)
    assert requests[-1].data == bytes.fromhex("4e0aa9")
    assert len(of(events, Glucose)) == 1


def test_random_token_by_default() -> None:
    a, b = G6Session(TXID), G6Session(TXID)
    assert len(a.token) == 8
    assert a.token != b.token
    events, _ = drive(a, FakeTransmitter(bonded=True))
    assert of(events, Glucose)


def test_without_now_the_known_activation_is_used() -> None:
    known = ACTIVATION - timedelta(seconds=10)
    session = G6Session(TXID, token=TOKEN, activation=known)
    events, _ = drive(session, FakeTransmitter(bonded=True), now=None)
    (time,) = of(events, TimeRead)
    assert isinstance(time, TimeRead)
    assert time.activation == known
    (glucose,) = of(events, Glucose)
    assert isinstance(glucose, Glucose)
    assert glucose.time == known + timedelta(seconds=5_440_614)


def test_without_now_or_activation_times_are_unknown() -> None:
    events, _ = drive(G6Session(TXID, token=TOKEN), FakeTransmitter(bonded=True), now=None)
    (glucose,) = of(events, Glucose)
    assert isinstance(glucose, Glucose)
    assert glucose.time is None


def test_backfill_crc_mismatch_is_reported() -> None:
    tx = FakeTransmitter(bonded=True, corrupt_frame=True)
    events, _ = drive(G6Session(TXID, token=TOKEN, backfill_from=5_439_415), tx)
    assert not of(events, BackfillRecords)
    (failed,) = of(events, BackfillDamaged)
    assert isinstance(failed, BackfillDamaged)
    assert failed.reason == "crc_mismatch"
    # the range asked, and the (unverified) timestamps of the five records it seemed to hold
    assert (failed.start, failed.timestamps[0], len(failed.timestamps)) == (5_439_415,) * 2 + (5,)
    assert failed.data.startswith(bytes.fromhex("0100bc46"))
    assert failed.data[-20] == 0x51
    assert isinstance(events[-1], Completed)


def test_missing_middle_frame_is_a_sequence_error() -> None:
    tx = FakeTransmitter(bonded=True, drop_frame=1)
    events, _ = drive(G6Session(TXID, token=TOKEN, backfill_from=5_439_415), tx)
    assert of(events, RecordRejected)
    (failed,) = of(events, BackfillDamaged)
    assert isinstance(failed, BackfillDamaged)
    assert failed.reason == "frame_sequence"


def test_missing_last_frame_is_a_length_error() -> None:
    tx = FakeTransmitter(bonded=True, drop_frame=2)
    events, _ = drive(G6Session(TXID, token=TOKEN, backfill_from=5_439_415), tx)
    (failed,) = of(events, BackfillDamaged)
    assert isinstance(failed, BackfillDamaged)
    assert failed.reason == "malformed"


def test_backfill_from_the_future_is_skipped() -> None:
    events, requests = drive(
        G6Session(TXID, token=TOKEN, backfill_from=CURRENT + 1), FakeTransmitter(bonded=True)
    )
    assert "backfill" not in [r.label for r in requests]
    assert isinstance(events[-1], Completed)


def test_empty_backfill() -> None:
    tx = FakeTransmitter(bonded=True, records=())
    events, _ = drive(G6Session(TXID, token=TOKEN, backfill_from=1), tx)
    (backfill,) = of(events, BackfillRecords)
    assert backfill == BackfillRecords((), 1, CURRENT)


def test_more_work_after_completed() -> None:
    session = G6Session(TXID, token=TOKEN)
    tx = FakeTransmitter(bonded=True)
    events, _ = drive(session, tx)
    assert isinstance(events[-1], Completed)
    session.request_backfill(5_439_415, 5_440_015)
    session.request_glucose()
    events, requests = drive(session, tx)
    assert [r.label for r in requests] == ["backfill", "glucose"]
    (backfill,) = of(events, BackfillRecords)
    assert isinstance(backfill, BackfillRecords)
    assert len(backfill.records) == 3
    assert [type(e) for e in events] == [BackfillRecords, Glucose, Completed]


def test_commands_wait_for_authentication() -> None:
    session = G6Session(TXID, token=TOKEN)
    session.request_glucose()
    assert session.next_request() == Request(
        RequestKind.WRITE,
        AUTHENTICATION,
        bytes.fromhex("01118a8327702f45ee02"),
        False,
        "auth_request",
    )


def test_auth_timeout_fails_the_session() -> None:
    session = G6Session(TXID, token=TOKEN)
    events, requests = drive(session, FakeTransmitter(silent=frozenset({"auth_challenge"})))
    assert [r.label for r in requests] == ["auth_request", "auth_challenge"]
    (failed,) = events
    assert isinstance(failed, ProcedureFailed)
    assert failed.reason == "timeout"
    assert session.failed


def test_control_timeout_skips_the_step() -> None:
    session = G6Session(TXID, token=TOKEN, backfill_from=5_439_415)
    events, requests = drive(session, FakeTransmitter(bonded=True, silent=frozenset({"time"})))
    assert [type(e) for e in events] == [
        Authenticated,
        ProcedureFailed,
        Glucose,
        BackfillRecords,  # up to the last glucose time, since the time read failed
        Completed,
    ]
    assert requests[-1].data == BackfillTx(5_439_415, 5_440_614).build()


def test_answer_by_indication_instead_of_read() -> None:
    session = G6Session(TXID, token=TOKEN)
    assert session.next_request() is not None  # auth_request
    read = session.next_request()
    assert read is not None
    assert read.kind is RequestKind.READ
    challenge = bytes(8)
    rx = AuthRequestRx(auth_hash(TXID, TOKEN), challenge).build()
    assert session.receive(AUTHENTICATION, rx) == []
    answer = session.next_request()
    assert answer is not None
    assert answer.data == AuthChallengeTx(auth_hash(TXID, challenge)).build()
    # the read the driver still performs returns the same value: nobody waits for it
    assert session.receive(AUTHENTICATION, rx) == [UnexpectedData(AUTHENTICATION, rx)]


def test_malformed_auth_answer_fails_the_session() -> None:
    session = G6Session(TXID, token=TOKEN)
    session.next_request()
    request = session.next_request()
    (failed,) = session.receive(AUTHENTICATION, b"\x03\x00")
    assert failed == ProcedureFailed(request, "malformed", None, b"\x03\x00")  # type: ignore[arg-type]
    assert session.failed


def authenticated_session(**kwargs: object) -> G6Session:
    session = G6Session(TXID, token=TOKEN, **kwargs)  # type: ignore[arg-type]
    tx = FakeTransmitter(bonded=True)
    for _ in range(4):
        request = session.next_request()
        assert request is not None
        for uuid, data in tx.handle(request):
            session.receive(uuid, data, now=NOW)
    assert session.authenticated
    return session


def test_bad_crc_on_an_awaited_answer() -> None:
    session = authenticated_session()
    request = session.next_request()
    assert request is not None
    assert request.label == "time"
    bad = bytearray(TransmitterTimeRx(0, CURRENT).build())
    bad[3] ^= 1
    (failed,) = session.receive(CONTROL, bytes(bad), now=NOW)
    assert isinstance(failed, ProcedureFailed)
    assert failed.reason == "crc_mismatch"
    assert session.next_request() is not None  # glucose goes on


def test_unsolicited_messages() -> None:
    session = authenticated_session()
    glucose = GlucoseRx(0x81, 7, GlucoseRecord(100, 39, 2, 127)).build()
    (event,) = session.receive(CONTROL, glucose, now=NOW)
    assert isinstance(event, Glucose)
    assert event.flags == ("warmup", "battery_low")
    assert (event.glucose_mgdl, event.out_of_range, event.trend) == (None, None, None)
    assert session.receive(CONTROL, bytes.fromhex("1c00")) == [
        UnexpectedData(CONTROL, bytes.fromhex("1c00"))
    ]
    assert session.receive(CONTROL, b"") == [UnexpectedData(CONTROL, b"")]
    assert session.receive(COMMUNICATION, b"\x01") == [UnexpectedData(COMMUNICATION, b"\x01")]
    assert session.receive(AUTHENTICATION, b"\x05\x01\x01") == [
        UnexpectedData(AUTHENTICATION, b"\x05\x01\x01")
    ]
    (rejected,) = session.receive(CONTROL, glucose[:-1] + b"\x00")
    assert isinstance(rejected, RecordRejected)


def test_out_of_range_values() -> None:
    low = Glucose(39, 0, None, None, CalibrationState.OK, False)
    high = Glucose(401, 0, None, None, CalibrationState.NEED_CALIBRATION, False)
    assert (low.glucose_mgdl, low.out_of_range) == (None, "low")
    assert (high.glucose_mgdl, high.out_of_range) == (None, "high")
    assert high.flags == ("needs_calibration",)


def test_interface_errors() -> None:
    session = G6Session(TXID)
    with pytest.raises(ProtocolError, match="not a G5/G6 characteristic"):
        session.receive("00002aa7-0000-1000-8000-00805f9b34fb", b"")
    with pytest.raises(ValueError, match="aware"):
        session.receive(CONTROL, b"", now=datetime(2024, 1, 1))  # noqa: DTZ001
    for kwargs in (
        {"token": b"1"},
        {"backfill_from": -1},
        {"activation": datetime(2024, 1, 1)},  # noqa: DTZ001
        {"keep_alive_s": 256},
    ):
        with pytest.raises(ValueError):  # noqa: PT011
            G6Session(TXID, **kwargs)
    with pytest.raises(ValueError, match="uint32"):
        session.request_backfill(1 << 32)
    assert session.timeout() == []


def test_uuid_forms_are_accepted() -> None:
    session = authenticated_session()
    assert session.receive(CONTROL.upper(), b"\x1c") == [UnexpectedData(CONTROL, b"\x1c")]


# -- fuzzing --------------------------------------------------------------------------------

CHARACTERISTICS = [AUTHENTICATION, CONTROL, BACKFILL, COMMUNICATION]


def transcript(**fake: object) -> Inputs:
    """The inputs a well-behaved transmitter gives one full session."""
    log: Inputs = []
    tx = FakeTransmitter(**fake)  # type: ignore[arg-type]
    drive(G6Session(TXID, token=TOKEN, backfill_from=5_439_415), tx, log=log)
    return log


TRANSCRIPTS = [transcript(), transcript(bonded=True), transcript(records=())]


def replay(inputs: Inputs, steps: Sequence[int]) -> None:
    """Feed `inputs` with next_request()/timeout() in between; only ProtocolError may escape."""
    session = G6Session(TXID, token=TOKEN, backfill_from=5_439_415)
    try:
        for (uuid, data), step in zip(inputs, steps, strict=False):
            for _ in range(step % 4):
                session.next_request()
            if step % 7 == 0:
                session.timeout()
            events = session.receive(uuid, data, now=NOW)
            assert all(isinstance(e, G6Event) for e in events)
        for _ in range(20):
            if session.next_request() is None:
                break
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(CHARACTERISTICS), st.binary(max_size=24)), max_size=25),
    st.lists(st.integers(0, 20), min_size=25, max_size=25),
)
def test_fuzz_arbitrary_inputs(inputs: Inputs, steps: list[int]) -> None:
    replay(inputs, steps)


@st.composite
def mutated_transcript(draw: st.DrawFn) -> Inputs:
    inputs = list(draw(st.sampled_from(TRANSCRIPTS)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(inputs) - 1))
        uuid, data = inputs[i]
        action = draw(st.sampled_from(["flip", "truncate", "extend", "drop", "dup", "move"]))
        if action == "flip" and data:
            j = draw(st.integers(0, len(data) - 1))
            data = data[:j] + bytes((data[j] ^ draw(st.integers(1, 255)),)) + data[j + 1 :]
        elif action == "truncate":
            data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
        elif action == "extend":
            data += draw(st.binary(min_size=1, max_size=4))
        elif action == "drop":
            del inputs[i]
            continue
        elif action == "dup":
            inputs.insert(i, (uuid, data))
        else:
            uuid = draw(st.sampled_from(CHARACTERISTICS))
        inputs[i] = (uuid, data)
    return inputs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_transcript(), st.lists(st.integers(0, 20), min_size=25, max_size=25))
def test_fuzz_mutated_transcripts(inputs: Inputs, steps: list[int]) -> None:
    replay(inputs, steps)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.sampled_from(["auth_challenge", "auth_status"]))
def test_fuzz_authentication_answers(data: bytes, label: str) -> None:
    session = G6Session(TXID, token=TOKEN)
    tx = FakeTransmitter()
    while (request := session.next_request()) is not None and request.label != label:
        for uuid, value in tx.handle(request):
            session.receive(uuid, value, now=NOW)
    try:
        events = session.receive(AUTHENTICATION, data, now=NOW)
    except AuthenticationFailed:
        assert session.failed
        return
    assert session.failed or session.authenticated or events == []
