"""drivers.cgms.flow: what may go to the store, with records that stay damaged in memory.

Pure: the real collector (`protocols.cgms.session`) and `RecordFlow` (the release rule of
`protocols.cgms.release` wired to the collector and the context) against a scripted sensor
built from the same codecs (`cgms_fake.FakeCgm`), with a real `DeviceContext` whose findings are
kept across "connections" as the supervisor keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import structlog
from structlog.testing import capture_logs

from cgms_fake import FakeCgm, pump
from drivers.cgms.convert import to_reading
from drivers.cgms.flow import RecordFlow
from gatewayd.driver import DAMAGED_RETRIES, DeviceContext, DeviceFindings
from gatewayd.models import Reading
from protocols.cgms.events import CgmsEvent, Measurement
from protocols.cgms.session import CgmsCollector
from protocols.cgms.uuids import CGM_MEASUREMENT
from protocols.gatt.racp import RECORD_ACCESS_CONTROL_POINT
from protocols.gatt.session import Request

#: 0..1130 every 5 minutes: the 227 records of the sensor in issue 9.
OFFSET = 1130


@dataclass
class Hub:
    """The driver's side: one collector + flow per connection, findings kept across them."""

    device: FakeCgm
    findings: DeviceFindings = field(default_factory=DeviceFindings)
    stored: list[Reading] = field(default_factory=list)

    def context(self) -> DeviceContext[None]:
        log = structlog.get_logger().bind(device="cgm")
        return DeviceContext("cgm", "cgms", None, None, log, findings=self.findings)

    def connect(self) -> tuple[CgmsCollector, RecordFlow, DeviceContext[None]]:
        """A new connection resuming after the newest stored reading."""
        ctx = self.context()
        last = self.stored[-1] if self.stored else None
        collector = CgmsCollector(
            backfill_from=None if last is None else last.seq + 1,
            session_start=None if last is None else last.time - timedelta(minutes=last.seq),
        )
        released = None if last is None else (last.session, last.seq)
        flow = RecordFlow(collector, self.convert, ctx, released=released)
        return collector, flow, ctx

    def convert(self, event: Measurement) -> Reading | None:
        result = to_reading(event, device="cgm", serial="S1", received=self.device.now)
        return result if isinstance(result, Reading) else None

    def run(
        self,
        collector: CgmsCollector,
        flow: RecordFlow,
        *,
        drop_after: int | None = None,
        in_flight: bool = False,
    ) -> None:
        """Drive the connection until it is idle (or `drop_after` RACP reports were asked);
        `in_flight`: a new live record arrives just after the first report was asked for."""
        pump(collector, self.device, observer=Driver(self, collector, flow, drop_after, in_flight))

    def take(self, flow: RecordFlow) -> None:
        while flow.ready:
            self.stored.append(flow.ready.popleft())

    def live(self, collector: CgmsCollector, flow: RecordFlow, *, damaged: bool = False) -> None:
        """One interval passes; the new record is notified (damaged in memory: `damaged`)."""
        device = self.device
        data = device.tick() or b""
        if damaged:
            device.damaged.add(device.offset)
            data = device.stored(device.records[device.offset])
        flow.events(collector.receive(CGM_MEASUREMENT, data, now=device.now))
        self.run(collector, flow)

    def seqs(self) -> list[int]:
        return [r.seq for r in self.stored]

    def reports(self) -> list[str]:
        return [d.hex(" ") for u, d in self.device.writes if u == RECORD_ACCESS_CONTROL_POINT]


@dataclass
class Driver:
    """The driver's loop around the collector: the flow sees every request and answer."""

    hub: Hub
    collector: CgmsCollector
    flow: RecordFlow
    drop_after: int | None  # RACP reports asked before the link drops
    in_flight: bool  # a live record arrives just after the first report was asked for

    def sent(self, request: Request) -> bool:
        if request.label == "racp_report" and self.drop_after is not None:
            if self.drop_after == 0:
                return False
            self.drop_after -= 1
        if self.in_flight and request.label == "racp_report":
            self.in_flight = False
            device = self.hub.device
            live = device.tick() or b""
            self.events(self.collector.receive(CGM_MEASUREMENT, live, now=device.now))
        return True

    def events(self, events: list[CgmsEvent]) -> None:
        self.flow.events(events)
        self.hub.take(self.flow)

    def idle(self) -> None:
        self.flow.idle()
        self.hub.take(self.flow)


def expected(device: FakeCgm) -> list[int]:
    return [o for o in sorted(device.records) if o not in device.damaged]


def test_one_damaged_record_is_asked_again_twice_then_passed_over_and_all_others_stored() -> None:
    """Issue 9: one record with a wrong E2E-CRC held all 227 readings back, forever."""
    hub = Hub(FakeCgm(offset=OFFSET, damaged={500}))
    collector, flow, ctx = hub.connect()
    with capture_logs() as logs:
        hub.run(collector, flow)
    assert hub.seqs() == expected(hub.device)  # 226 of 227, in order, once each
    assert len(hub.stored) == 226
    assert hub.findings.unreadable == 1
    assert ctx.dropped == {"crc_mismatch": 1 + DAMAGED_RETRIES}
    # the whole memory once, then twice from after the last released record (495)
    assert hub.reports() == ["01 01", "01 03 01 f0 01", "01 03 01 f0 01"]
    (unreadable,) = [e for e in logs if e["event"] == "record_unreadable"]
    assert unreadable["position"] == "the record after offset 495 of session 2024-05-01T08:00:00Z"
    assert unreadable["reason"] == "crc_mismatch"
    assert unreadable["hex"] == hub.device.stored(hub.device.records[500]).hex()
    assert flow.failure is None


