"""protocols.dexcom_g6 codecs: every VERIFIED vector of protocols.md §2 (Appendix A), both ways.

Vectors come from CGMBLEKit's unit tests and an xdrip-js log, as quoted in protocols.md §2.4-§2.6.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from protocols.crc import append_xmodem_crc, crc16_xmodem, split_xmodem_crc
from protocols.dexcom_g6.auth import (
    AuthChallengeTx,
    AuthenticationFailed,
    AuthRequestRx,
    AuthRequestTx,
    AuthStatusRx,
    BondRequestTx,
    KeepAliveTx,
    auth_hash,
    auth_key,
    normalize_transmitter_id,
    parse_authentication,
)
from protocols.dexcom_g6.backfill import (
    DEFAULT_HEADER,
    BackfillRx,
    BackfillStream,
    BackfillTx,
    build_backfill_frames,
)
from protocols.dexcom_g6.control import parse_control
from protocols.dexcom_g6.framing import (
    ADVERTISED_SERVICE,
    AUTHENTICATION,
    BACKFILL,
    CGM_SERVICE,
    COMMUNICATION,
    CONTROL,
    NO_SESSION,
    Opcode,
    advertised_name,
)
from protocols.dexcom_g6.glucose import (
    CalibrationState,
    GlucoseRecord,
    GlucoseRx,
    GlucoseTx,
    TransmitterTimeRx,
    TransmitterTimeTx,
    state_flags,
    state_name,
)
from protocols.errors import CrcError, ProtocolError

FRAMES = [
    bytes.fromhex("0100bc460000b7ff52008b0006eee30053008500"),
    bytes.fromhex("020006eb0f025300800006ee3a0353007e0006f5"),
    bytes.fromhex("030066045300790006f8"),
]
SUMMARY = bytes.fromhex("51000100b7ff52006604530032000000e6cb9805")
BACKFILL_REQUEST = bytes.fromhex("50050200b7ff5200660453000000000000007138")
BACKFILL_RECORDS = [  # (timestamp, mg/dL, state, trend) — protocols.md §2.6
    (5439415, 139, 6, -18),
    (5439715, 133, 6, -21),
    (5440015, 128, 6, -18),
    (5440314, 126, 6, -11),
    (5440614, 121, 6, -8),
]


def test_uuids_are_the_cgm_service_family() -> None:
    assert ADVERTISED_SERVICE == "0000febc-0000-1000-8000-00805f9b34fb"
    assert CGM_SERVICE == "f8083532-849e-531c-c594-30f1f86a4ea5"
    assert [COMMUNICATION[7], CONTROL[7], AUTHENTICATION[7], BACKFILL[7]] == list("3456")
    assert advertised_name(" 8g1234") == "Dexcom34"


def test_xmodem_check_value_and_verified_commands() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert TransmitterTimeTx().build() == bytes.fromhex("24e664")
    assert GlucoseTx().build() == bytes.fromhex("305336")
    assert GlucoseTx(g6=True).build() == bytes.fromhex("4e0aa9")  # = xDrip libkeks "get EGV"
    assert GlucoseTx.parse(bytes.fromhex("4e0aa9")) == GlucoseTx(g6=True)
    assert TransmitterTimeTx.parse(bytes.fromhex("24e664")) == TransmitterTimeTx()
    assert append_xmodem_crc(b"\x24") == bytes.fromhex("24e664")
    assert split_xmodem_crc(bytes.fromhex("305336"), "x") == b"\x30"


def test_auth_hash_verified_vector() -> None:
    assert auth_key("123456") == b"0012345600123456"
    assert auth_hash("123456", bytes.fromhex("0123456789abcdef")) == bytes.fromhex(
        "e60d4a7999b0fbb2"
    )


@pytest.mark.parametrize("bad", ["12345", "1234567", "12 456", "12345é", ""])
def test_transmitter_id_must_be_six_alphanumerics(bad: str) -> None:
    with pytest.raises(ValueError, match="6 letters"):
        normalize_transmitter_id(bad)


def test_transmitter_id_is_upper_cased() -> None:
    assert normalize_transmitter_id(" 8g1abc ") == "8G1ABC"
    assert auth_hash("8g1abc", bytes(8)) == auth_hash("8G1ABC", bytes(8))


def test_auth_hash_needs_eight_bytes() -> None:
    with pytest.raises(ProtocolError):
        auth_hash("123456", b"1234567")


def test_auth_request_from_xdrip_js_log() -> None:
    data = bytes.fromhex("01118a8327702f45ee02")
    message = AuthRequestTx.parse(data)
    assert message == AuthRequestTx(bytes.fromhex("118a8327702f45ee"), 0x02)
    assert not message.alternate
    assert message.build() == data
    assert AuthRequestTx(bytes(8), 0x01).alternate
    assert parse_authentication(data) == message


def test_auth_messages_round_trip() -> None:
    token_hash, challenge = bytes(range(8)), bytes(range(8, 16))
    rx = AuthRequestRx(token_hash, challenge)
    assert rx.build() == b"\x03" + token_hash + challenge
    assert AuthChallengeTx(token_hash).build() == b"\x04" + token_hash
    assert AuthStatusRx(1, 0).build() == bytes.fromhex("050100")
    assert KeepAliveTx().build() == bytes.fromhex("0619")  # 25 s, CGMBLEKit / xDrip
    assert BondRequestTx().build() == b"\x07"
    for message in (rx, AuthChallengeTx(token_hash), AuthStatusRx(1, 1), KeepAliveTx(3)):
        assert parse_authentication(message.build()) == message
    assert parse_authentication(b"\x07") == BondRequestTx()


def test_auth_status_flags() -> None:
    status = AuthStatusRx.parse(bytes.fromhex("050101"))
    assert status.is_authenticated
    assert status.is_bonded
    assert not AuthStatusRx.parse(bytes.fromhex("050200")).is_authenticated


@pytest.mark.parametrize("data", ["", "08", "0501", "05010101", "0311", "02" + "00" * 9])
def test_bad_auth_messages_raise_protocol_error(data: str) -> None:
    with pytest.raises(ProtocolError):
        parse_authentication(bytes.fromhex(data))


def test_authentication_failed_is_a_non_retryable_protocol_error() -> None:
    error = AuthenticationFailed("x", b"\x03", reason="token_hash_mismatch")
    assert isinstance(error, ProtocolError)
    assert error.retryable is False
    assert error.reason == "token_hash_mismatch"


@pytest.mark.parametrize(
    ("data", "current", "session_start", "has_session"),
    [
        ("2500e8f87100ffffffff010000000a70", 7_469_288, NO_SESSION, False),
        ("2500470272007cff710001000000fa1d", 7_471_687, 7_470_972, True),
    ],
)
def test_transmitter_time_vectors(
    data: str, current: int, session_start: int, has_session: bool
) -> None:
    message = TransmitterTimeRx.parse(bytes.fromhex(data))
    assert (message.status, message.current_time) == (0, current)
    assert message.session_start_time == session_start
    assert message.has_session is has_session
    assert message.extra == bytes.fromhex("01000000")
    assert message.build().hex() == data
    now = datetime(2024, 5, 2, 10, 15, tzinfo=UTC)
    assert message.activation(now) == now - timedelta(seconds=current)
    assert parse_control(bytes.fromhex(data)) == message


def test_session_start_is_715_s_ago() -> None:
    message = TransmitterTimeRx.parse(bytes.fromhex("2500470272007cff710001000000fa1d"))
    assert message.current_time - message.session_start_time == 715


@pytest.mark.parametrize(
    ("data", "sequence", "timestamp", "mgdl", "trend", "display_only"),
    [
        ("3100680a00008a715700cc0006ffc42a", 2664, 5_730_698, 204, -0.1, False),
        ("31006f0a0000be7957007a0006e4818d", 2671, 5_732_798, 122, -2.8, False),
        ("3100700a0000f17a5700584006e3cee9", 2672, 5_733_105, 88, -2.9, True),
    ],
)
def test_glucose_vectors(
    data: str, sequence: int, timestamp: int, mgdl: int, trend: float, display_only: bool
) -> None:
    message = GlucoseRx.parse(bytes.fromhex(data))
    record = message.record
    assert (message.status, message.sequence, message.g6) == (0, sequence, False)
    assert (record.timestamp, record.glucose, record.state) == (timestamp, mgdl, 6)
    assert record.state is CalibrationState.OK
    assert record.trend_mgdl_min == pytest.approx(trend)
    assert record.display_only is display_only
    assert record.reliable
    assert message.build().hex() == data
    assert parse_control(bytes.fromhex(data)) == message


def test_display_only_word_is_0x4058() -> None:
    record = GlucoseRx.parse(bytes.fromhex("3100700a0000f17a5700584006e3cee9")).record
    assert (record.flags, record.glucose) == (0x4, 88)
    assert record.build()[4:6] == bytes.fromhex("5840")


def test_g6_glucose_reply_0x4f_has_the_same_layout() -> None:
    g5 = GlucoseRx.parse(bytes.fromhex("3100680a00008a715700cc0006ffc42a"))
    g6_bytes = append_xmodem_crc(b"\x4f" + bytes.fromhex("3100680a00008a715700cc0006ffc42a")[1:14])
    g6 = GlucoseRx.parse(g6_bytes)
    assert g6.g6
    assert (g6.sequence, g6.record) == (g5.sequence, g5.record)
    assert g6.build() == g6_bytes


def test_trend_127_means_none() -> None:
    assert GlucoseRecord(1, 100, 6, 127).trend_mgdl_min is None


def test_bad_crc_is_a_crc_error() -> None:
    data = bytearray.fromhex("3100680a00008a715700cc0006ffc42a")
    data[-1] ^= 0x01
    with pytest.raises(CrcError) as info:
        GlucoseRx.parse(bytes(data))
    assert info.value.computed == 0x2AC4


@pytest.mark.parametrize(
    "data",
    [
        "3100680a00008a715700cc0006ff",  # truncated
        "3100680a00008a715700cc0006ffc42a00",  # too long
        "",
        "30",
        "325336",  # unknown opcode
    ],
)
def test_malformed_control_messages(data: str) -> None:
    with pytest.raises(ProtocolError):
        parse_control(bytes.fromhex(data))


def test_wrong_opcode_with_valid_crc_is_refused() -> None:
    with pytest.raises(ProtocolError):
        GlucoseRx.parse(append_xmodem_crc(b"\x25" + bytes(13)))
    with pytest.raises(ProtocolError):
        TransmitterTimeRx.parse(append_xmodem_crc(b"\x31" + bytes(13)))


def test_backfill_request_vector() -> None:
    request = BackfillTx(5_439_415, 5_440_614)
    assert request.build() == BACKFILL_REQUEST
    assert BackfillTx.parse(BACKFILL_REQUEST) == request
    assert parse_control(BACKFILL_REQUEST) == request


def test_backfill_summary_vector() -> None:
    summary = BackfillRx.parse(SUMMARY)
    assert summary == BackfillRx(0, 1, 0, 5_439_415, 5_440_614, 50, 0xCBE6)
    assert summary.build() == SUMMARY
    assert parse_control(SUMMARY) == summary


def test_backfill_frames_reassemble_and_match_the_summary() -> None:
    stream = BackfillStream()
    for frame in FRAMES:
        stream.append(frame)
    summary = BackfillRx.parse(SUMMARY)
    assert (stream.length, stream.crc) == (50, 0xCBE6)
    stream.check(summary)
    assert stream.header() == DEFAULT_HEADER
    records = [(r.timestamp, r.glucose, r.state, r.trend) for r in stream.records()]
    assert records == BACKFILL_RECORDS
    steps = {b[0] - a[0] for a, b in itertools.pairwise(records)}
    assert steps == {299, 300}  # 5-minute spacing (one step of 299 s)


def test_emulator_side_builds_the_same_frames_and_summary() -> None:
    records = [GlucoseRecord(ts, mgdl, state, trend) for ts, mgdl, state, trend in BACKFILL_RECORDS]
    frames = build_backfill_frames(records)
    assert frames == FRAMES
    assert BackfillRx.for_frames(frames, 5_439_415, 5_440_614).build() == SUMMARY


def test_backfill_buffer_crc_mismatch() -> None:
    stream = BackfillStream()
    corrupted = bytearray(FRAMES[1])
    corrupted[5] ^= 0xFF
    for frame in (FRAMES[0], bytes(corrupted), FRAMES[2]):
        stream.append(frame)
    with pytest.raises(CrcError):
        stream.check(BackfillRx.parse(SUMMARY))


def test_backfill_length_mismatch() -> None:
    stream = BackfillStream()
    for frame in FRAMES[:2]:
        stream.append(frame)
    with pytest.raises(ProtocolError, match="50 bytes"):
        stream.check(BackfillRx.parse(SUMMARY))


def test_backfill_frame_out_of_sequence() -> None:
    stream = BackfillStream()
    stream.append(FRAMES[0])
    with pytest.raises(ProtocolError, match="expected 2"):
        stream.append(FRAMES[2])
    other_identifier = bytes((2, 7)) + FRAMES[1][2:]
    with pytest.raises(ProtocolError):
        stream.append(other_identifier)
    with pytest.raises(ProtocolError):
        stream.append(b"\x01\x00")  # no payload


def test_frame_one_restarts_the_stream() -> None:
    stream = BackfillStream()
    stream.append(FRAMES[0])
    for frame in FRAMES:
        stream.append(frame)
    assert stream.length == 50


def test_records_must_divide_evenly() -> None:
    stream = BackfillStream()
    stream.append(FRAMES[0])  # 18 payload bytes: header + 14
    with pytest.raises(ProtocolError, match="4 \\+ 8 x N"):
        stream.records()
    assert BackfillStream().records() == []


def test_calibration_state_names_and_flags() -> None:
    assert state_name(CalibrationState.OK) == "ok"
    assert state_flags(CalibrationState.OK) == ()
    assert state_name(2) == "warmup"
    assert state_flags(2) == ("warmup",)
    assert state_name(1) == "session_stopped"
    assert "needs_calibration" in state_flags(7)
    assert "needs_calibration" in state_flags(14)
    assert "needs_calibration" in state_flags(4)
    assert state_flags(11) == ("sensor_failed",)
    assert "sensor_expired" in state_flags(24)
    assert state_name(99) == "state_99"
    assert state_flags(99) == ("calibration_state_99",)
    assert GlucoseRecord.parse(GlucoseRecord(1, 100, 99).build()).state == 99


def test_reliable_states_follow_cgmblekit() -> None:
    reliable = {s for s in range(256) if GlucoseRecord(0, 100, s).reliable}
    assert reliable == {6, 7, 14}
    assert not GlucoseRecord(0, 38, 6).reliable
    assert GlucoseRecord(0, 39, 6).reliable


@pytest.mark.parametrize(
    "message",
    [
        GlucoseRecord(0, 4096, 6),
        GlucoseRecord(0, 100, 6, 200),
        GlucoseRecord(0, 100, 256),
        AuthRequestTx(b"short"),
        TransmitterTimeRx(0, 1 << 32),
        BackfillTx(-1, 0),
        KeepAliveTx(256),
    ],
)
def test_build_out_of_range_raises_protocol_error(message: object) -> None:
    with pytest.raises(ProtocolError):
        message.build()  # type: ignore[attr-defined]


def test_backfill_builder_limits() -> None:
    with pytest.raises(ProtocolError):
        build_backfill_frames([], header=b"\x00")
    many = [GlucoseRecord(i, 100, 6) for i in range(600)]  # > 255 frames of 18 bytes
    with pytest.raises(ProtocolError):
        build_backfill_frames(many)
    assert build_backfill_frames([]) == [b"\x01\x00" + DEFAULT_HEADER]


def test_opcode_table() -> None:
    table = {op.name: int(op) for op in Opcode}
    assert table["GLUCOSE_G6_TX"] == 0x4E
    assert table["BACKFILL_RX"] == 0x51
    assert table["AUTH_STATUS_RX"] == 0x05
