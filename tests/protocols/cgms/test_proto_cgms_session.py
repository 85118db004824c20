"""protocols.cgms.session: the CGMP collector state machine against a small fake sensor.

The fake is built from the same codecs (as an emulator would be): it answers reads, RACP and
SOCP writes, and produces live notifications, with switches for the faults under test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgms_fake import START, FakeCgm, pump
from protocols.cgms.events import (
    BackfillComplete,
    CgmsEvent,
    GapDetected,
    Measurement,
    Ready,
    SessionChanged,
    SessionStopped,
    SocpResponse,
)
from protocols.cgms.measurement import CgmMeasurement
from protocols.cgms.session import CgmsCollector
from protocols.cgms.socp import SocpOpCode, SocpPacket, SocpResponseCode, SocpResult
from protocols.cgms.state import (
    CgmFeature,
    CgmFeatureBits,
    CgmStatus,
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
from protocols.errors import ProtocolError
from protocols.gatt.date_time import DateTime
from protocols.gatt.racp import RECORD_ACCESS_CONTROL_POINT
from protocols.gatt.session import (
    ProcedureFailed,
    RecordRejected,
    Request,
    RequestKind,
    UnexpectedData,
)
from protocols.sfloat import SFloat


def of(kind: type, events: list[CgmsEvent]) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def racp_writes(device: FakeCgm) -> list[str]:
    return [d.hex(" ") for u, d in device.writes if u == RECORD_ACCESS_CONTROL_POINT]


def test_first_connection_backfills_everything_with_absolute_times() -> None:
    device = FakeCgm()
    session = CgmsCollector()
    events = pump(session, device)
    (ready,) = of(Ready, events)
    assert ready.feature is not None
    assert ready.feature.e2e_crc
    assert ready.session_start == START
    assert (ready.run_time_h, ready.interval_min) == (336, 5)
    measurements = of(Measurement, events)
    assert [m.time_offset for m in measurements] == list(range(0, 61, 5))
    assert all(m.backfill for m in measurements)
    assert measurements[-1].time == START + timedelta(minutes=60)
    assert of(BackfillComplete, events) == [BackfillComplete(13, None, None)]
    assert racp_writes(device) == ["01 01"]
    socp = [d for u, d in device.writes if u == CGM_SPECIFIC_OPS_CONTROL_POINT]
    assert socp == [bytes.fromhex("02 95 2c")]  # get interval, with its E2E-CRC
    assert session.next_request() is None


def test_resume_asks_only_from_the_offset_and_keeps_the_held_start() -> None:
    device = FakeCgm()
    held_start = START + timedelta(seconds=40)  # what the driver stored last time
    session = CgmsCollector(backfill_from=45, session_start=held_start, interval_min=5)
    events = pump(session, device)
    assert racp_writes(device) == ["01 03 01 2d 00"]
    assert [m.time_offset for m in of(Measurement, events)] == [45, 50, 55, 60]
    assert of(Measurement, events)[0].session_start == held_start
    assert not of(SessionChanged, events)
    assert not [u for u, _ in device.writes if u == CGM_SPECIFIC_OPS_CONTROL_POINT]


def test_without_e2e_no_crc_on_writes_and_records() -> None:
    device = FakeCgm(e2e=False)
    events = pump(CgmsCollector(), device)
    socp = [d for u, d in device.writes if u == CGM_SPECIFIC_OPS_CONTROL_POINT]
    assert socp == [b"\x02"]
    assert len(of(Measurement, events)) == 13
    assert not of(RecordRejected, events)


def test_live_gap_is_detected_and_backfilled_by_range() -> None:
    device = FakeCgm()
    session = CgmsCollector(interval_min=5)
    pump(session, device)
    live = session.receive(CGM_MEASUREMENT, device.tick() or b"", now=device.now)
    assert [type(e) for e in live] == [Measurement]
    assert not live[0].backfill
    device.tick(notify=False)
    device.tick(notify=False)
    events = session.receive(CGM_MEASUREMENT, device.tick() or b"", now=device.now)
    assert of(GapDetected, events) == [GapDetected(70, 80)]
    events = pump(session, device)
    assert racp_writes(device)[-1] == "01 04 01 42 00 4f 00"  # 66..79
    assert [(m.time_offset, m.backfill) for m in of(Measurement, events)] == [
        (70, True),
        (75, True),
    ]
    assert of(BackfillComplete, events) == [BackfillComplete(2, 66, 79)]


def test_gap_falls_back_to_greater_or_equal_without_range_support() -> None:
    device = FakeCgm(range_supported=False)
    session = CgmsCollector(interval_min=5)
    pump(session, device)
    device.tick(notify=False)
    session.receive(CGM_MEASUREMENT, device.tick() or b"", now=device.now)
    events = pump(session, device)
    assert racp_writes(device)[-2:] == ["01 04 01 3d 00 45 00", "01 03 01 3d 00"]  # 61..69
    assert [m.time_offset for m in of(Measurement, events)] == [65, 70]
    assert not of(ProcedureFailed, events)


def test_a_damaged_live_record_is_fetched_at_once_as_a_gap_of_one_interval() -> None:
    device = FakeCgm()
    session = CgmsCollector(interval_min=5)
    pump(session, device)
    bad = bytearray(device.tick() or b"")
    bad[2] ^= 0x01
    events = session.receive(CGM_MEASUREMENT, bytes(bad), now=device.now)
    assert events == [RecordRejected("crc_mismatch", bytes(bad))]
    events = session.receive(CGM_MEASUREMENT, device.tick() or b"", now=device.now)
    assert not of(GapDetected, events)  # 70 follows the damaged 65: no second request
    recovered = pump(session, device)
    assert racp_writes(device)[-1] == "01 04 01 3d 00 41 00"  # 61..65
    assert [m.time_offset for m in of(Measurement, recovered)] == [65]


def test_damaged_live_records_in_a_row_are_fetched_in_one_range() -> None:
    device = FakeCgm()
    session = CgmsCollector(interval_min=5)
    pump(session, device)
    for _ in range(2):
        bad = bytearray(device.tick() or b"")
        bad[2] ^= 0x01
        session.receive(CGM_MEASUREMENT, bytes(bad), now=device.now)
    recovered = pump(session, device)
    assert racp_writes(device)[-1] == "01 04 01 3d 00 46 00"  # 61..70
    assert [m.time_offset for m in of(Measurement, recovered)] == [65, 70]


def test_the_clock_offset_is_the_session_start_time_minus_the_derived_start() -> None:
    device = FakeCgm(sst_skew=timedelta(hours=1))
    session = CgmsCollector()
    events = pump(session, device)
    (ready,) = of(Ready, events)
    assert ready.session_start is not None
    assert abs(ready.session_start - START) <= timedelta(seconds=60)  # the hub's, not the SST
    assert session.clock_offset is not None
    assert abs(session.clock_offset - timedelta(hours=1)) <= timedelta(seconds=60)
    assert CgmsCollector().clock_offset is None
    unknown = CgmsCollector()
    pump(unknown, FakeCgm(sst_known=False))
    assert unknown.clock_offset is None


def test_records_without_crc_are_refused_when_the_feature_announces_e2e() -> None:
    device = FakeCgm(crc_on_records=False)
    events = pump(CgmsCollector(interval_min=5), device)
    rejected = of(RecordRejected, events)
    assert len(rejected) == 13
    assert {r.reason for r in rejected} == {"missing_crc"}
    assert not of(Measurement, events)


def test_multi_record_notification_with_one_bad_record() -> None:
    device = FakeCgm()
    session = CgmsCollector(interval_min=5)
    pump(session, device)
    good, bad = device.record(61).build(), bytearray(device.record(62).build())
    bad[-1] ^= 0xFF
    events = session.receive(CGM_MEASUREMENT, good + bytes(bad) + device.record(63).build())
    assert [type(e).__name__ for e in events] == ["Measurement", "RecordRejected", "Measurement"]
    events = session.receive(CGM_MEASUREMENT, good + b"\x02\x00\x00")
    assert [type(e).__name__ for e in events] == ["Measurement", "RecordRejected"]
    assert of(RecordRejected, events)[0].data == b"\x02\x00\x00"


def test_new_session_found_at_connect_restarts_the_backfill() -> None:
    device = FakeCgm(start=START + timedelta(days=10), offset=30)
    session = CgmsCollector(backfill_from=2000, session_start=START, interval_min=5)
    events = pump(session, device)
    (changed,) = of(SessionChanged, events)
    assert changed == SessionChanged(START + timedelta(days=10), START)
    assert racp_writes(device) == ["01 01"]
    assert [m.time_offset for m in of(Measurement, events)] == [0, 5, 10, 15, 20, 25, 30]
    assert of(Measurement, events)[0].session_start == START + timedelta(days=10)


def test_offsets_behind_the_held_one_mean_a_new_session_even_without_a_clock() -> None:
    device = FakeCgm(offset=30)
    session = CgmsCollector(backfill_from=500, interval_min=5)
    events = list(pump_without_now(session, device))
    assert of(SessionChanged, events)
    assert racp_writes(device) == ["01 01"]
    # no `now`: the start comes from Session Start Time
    assert of(Measurement, events)[-1].time == START + timedelta(minutes=30)


def pump_without_now(session: CgmsCollector, device: FakeCgm) -> list[CgmsEvent]:
    events: list[CgmsEvent] = []
    while (request := session.next_request()) is not None:
        if request.kind is RequestKind.READ:
            events += session.receive(request.characteristic, device.read(request.characteristic))
        else:
            for uuid, data in device.write(request.characteristic, request.data):
                events += session.receive(uuid, data)
    return events


def test_session_restart_while_connected() -> None:
    device = FakeCgm()
    session = CgmsCollector(interval_min=5)
    pump(session, device)
    device.start, device.offset = device.now + timedelta(minutes=5), 0
    device.records = {0: device.record(0)}
    events = session.receive(CGM_MEASUREMENT, device.record(0).build(), now=device.now)
    assert [type(e) for e in events] == [Measurement]
    assert (events[0].session_start, events[0].time) == (None, None)  # in doubt until re-read
    events = pump(session, device)
    (changed,) = of(SessionChanged, events)
    assert changed.previous == START
    assert changed.session_start == device.start
    assert racp_writes(device)[-1] == "01 01"
    assert of(Measurement, events)[0].session_start == device.start


def test_stopped_session_is_started_when_asked() -> None:
    device = FakeCgm(stopped=True)
    session = CgmsCollector(start_session=True, interval_min=5)
    events = pump(session, device)
    assert of(SessionStopped, events) == [SessionStopped(60)]
    socp = [d for u, d in device.writes if u == CGM_SPECIFIC_OPS_CONTROL_POINT]
    assert socp == [bytes.fromhex("1a 5c b0")]
    (response,) = of(SocpResponse, events)
    assert response.packet.operand == SocpResult(SocpOpCode.START_SESSION, SocpResponseCode.SUCCESS)
    assert of(SessionChanged, events)
    assert [m.time_offset for m in of(Measurement, events)] == [0]


def test_stopped_session_is_only_reported_by_default() -> None:
    device = FakeCgm(stopped=True)
    events = pump(CgmsCollector(interval_min=5), device)
    assert of(SessionStopped, events) == [SessionStopped(60)]
    assert not [u for u, _ in device.writes if u == CGM_SPECIFIC_OPS_CONTROL_POINT]


def test_racp_timeout_fails_the_backfill_and_aborts() -> None:
    device = FakeCgm(racp_silent=True)
    session = CgmsCollector(interval_min=5)
    events = pump(session, device)
    failures = of(ProcedureFailed, events)
    assert [(f.request.label, f.reason) for f in failures] == [
        ("racp_report", "timeout"),
        ("racp_abort", "timeout"),
    ]
    assert racp_writes(device) == ["01 01", "03 00"]
    late = session.receive(RECORD_ACCESS_CONTROL_POINT, bytes.fromhex("06 00 01 01"))
    assert late == [UnexpectedData(RECORD_ACCESS_CONTROL_POINT, bytes.fromhex("06 00 01 01"))]


def test_unknown_interval_is_learnt_from_the_backfill() -> None:
    device = FakeCgm(socp_supported=False, interval=15, offset=90)
    session = CgmsCollector()
    events = pump(session, device)
    assert [f.code for f in of(ProcedureFailed, events)] == [SocpResponseCode.OP_CODE_NOT_SUPPORTED]
    assert session.interval_min == 15
    device.tick(notify=False)
    events = session.receive(CGM_MEASUREMENT, device.tick() or b"", now=device.now)
    assert of(GapDetected, events) == [GapDetected(105, 120)]


def test_session_start_time_is_synchronised_when_asked() -> None:
    device = FakeCgm(sst_known=False, e2e=False)
    session = CgmsCollector(sync_session_start_time=True, interval_min=5)
    events = pump(session, device)
    assert len(of(Ready, events)) == 1  # the write has no answer: setup still ends
    assert racp_writes(device) == ["01 01"]
    (written,) = [d for u, d in device.writes if u == CGM_SESSION_START_TIME]
    sst = SessionStartTime.parse(written)
    assert (sst.time_zone, sst.dst_offset, sst.e2e_crc) == (0, 0, False)
    assert sst.to_utc() == device.now.replace(microsecond=0)


def test_malformed_reads_fail_their_step_and_setup_goes_on() -> None:
    session = CgmsCollector(interval_min=5)
    request = session.next_request()
    assert request == Request(RequestKind.READ, CGM_FEATURE, label="read_feature")
    assert session.next_request() is None  # one request at a time
    events = session.receive(CGM_FEATURE, b"\x00\x90")
    assert events == [ProcedureFailed(request, "malformed", None, b"\x00\x90")]
    labels = []
    while not session.ready:
        request = session.next_request()
        assert request is not None
        labels.append(request.label)
        events = session.timeout()
        assert events[0] == ProcedureFailed(request, "timeout")
    assert labels == ["read_session_start_time", "read_status", "read_session_run_time"]
    assert events[-1] == Ready(None, None, None, None, 5)
    assert session.next_request() == Request(
        RequestKind.WRITE, RECORD_ACCESS_CONTROL_POINT, b"\x01\x01", True, "racp_report"
    )


def test_crc_errors_on_reads_and_missing_crc_when_announced() -> None:
    device = FakeCgm()
    session = CgmsCollector(interval_min=5)
    session.next_request()
    session.receive(CGM_FEATURE, device.read(CGM_FEATURE))
    session.next_request()
    sst = bytearray(device.read(CGM_SESSION_START_TIME))
    sst[-1] ^= 1
    (failed,) = session.receive(CGM_SESSION_START_TIME, bytes(sst))
    assert isinstance(failed, ProcedureFailed)
    assert failed.reason == "crc_mismatch"
    session.next_request()
    status = CgmStatus(60).build()  # E2E announced, no CRC sent
    (failed,) = session.receive(CGM_STATUS, status, now=device.now)
    assert isinstance(failed, ProcedureFailed)
    assert failed.reason == "malformed"
    assert session.status is None


def test_bad_characteristic_and_bad_arguments() -> None:
    session = CgmsCollector()
    with pytest.raises(ProtocolError):
        session.receive("2a19", b"\x64")
    with pytest.raises(ValueError, match="aware"):
        session.receive(CGM_STATUS, b"", now=datetime(2024, 1, 1))  # noqa: DTZ001 - on purpose
    with pytest.raises(ValueError, match="uint16"):
        CgmsCollector(backfill_from=70000)
    assert session.timeout() == []
    assert session.receive("2AA7", b"") == [RecordRejected("malformed", b"")]


def test_send_socp_goes_out_after_setup_with_the_feature_crc() -> None:
    device = FakeCgm()
    session = CgmsCollector(interval_min=5)
    session.send_socp(SocpPacket(SocpOpCode.SET_COMMUNICATION_INTERVAL, 5))
    events = pump(session, device)
    assert (CGM_SPECIFIC_OPS_CONTROL_POINT, bytes.fromhex("01 05 cd be")) in device.writes
    assert of(SocpResponse, events)


# -- fuzzing --------------------------------------------------------------------------------------

UUIDS = [
    CGM_MEASUREMENT,
    CGM_FEATURE,
    CGM_STATUS,
    CGM_SESSION_START_TIME,
    CGM_SESSION_RUN_TIME,
    RECORD_ACCESS_CONTROL_POINT,
    CGM_SPECIFIC_OPS_CONTROL_POINT,
]
STEP = st.one_of(
    st.tuples(st.sampled_from(UUIDS), st.binary(max_size=24)),
    st.just("request"),
    st.just("timeout"),
)


def drive(session: CgmsCollector, steps: list[object]) -> None:
    """Feed `steps`, then drain; the session must stay finite and raise nothing."""
    now = START + timedelta(days=1)
    for step in steps:
        if step == "request":
            session.next_request()
        elif step == "timeout":
            session.timeout()
        else:
            uuid, data = step  # type: ignore[misc]
            session.receive(uuid, data, now=now)
    for _ in range(100):  # at most a few setup steps + queued backfills remain
        if session.next_request() is None and not session.timeout():
            return
    raise AssertionError("requests never ran out")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, max_size=30), st.integers(0, 0xFFFF) | st.none())
def test_fuzz_arbitrary_input_never_raises(steps: list[object], backfill_from: int | None) -> None:
    drive(CgmsCollector(backfill_from=backfill_from, start_session=True), steps)


def transcript() -> list[tuple[str, bytes]]:
    """What a healthy sensor says during setup, a backfill and some live records."""
    device = FakeCgm(offset=40)
    session = CgmsCollector()
    said: list[tuple[str, bytes]] = []
    while (request := session.next_request()) is not None:
        if request.kind is RequestKind.READ:
            answers = [(request.characteristic, device.read(request.characteristic))]
        else:
            answers = device.write(request.characteristic, request.data)
        for uuid, data in answers:
            session.receive(uuid, data, now=device.now)
        said += answers
    return said + [(CGM_MEASUREMENT, device.tick() or b"") for _ in range(3)]


TRANSCRIPT = transcript()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_conversation_never_raises(data: st.DataObject) -> None:
    said = list(TRANSCRIPT)
    for _ in range(data.draw(st.integers(1, 6))):
        index = data.draw(st.integers(0, len(said) - 1))
        uuid, payload = said[index]
        if payload and data.draw(st.booleans()):
            bit = data.draw(st.integers(0, len(payload) * 8 - 1))
            payload = bytes(
                b ^ (1 << bit % 8) if i == bit // 8 else b for i, b in enumerate(payload)
            )
        else:
            payload = payload[: data.draw(st.integers(0, len(payload)))]
        said[index] = (uuid, payload)
    session = CgmsCollector()
    steps: list[object] = []
    for uuid, payload in said:
        steps += ["request", (uuid, payload)]
    drive(session, steps)


def test_session_start_at_the_end_of_time_gives_no_time() -> None:
    session = CgmsCollector(interval_min=5)
    far = SessionStartTime(DateTime(9999, 12, 31, 23, 0, 0), 0, 0).build()
    values = {
        CGM_FEATURE: CgmFeature(CgmFeatureBits(0)).build(),
        CGM_SESSION_START_TIME: far,
        CGM_STATUS: CgmStatus(10).build(),
        CGM_SESSION_RUN_TIME: SessionRunTime(336).build(),
    }
    while (request := session.next_request()) is not None and request.kind is RequestKind.READ:
        session.receive(request.characteristic, values[request.characteristic])
    events = session.receive(CGM_MEASUREMENT, CgmMeasurement(SFloat(90), 65535).build())
    (measurement,) = of(Measurement, events)
    assert measurement.session_start == datetime(9999, 12, 31, 23, 0, tzinfo=UTC)
    assert measurement.time is None


def test_a_started_session_is_a_new_session_even_if_the_start_barely_moved() -> None:
    device = FakeCgm(stopped=True, offset=2)
    session = CgmsCollector(start_session=True, interval_min=5)
    events = pump(session, device)
    (changed,) = of(SessionChanged, events)
    assert changed.session_start == device.start
    assert changed.previous == START
    assert racp_writes(device) == ["01 01"]


@pytest.mark.parametrize(
    "skew",
    [timedelta(hours=1), -timedelta(days=213), datetime(2000, 1, 1, tzinfo=UTC) - START],
    ids=["ahead-1h", "behind-7-months", "reset-to-epoch"],
)
@pytest.mark.parametrize("sync", [False, True], ids=["no-write", "writes-sst"])
def test_a_sensor_calendar_jump_between_connections_keeps_the_session_and_its_times(
    skew: timedelta, sync: bool
) -> None:
    """The first connection trusted the Session Start Time (it agreed); then the sensor's
    calendar jumps. The next connection keeps the held start: nothing re-dated, no new ids."""
    device = FakeCgm()
    first = CgmsCollector()
    pump(first, device)
    assert first.session_start == START
    device.sst_skew = skew
    device.tick()
    device.tick()
    session = CgmsCollector(
        backfill_from=61, session_start=START, interval_min=5, sync_session_start_time=sync
    )
    events = pump(session, device)
    assert not of(SessionChanged, events)
    assert [(m.time_offset, m.session_start) for m in of(Measurement, events)] == [
        (65, START),
        (70, START),
    ]
    assert session.clock_offset is not None
    assert abs(session.clock_offset - skew) <= timedelta(seconds=60)
    # with `sync_session_start_time` the collector writes the hub's now as the sensor's start
    # (xDrip's rule); the driver leaves it off: the sensor's calendar is not the hub's to set
    written = [d for u, d in device.writes if u == CGM_SESSION_START_TIME]
    assert len(written) == (1 if sync else 0)