@pytest.mark.parametrize(
    "damaged",
    [{0}, {OFFSET}, {0, 5, 500, 505, 510, 800, OFFSET - 5, OFFSET}],
    ids=["oldest", "newest", "start-middle-end-in-runs"],
)
def test_damaged_records_anywhere_in_a_report_are_passed_over_the_rest_is_stored(
    damaged: set[int],
) -> None:
    hub = Hub(FakeCgm(offset=OFFSET, damaged=damaged))
    collector, flow, ctx = hub.connect()
    hub.run(collector, flow)
    assert hub.seqs() == expected(hub.device)
    assert hub.findings.unreadable == len(damaged)
    assert sum(ctx.dropped.values()) == len(damaged) * (1 + DAMAGED_RETRIES)
    # every damaged record of a report counts at once: the report is read 1 + retries times
    assert len(hub.reports()) == 1 + DAMAGED_RETRIES
    # then live records flow on, and a gap check past the newest one passes it over at once
    hub.live(collector, flow)
    hub.live(collector, flow)
    assert hub.seqs()[-2:] == [OFFSET + 5, OFFSET + 10]
    assert hub.findings.unreadable == len(damaged)


@pytest.mark.parametrize("damaged", [set(), {300}], ids=["intact", "damaged"])
def test_a_live_record_in_flight_before_a_report_of_all_records_goes_out_last(
    damaged: set[int],
) -> None:
    hub = Hub(FakeCgm(offset=OFFSET, damaged=damaged))
    collector, flow, _ = hub.connect()
    hub.run(collector, flow, in_flight=True)
    assert hub.seqs() == expected(hub.device)
    assert hub.seqs()[-1] == OFFSET + 5
    assert hub.findings.unreadable == len(damaged)


def test_good_readings_go_out_before_the_damaged_one_is_given_up() -> None:
    """What precedes the damaged record is released while it is still asked for again."""
    hub = Hub(FakeCgm(offset=OFFSET, damaged={600}))
    collector, flow, _ = hub.connect()
    hub.run(collector, flow, drop_after=1)  # the link drops before the first retry
    assert hub.seqs() == list(range(0, 600, 5))
    assert hub.findings.unreadable == 0
    assert hub.findings.attempts == {("cgms", "2024-05-01T08:00:00Z", 595, 0): 1}


def test_the_retries_are_counted_across_connections_for_the_same_position() -> None:
    hub = Hub(FakeCgm(offset=OFFSET, damaged={600}))
    for _ in range(DAMAGED_RETRIES):
        collector, flow, _ = hub.connect()
        hub.run(collector, flow, drop_after=1)  # one read of the record per connection
        assert hub.findings.unreadable == 0
    collector, flow, _ = hub.connect()
    hub.run(collector, flow)
    assert hub.findings.unreadable == 1
    assert hub.seqs() == expected(hub.device)
    # a later connection resumes after the newest stored reading: the record never comes again
    collector, flow, ctx = hub.connect()
    hub.run(collector, flow)
    assert hub.findings.unreadable == 1
    assert not ctx.dropped
    assert hub.seqs() == expected(hub.device)


def test_a_record_damaged_once_on_the_link_is_read_again_and_forgotten() -> None:
    device = FakeCgm(offset=OFFSET, damaged={700})
    hub = Hub(device)
    collector, flow, _ = hub.connect()
    hub.run(collector, flow, drop_after=1)
    device.damaged.clear()  # it was the link, not the memory
    collector, flow, _ = hub.connect()
    hub.run(collector, flow)
    assert hub.seqs() == expected(device)
    assert 700 in hub.seqs()
    assert hub.findings.unreadable == 0
    assert hub.findings.attempts == {}


def test_a_damaged_live_record_is_fetched_as_a_gap_bounded_the_same_way() -> None:
    hub = Hub(FakeCgm(offset=60))
    collector, flow, ctx = hub.connect()
    hub.run(collector, flow)
    hub.live(collector, flow, damaged=True)  # 65 stays damaged in memory
    assert hub.findings.unreadable == 1
    # the live arrival, then 1 + retries reads of the range 61..65
    assert ctx.dropped == {"crc_mismatch": 2 + DAMAGED_RETRIES}
    assert hub.reports()[1:] == ["01 04 01 3d 00 41 00"] * (1 + DAMAGED_RETRIES)
    hub.live(collector, flow)
    hub.live(collector, flow)
    assert hub.seqs() == [*range(0, 61, 5), 70, 75]
    assert len(hub.reports()) == 1 + 1 + DAMAGED_RETRIES  # nothing asked again for 65


def test_the_sensor_clock_offset_is_reported_readings_keep_the_hub_time() -> None:
    hub = Hub(FakeCgm(offset=OFFSET, sst_skew=-timedelta(days=213)))
    collector, flow, _ = hub.connect()
    hub.run(collector, flow)
    offset = hub.findings.clock_offset_s
    assert offset is not None
    assert abs(offset + 213 * 86400) <= 60
    start = hub.device.start
    assert all(
        abs(r.time - start - timedelta(minutes=r.seq)) <= timedelta(seconds=60) for r in hub.stored
    )


def test_an_unknown_calendar_on_a_later_connection_clears_the_reported_offset() -> None:
    device = FakeCgm(offset=60, sst_skew=timedelta(hours=1))
    hub = Hub(device)
    collector, flow, _ = hub.connect()
    hub.run(collector, flow)
    assert hub.findings.clock_offset_s is not None
    device.sst_known = False
    collector, flow, _ = hub.connect()
    hub.run(collector, flow)
    assert hub.findings.clock_offset_s is None
