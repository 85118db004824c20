"""protocols.cgms.release: only a gap-free prefix is released; damaged records per the policy.

Pure: hand-made collector events, a recording damage policy; no collector, no clock.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from protocols.cgms.events import (
    BackfillComplete,
    Measurement,
    Ready,
    ReportStarted,
    SessionChanged,
)
from protocols.cgms.measurement import CgmMeasurement
from protocols.cgms.release import ReleaseRule
from protocols.gatt.racp import RECORD_ACCESS_CONTROL_POINT
from protocols.gatt.session import ProcedureFailed, RecordRejected, Request, RequestKind
from protocols.sfloat import SFloat

START = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
NEXT = START + timedelta(days=10)
READY = Ready(None, None, START, None, 5)
REPORT = Request(RequestKind.WRITE, RECORD_ACCESS_CONTROL_POINT, b"\x01\x01", True, "racp_report")


def key(start: datetime) -> str:
    return start.isoformat()


@dataclass(frozen=True)
class Placed:
    session: str
    seq: int
    time: datetime


def convert(event: Measurement) -> Placed | None:
    if event.session_start is None or event.time is None:
        return None
    return Placed(key(event.session_start), event.time_offset, event.time)


def record(offset: int, *, backfill: bool = True, start: datetime = START) -> Measurement:
    time = start + timedelta(minutes=offset)
    return Measurement(CgmMeasurement(SFloat(100), offset), time, start, backfill)


@dataclass
class Policy:
    """Asks each damaged record again `retries` times; records every call."""

    retries: int = 0
    damaged: list[tuple[Hashable, str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    recovered: list[Hashable] = field(default_factory=list)

    def drop_packet(self, data: bytes, reason: str) -> None:
        self.dropped.append(reason)

    def record_damaged(self, key: Hashable, data: bytes, *, position: str, reason: str) -> bool:
        self.damaged.append((key, position, reason))
        return sum(1 for k, _, _ in self.damaged if k == key) <= self.retries

    def record_recovered(self, key: Hashable) -> None:
        self.recovered.append(key)


def rule(policy: Policy | None = None, released: int | None = 10) -> ReleaseRule[Placed]:
    done = None if released is None else (key(START), released)
    return ReleaseRule(convert, key, policy or Policy(), released=done)


def seqs(r: ReleaseRule[Placed]) -> list[int]:
    out = [reading.seq for reading in r.ready]
    r.ready.clear()
    return out


def test_a_report_after_the_released_prefix_goes_out_record_by_record() -> None:
    r = rule()
    r.events([READY], interval_min=5)
    r.events([ReportStarted(11, None, START), record(15), record(20)], interval_min=5)
    assert seqs(r) == [15, 20]  # before the report ends: a link drop now loses nothing
    r.events([record(20), record(15)], interval_min=5)
    assert seqs(r) == []  # released once only


def test_a_record_after_a_hole_waits_until_nothing_is_pending() -> None:
    r = rule()
    r.events([READY], interval_min=5)
    r.events([ReportStarted(11, None, START), record(20)], interval_min=5)  # 15 is missing
    r.idle()
    assert seqs(r) == []  # the report still runs
    r.events([BackfillComplete(1, 11, None)], interval_min=5)
    assert seqs(r) == []
    r.idle()
    assert seqs(r) == [20]


def test_without_the_interval_a_report_is_held_until_it_ends() -> None:
    r = rule()
    r.events([READY], interval_min=None)
    r.events([ReportStarted(11, None, START), record(15)], interval_min=None)
    assert seqs(r) == []
    r.events([BackfillComplete(1, 11, None)], interval_min=None)
    r.idle()
    assert seqs(r) == [15]


def test_live_records_before_setup_are_left_to_the_first_report() -> None:
    r = rule(released=None)
    r.events([record(30, backfill=False)], interval_min=5)
    r.events([READY], interval_min=5)
    r.idle()
    assert seqs(r) == []


def test_a_live_record_in_flight_is_held_and_goes_out_in_time_order() -> None:
    r = rule()
    r.events([READY], interval_min=5)
    r.events([ReportStarted(None, None, START), record(35), record(15)], interval_min=5)
    r.events([record(20), BackfillComplete(3, None, None)], interval_min=5)
    assert seqs(r) == []  # a report of all records: its first record is unknown
    r.idle()
    assert seqs(r) == [15, 20, 35]


def test_a_damaged_record_is_asked_again_and_what_precedes_it_goes_out() -> None:
    policy = Policy(retries=1)
    r = rule(policy)
    r.events([READY], interval_min=5)
    started = ReportStarted(11, None, START)
    damaged = RecordRejected("crc_mismatch", b"\x06\x00")
    r.events([started, record(15), damaged, record(25), record(30)], interval_min=5)
    assert seqs(r) == [15]
    r.events([BackfillComplete(3, 11, None)], interval_min=5)
    assert list(r.asks) == [(16, None)]
    (key_, position, reason), *_ = policy.damaged
    assert key_ == ("cgms", key(START), 15, 0)
    assert position == f"the record after offset 15 of session {key(START)}"
    assert reason == "crc_mismatch"


def test_a_record_passed_over_is_bridged_by_the_interval() -> None:
    r = rule(Policy(retries=0))
    r.events([READY], interval_min=5)
    damaged = RecordRejected("crc_mismatch", b"\x06\x00")
    r.events([ReportStarted(11, None, START), record(15), damaged, record(25)], interval_min=5)
    assert seqs(r) == [15, 25]
    r.events([BackfillComplete(2, 11, None)], interval_min=5)
    assert not r.asks


def test_a_damaged_live_record_is_only_counted() -> None:
    policy = Policy()
    r = rule(policy)
    r.events([READY], interval_min=5)
    r.events([RecordRejected("malformed", b"\x01")], interval_min=5)
    assert policy.dropped == ["malformed"]
    assert policy.damaged == []


def test_a_report_that_times_out_ends_the_connection() -> None:
    r = rule()
    r.events([READY], interval_min=5)
    r.events([ReportStarted(11, None, START), ProcedureFailed(REPORT, "timeout")], interval_min=5)
    assert r.failure == "the sensor stopped answering a RACP report"


def test_held_records_of_an_ended_session_go_out_when_the_new_one_is_seen() -> None:
    r = rule()
    r.events([READY], interval_min=5)
    r.events([ReportStarted(11, None, START), record(20)], interval_min=5)  # after a hole
    r.events([BackfillComplete(1, 11, None)], interval_min=5)
    assert seqs(r) == []
    r.events([SessionChanged(NEXT, START)], interval_min=5)
    assert seqs(r) == [20]


def first_contact(policy: Policy) -> tuple[ReleaseRule[Placed], RecordRejected, ReportStarted]:
    """A rule with nothing released, set up; a damaged record; a report of all records."""
    r = rule(policy, released=None)
    r.events([READY], interval_min=5)
    return r, RecordRejected("crc_mismatch", b"\x06\x00"), ReportStarted(None, None, START)


def test_a_live_record_in_flight_before_a_damaged_oldest_record_costs_no_record() -> None:
    """A live record sent before the sensor began a report of all records comes first; the
    damaged oldest record after it keeps the oldest record's position, and no record after it
    goes out before the records that precede it in the sensor's memory."""
    policy = Policy(retries=1)
    r, damaged, all_records = first_contact(policy)
    r.events([all_records, record(605), damaged, record(5), record(10)], interval_min=5)
    r.events([record(600), BackfillComplete(121, None, None)], interval_min=5)
    assert seqs(r) == []  # 5..600 follow a record asked for again: nothing may pass it
    assert list(r.asks) == [(None, None)]
    (key_, position, _), *_ = policy.damaged
    assert key_ == ("cgms", key(START), None, 0)
    assert position == f"the oldest record of session {key(START)}"
    assert key_ not in policy.recovered  # the record in flight did not take the oldest's place

    r.asks.clear()  # the second read: again a live record in flight, the oldest still damaged
    r.events([all_records, record(610), damaged, record(5), record(10)], interval_min=5)
    rest = [record(600), record(605), record(610), BackfillComplete(124, None, None)]
    r.events(rest, interval_min=5)
    r.idle()
    assert [k for k, _, _ in policy.damaged] == [("cgms", key(START), None, 0)] * 2
    assert seqs(r) == [5, 10, 600, 605, 610]  # passed over: everything after it goes out


def test_a_record_in_flight_after_a_judged_damaged_one_releases_nothing_past_the_start() -> None:
    """Two live records in flight around a damaged one: the block decided after them does not
    let the end of the report release records past a hole."""
    r, damaged, all_records = first_contact(Policy(retries=1))
    r.events([all_records, record(600), damaged, record(605), record(5)], interval_min=5)
    r.events([record(10), BackfillComplete(4, None, None)], interval_min=5)
    assert seqs(r) == []
    assert list(r.asks) == [(None, None)]
