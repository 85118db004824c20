"""protocols.glucose.session: RACP transfer from a meter, measurement/context pairing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.errors import ProtocolError
from protocols.gatt.date_time import DateTime
from protocols.gatt.racp import (
    RECORD_ACCESS_CONTROL_POINT,
    RacpCommand,
    RacpNumberOfRecords,
    RacpResponse,
    RacpResponseCode,
    parse_racp,
)
from protocols.gatt.sample import SampleLocation, SampleType
from protocols.gatt.session import (
    ProcedureFailed,
    RecordRejected,
    Request,
    RequestKind,
    SessionEvent,
    UnexpectedData,
)
from protocols.glucose.context import GlucoseContext, Meal
from protocols.glucose.feature import GlucoseFeature, build_feature
from protocols.glucose.measurement import GlucoseMeasurement
from protocols.glucose.session import (
    GlucoseCollector,
    GlucoseReading,
    Ready,
    RecordCount,
    TransferComplete,
    UnmatchedContext,
)
from protocols.glucose.uuids import (
    GLUCOSE_FEATURE,
    GLUCOSE_MEASUREMENT,
    GLUCOSE_MEASUREMENT_CONTEXT,
)
from protocols.sfloat import SFloat

FEATURES = GlucoseFeature.LOW_BATTERY_DETECTION | GlucoseFeature.MULTIPLE_BOND


def measurement(seq: int, *, context: bool = False) -> GlucoseMeasurement:
    return GlucoseMeasurement(
        seq,
        DateTime(2024, 5, 2, 7, 30),
        time_offset=seq,
        concentration=SFloat(100 + seq, -5),
        sample_type=SampleType.CAPILLARY_WHOLE_BLOOD,
        sample_location=SampleLocation.FINGER,
        context_follows=context,
    )


@dataclass
class FakeMeter:
    """A meter holding sequence numbers 1..count; every third record has a context."""

    count: int = 6
    silent: bool = False
    writes: list[bytes] = field(default_factory=list)

    def stored(self) -> list[tuple[GlucoseMeasurement, GlucoseContext | None]]:
        return [
            (
                measurement(seq, context=seq % 3 == 0),
                GlucoseContext(seq, meal=Meal.FASTING) if seq % 3 == 0 else None,
            )
            for seq in range(1, self.count + 1)
        ]

    def answer(self, request: Request) -> list[tuple[str, bytes]]:
        if request.kind is RequestKind.READ:
            return [(GLUCOSE_FEATURE, build_feature(FEATURES))]
        self.writes.append(request.data)
        command = parse_racp(request.data)
        assert isinstance(command, RacpCommand)
        if self.silent:
            return []
        first = int(command.values[0]) if command.values else 0  # type: ignore[arg-type]
        chosen = [(m, c) for m, c in self.stored() if m.sequence_number >= first]
        if command.opcode == 4:
            return [(RECORD_ACCESS_CONTROL_POINT, RacpNumberOfRecords(len(chosen)).build())]
        out: list[tuple[str, bytes]] = []
        for m, c in chosen:
            out.append((GLUCOSE_MEASUREMENT, m.build()))
            if c is not None:
                out.append((GLUCOSE_MEASUREMENT_CONTEXT, c.build()))
        code = RacpResponseCode.SUCCESS if chosen else RacpResponseCode.NO_RECORDS_FOUND
        return [*out, (RECORD_ACCESS_CONTROL_POINT, RacpResponse(command.opcode, code).build())]


def pump(session: GlucoseCollector, meter: FakeMeter) -> list[SessionEvent]:
    events: list[SessionEvent] = []
    for _ in range(50):
        request = session.next_request()
        if request is None:
            return events
        answers = meter.answer(request)
        for uuid, data in answers:
            events += session.receive(uuid, data)
        if request.awaits_response and not any(u == request.characteristic for u, _ in answers):
            events += session.timeout()
    raise AssertionError("never idle")


def of(kind: type, events: list[SessionEvent]) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def test_transfer_everything_and_pair_contexts() -> None:
    meter = FakeMeter()
    session = GlucoseCollector(tz=UTC)
    events = pump(session, meter)
    assert of(Ready, events) == [Ready(FEATURES)]
    readings = of(GlucoseReading, events)
    assert [r.sequence_number for r in readings] == [1, 2, 3, 4, 5, 6]
    assert [r.context is not None for r in readings] == [False, False, True, False, False, True]
    assert readings[2].context == GlucoseContext(3, meal=Meal.FASTING)
    assert all(r.backfill for r in readings)
    assert readings[0].time == datetime(2024, 5, 2, 7, 31, tzinfo=UTC)
    assert readings[0].measurement.glucose_mgdl == 101.0
    assert events[-1] == TransferComplete(6, None)
    assert meter.writes == [bytes.fromhex("01 01")]
    assert session.last_sequence == 6


def test_resume_from_a_sequence_number() -> None:
    meter = FakeMeter()
    session = GlucoseCollector(backfill_from=5)
    events = pump(session, meter)
    assert meter.writes == [bytes.fromhex("01 03 01 05 00")]
    assert [r.sequence_number for r in of(GlucoseReading, events)] == [5, 6]
    assert all(r.time is None for r in of(GlucoseReading, events))  # no tz given
    assert of(TransferComplete, events) == [TransferComplete(2, 5)]


def test_nothing_new() -> None:
    events = pump(GlucoseCollector(backfill_from=7), FakeMeter())
    assert of(TransferComplete, events) == [TransferComplete(0, 7)]


def test_context_of_another_measurement_and_missing_context() -> None:
    session = GlucoseCollector(transfer=False)
    session.next_request()
    session.receive(GLUCOSE_FEATURE, build_feature(0))
    first = session.receive(GLUCOSE_MEASUREMENT, measurement(1, context=True).build())
    assert first == []  # held until its context arrives
    events = session.receive(GLUCOSE_MEASUREMENT_CONTEXT, GlucoseContext(9).build())
    assert events == [UnmatchedContext(GlucoseContext(9))]
    events = session.receive(GLUCOSE_MEASUREMENT, measurement(2).build())
    assert [(r.sequence_number, r.context, r.backfill) for r in of(GlucoseReading, events)] == [
        (1, None, False),
        (2, None, False),
    ]


def test_timeout_releases_the_held_measurement() -> None:
    meter = FakeMeter(silent=True)
    session = GlucoseCollector()
    pump(session, meter)
    session.request_records(3)
    request = session.next_request()
    assert request is not None
    session.receive(GLUCOSE_MEASUREMENT, measurement(3, context=True).build())
    events = session.timeout()
    assert [type(e) for e in events] == [GlucoseReading, ProcedureFailed]
    late = session.receive(RECORD_ACCESS_CONTROL_POINT, bytes.fromhex("06 00 01 01"))
    assert late == [UnexpectedData(RECORD_ACCESS_CONTROL_POINT, bytes.fromhex("06 00 01 01"))]


def test_count_and_error_responses() -> None:
    meter = FakeMeter()
    session = GlucoseCollector(transfer=False)
    session.request_count(4)
    events = pump(session, meter)
    assert of(RecordCount, events) == [RecordCount(3)]
    assert meter.writes == [bytes.fromhex("04 03 01 04 00")]
    session.request_records()
    request = session.next_request()
    assert request is not None
    refused = RacpResponse(1, RacpResponseCode.OPERATOR_NOT_SUPPORTED).build()
    events = session.receive(RECORD_ACCESS_CONTROL_POINT, refused)
    assert events == [ProcedureFailed(request, "error_response", 4, refused)]


def test_meter_local_time_zone() -> None:
    cest = timezone(timedelta(hours=2))
    session = GlucoseCollector(transfer=False, tz=cest)
    events = session.receive(GLUCOSE_MEASUREMENT, measurement(1).build())
    (reading,) = of(GlucoseReading, events)
    assert reading.time == datetime(2024, 5, 2, 5, 31, tzinfo=UTC)


def test_bad_input() -> None:
    session = GlucoseCollector()
    assert session.receive(GLUCOSE_MEASUREMENT, b"\x00") == [RecordRejected("malformed", b"\x00")]
    assert session.receive(GLUCOSE_MEASUREMENT_CONTEXT, b"") == [RecordRejected("malformed", b"")]
    request = session.next_request()
    events = session.receive(GLUCOSE_FEATURE, b"\x01")
    assert request is not None
    assert events == [ProcedureFailed(request, "malformed", None, b"\x01"), Ready(None)]
    with pytest.raises(ProtocolError):
        session.receive("2aa7", b"")
    with pytest.raises(ValueError, match="uint16"):
        GlucoseCollector(backfill_from=-1)


# -- fuzzing --------------------------------------------------------------------------------------

UUIDS = [
    GLUCOSE_FEATURE,
    GLUCOSE_MEASUREMENT,
    GLUCOSE_MEASUREMENT_CONTEXT,
    RECORD_ACCESS_CONTROL_POINT,
]


def drive(session: GlucoseCollector, steps: list[object]) -> None:
    for step in steps:
        if step == "request":
            session.next_request()
        elif step == "timeout":
            session.timeout()
        else:
            uuid, data = step  # type: ignore[misc]
            session.receive(uuid, data)
    for _ in range(20):
        if session.next_request() is None and not session.timeout():
            return
    raise AssertionError("requests never ran out")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(UUIDS), st.binary(max_size=20)),
            st.just("request"),
            st.just("timeout"),
        ),
        max_size=30,
    )
)
def test_fuzz_arbitrary_input_never_raises(steps: list[object]) -> None:
    drive(GlucoseCollector(tz=UTC), steps)


def transcript() -> list[tuple[str, bytes]]:
    meter, session, said = FakeMeter(), GlucoseCollector(), []
    while (request := session.next_request()) is not None:
        answers = meter.answer(request)
        for uuid, data in answers:
            session.receive(uuid, data)
        said += answers
    return said


TRANSCRIPT = transcript()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_transfer_never_raises(data: st.DataObject) -> None:
    said = list(TRANSCRIPT)
    for _ in range(data.draw(st.integers(1, 5))):
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
    steps: list[object] = []
    for item in said:
        steps += ["request", item]
    drive(GlucoseCollector(tz=UTC), steps)
