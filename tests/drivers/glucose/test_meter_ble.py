"""The glucose driver's unmodified bleak code against the emulated meter over Bumble.

The meter runs in this process on a virtual link (`in_process_link`); the driver finds it
through the loop's Bumble host, as it would on a hub with `[ble] stack = "bumble"`. `Hub` plays
the supervisor and the store: one session per connection, readings kept by id, the resume point
taken from the newest stored reading, as `gatewayd.store` does.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import structlog
from structlog.testing import capture_logs

from drivers.glucose import GlucoseOptions, plugin
from drivers.glucose.clock import UNVERIFIED
from drivers.glucose.convert import SESSION
from drivers.glucose.emulator import SERIAL, GlucoseMeterEmulator, make_record, sample_records
from gatewayd.driver import DeviceContext, ResumePoint
from gatewayd.errors import DeviceError, DeviceNotFound, DeviceRefused, LinkLost
from gatewayd.models import Reading
from gatewayd.transport.ble import BleConfig
from gatewayd.transport.bumble.backend import bumble_session
from gatewayd.transport.bumble.link import PERIPHERAL_ADDRESS, InProcessLink, in_process_link
from protocols.gatt.racp import RacpOpCode, RacpOperator, RacpResponseCode, parse_racp
from protocols.glucose.context import GlucoseContext, Health, Meal
from protocols.glucose.context import Tester as GlsTester

pytestmark = pytest.mark.timeout(20)

DEVICE = "meter"
#: The loop's host is the link's central; the hci string is never opened.
BUMBLE = BleConfig(stack="bumble", hci="tcp-client:127.0.0.1:1")
OPTIONS = GlucoseOptions(tz="UTC", scan_timeout=5, linger=0)
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Hub:
    """A store and a supervisor in miniature."""

    options: GlucoseOptions = OPTIONS
    stored: dict[str, Reading] = field(default_factory=dict)
    order: list[Reading] = field(default_factory=list)
    duplicates: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def resume(self) -> ResumePoint | None:
        if not self.order:
            return None
        newest = max(enumerate(self.order), key=lambda p: (p[1].time, p[0]))[1]
        return ResumePoint(newest.serial, newest.session, newest.seq, newest.time)

    def context(self) -> DeviceContext[GlucoseOptions]:
        return DeviceContext(
            device_id=DEVICE,
            driver="glucose",
            options=self.options,
            resume=self.resume(),
            log=structlog.get_logger().bind(device=DEVICE),
            dropped=self.dropped,
            ble=BUMBLE,
        )

    def keep(self, reading: Reading) -> None:
        if reading.id in self.stored:
            self.duplicates += 1
            return
        self.stored[reading.id] = reading
        self.order.append(reading)

    async def connect(self) -> list[Reading]:
        """One session to its end (the meter closes the link): what it yielded."""
        got: list[Reading] = []
        async with plugin.open(self.context()) as session:
            async for reading in session.readings():
                got.append(reading)
                self.keep(reading)
        return got

    def seqs(self) -> list[int]:
        return sorted(r.seq for r in self.order)


@pytest.fixture
async def link() -> AsyncIterator[InProcessLink]:
    async with in_process_link(peripheral_name="meter") as link, bumble_session(link.central):
        yield link


async def start_meter(link: InProcessLink, **kwargs: object) -> GlucoseMeterEmulator:
    kwargs.setdefault("records", sample_records(12, end=NOW))
    meter = GlucoseMeterEmulator(link.peripheral, **kwargs)  # type: ignore[arg-type]
    await meter.start()
    return meter


def report_requests(meter: GlucoseMeterEmulator) -> list[tuple[RacpOperator, tuple[object, ...]]]:
    """The report requests (not the "number of records >= the newest stored" checks)."""
    out = []
    for data in meter.requests:
        command = parse_racp(data)
        if command.opcode == RacpOpCode.REPORT_STORED_RECORDS:  # type: ignore[union-attr]
            out.append((command.operator, command.values))  # type: ignore[union-attr]
    return out


async def test_first_connection_backfills_every_record(link: InProcessLink) -> None:
    meter = await start_meter(link)
    hub = Hub()
    got = await hub.connect()
    assert [r.seq for r in got] == list(range(1, 13))
    assert report_requests(meter) == [(RacpOperator.ALL_RECORDS, ())]
    assert all(r.serial == SERIAL and r.session == SESSION and r.driver == "glucose" for r in got)
    assert all(r.backfilled for r in got)
    # times: base time + offset on the meter's clock (UTC here), 4 h apart, ending now
    assert [r.time for r in got] == [NOW - timedelta(hours=4 * (11 - i)) for i in range(12)]
    assert got[0].glucose_mgdl == 70.0
    assert got[1].glucose_mgdl == 107.0


async def test_reconnection_asks_only_for_new_records_by_sequence(link: InProcessLink) -> None:
    meter = await start_meter(link)
    hub = Hub()
    await hub.connect()
    assert await hub.connect() == []  # nothing new: "no records found"
    new = [meter.add_measurement(123), meter.add_measurement(out_of_range="low")]
    got = await hub.connect()
    assert [r.seq for r in got] == [r.seq for r in new] == [13, 14]
    assert (got[0].glucose_mgdl, got[1].glucose_mgdl, got[1].out_of_range) == (123.0, None, "low")
    assert report_requests(meter) == [
        (RacpOperator.ALL_RECORDS, ()),
        (RacpOperator.GREATER_THAN_OR_EQUAL, (13,)),
        (RacpOperator.GREATER_THAN_OR_EQUAL, (13,)),
    ]
    assert meter.connections == 3
    assert hub.duplicates == 0


async def test_a_link_drop_mid_transfer_loses_and_repeats_nothing(link: InProcessLink) -> None:
    meter = await start_meter(link, records=sample_records(40, end=NOW))
    hub = Hub()
    stored_before: list[int] = []
    for records in (15, 7):
        meter.drop_after(records)
        with pytest.raises(LinkLost):
            await hub.connect()
        stored_before.append(max(hub.seqs()))
    assert stored_before[0] in range(14, 16)  # up to the drop (a context may have been due)
    assert await hub.connect()
    assert hub.seqs() == list(range(1, 41))  # 0 gaps
    assert hub.duplicates == 0  # 0 dups by id
    assert len({r.id for r in hub.order}) == 40
    firsts = [v for op, v in report_requests(meter) if op == RacpOperator.GREATER_THAN_OR_EQUAL]
    assert firsts == [(seq + 1,) for seq in stored_before]  # each from the newest stored + 1


async def test_context_is_paired_by_sequence_number_into_status(link: InProcessLink) -> None:
    meter = await start_meter(link, records=[])
    context = GlucoseContext(
        0, meal=Meal.POSTPRANDIAL, tester=GlsTester.SELF, health=Health.UNDER_STRESS
    )
    meter.add_measurement(180, when=NOW - timedelta(minutes=5), context=context)
    meter.add_measurement(95, when=NOW)
    got = await Hub().connect()
    # no Current Time Service: the meter's calendar, as it is
    assert [r.status for r in got] == [
        ("meal_postprandial", "tester_self", "health_under_stress", UNVERIFIED),
        (UNVERIFIED,),
    ]
    assert [r.glucose_mgdl for r in got] == [180.0, 95.0]


async def test_out_of_range_results_are_markers_never_numbers(link: InProcessLink) -> None:
    await start_meter(link)  # sample records: seq 4 HI, seq 9 LO (sent with 600 / 20 mg/dL)
    got = {r.seq: r for r in await Hub().connect()}
    assert (got[4].glucose_mgdl, got[4].out_of_range) == (None, "high")
    assert (got[9].glucose_mgdl, got[9].out_of_range) == (None, "low")
    assert "result_above_device_range" in got[4].status
    assert "result_below_device_range" in got[9].status
    assert all(r.out_of_range is None and r.glucose_mgdl for s, r in got.items() if s not in (4, 9))


async def test_a_corrupted_record_is_counted_and_asked_for_again(link: InProcessLink) -> None:
    meter = await start_meter(link)
    meter.corrupt(5)  # once: the retry on the same connection gets it
    hub = Hub()
    with capture_logs() as logs:
        got = await hub.connect()
    assert hub.dropped == Counter({"malformed": 1})
    assert sorted(r.seq for r in got) == list(range(1, 13))
    assert hub.duplicates == 0
    assert [v for op, v in report_requests(meter)] == [(), (5,)]
    dropped = [e for e in logs if e["event"] == "packet_dropped"]
    assert len(dropped) == 1
    assert dropped[0]["reason"] == "malformed"


async def test_after_a_corrupted_record_nothing_later_is_yielded_before_it(
    link: InProcessLink,
) -> None:
    meter = await start_meter(link, close_after_transfer=0)  # leaves at once after a report
    meter.corrupt(5)
    hub = Hub()
    first = await hub.connect()
    assert [r.seq for r in first] == [1, 2, 3, 4]  # never a reading after a hole
    assert hub.dropped == Counter({"malformed": 1})
    second = await hub.connect()  # the retry on the same link went unanswered
    assert [r.seq for r in second] == list(range(5, 13))
    assert hub.duplicates == 0
    assert [v for op, v in report_requests(meter)] == [(), (5,), (5,)]


async def test_a_record_corrupted_for_good_is_passed_over(link: InProcessLink) -> None:
    meter = await start_meter(link)
    meter.damaged.add(7)
    hub = Hub()
    got = await hub.connect()
    assert [r.seq for r in got] == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    assert hub.dropped == Counter({"malformed": 3})  # the first try and the two retries
    assert [v for op, v in report_requests(meter)] == [(), (7,), (7,), (8,)]
    assert hub.seqs() == sorted(hub.seqs())


async def test_a_damaged_last_record_is_asked_for_again(link: InProcessLink) -> None:
    meter = await start_meter(link)
    meter.corrupt(12, times=2)  # the last one: intact on the second retry
    hub = Hub()
    got = await hub.connect()
    assert [r.seq for r in got] == list(range(1, 13))
    assert [v for op, v in report_requests(meter)] == [(), (12,), (12,)]


async def test_meter_time_is_read_in_the_configured_zone(link: InProcessLink) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    measured = datetime(2024, 7, 1, 8, 30, tzinfo=berlin)  # 06:30 UTC (summer time)
    await start_meter(link, records=[make_record(1, measured, 101)], tz=berlin)
    hub = Hub(options=replace(OPTIONS, tz="Europe/Berlin"))
    (reading,) = await hub.connect()
    assert reading.time == datetime(2024, 7, 1, 6, 30, tzinfo=UTC)


async def test_bond_auto_pairs_when_the_meter_asks(link: InProcessLink) -> None:
    await start_meter(link, require_bonding=True)
    hub = Hub()
    with capture_logs() as logs:
        got = await hub.connect()
    assert len(got) == 12
    assert [e["reason"] for e in logs if e["event"] == "ble_bonding"] == ["ATT 0x05"]


async def test_bond_always_pairs_on_connect(link: InProcessLink) -> None:
    await start_meter(link, require_bonding=True)
    hub = Hub(options=replace(OPTIONS, bond="always"))
    with capture_logs() as logs:
        got = await hub.connect()
    assert len(got) == 12
    # paired once, on connect: no operation was refused for want of a bond
    assert [e["reason"] for e in logs if e["event"] == "ble_bonding"] == ['bond = "always"']


async def test_bond_never_refuses_a_meter_that_requires_it(link: InProcessLink) -> None:
    await start_meter(link, require_bonding=True)
    with pytest.raises(DeviceRefused, match="requires bonding"):
        await Hub(options=replace(OPTIONS, bond="never")).connect()


async def test_a_meter_that_refuses_to_bond_is_refused_for_good(link: InProcessLink) -> None:
    await start_meter(link, require_bonding=True, refuse_bonding=True)
    hub = Hub()
    with pytest.raises(DeviceRefused, match="bonding refused by the meter") as refused:
        await hub.connect()
    assert "put the meter in pairing mode" in str(refused.value)
    assert hub.order == []


async def test_a_meter_that_is_not_there_is_not_found(link: InProcessLink) -> None:
    await start_meter(link)
    options = replace(OPTIONS, address="11:22:33:44:55:66", scan_timeout=0.3)
    with pytest.raises(DeviceNotFound, match=r"did not advertise within 0\.3 s"):
        await Hub(options=options).connect()


async def test_address_and_name_select_the_meter(link: InProcessLink) -> None:
    await start_meter(link)
    for options in (
        replace(OPTIONS, address=PERIPHERAL_ADDRESS),
        replace(OPTIONS, name="meter+"),
        replace(OPTIONS, address=PERIPHERAL_ADDRESS, name="meter+EMU0001"),
    ):
        assert len(await Hub(options=options).connect()) == 12
    with pytest.raises(DeviceNotFound):
        await Hub(options=replace(OPTIONS, name="other", scan_timeout=0.3)).connect()


async def test_without_a_serial_number_the_address_is_the_serial(link: InProcessLink) -> None:
    await start_meter(link, serial_characteristic=False)
    got = await Hub().connect()
    assert {r.serial for r in got} == {PERIPHERAL_ADDRESS}


async def test_a_meter_that_keeps_the_link_is_left_after_linger(link: InProcessLink) -> None:
    meter = await start_meter(link, close_after_transfer=None)
    hub = Hub(options=replace(OPTIONS, linger=0.5))
    results: list[Reading] = []
    with capture_logs() as logs:
        await linger_session(hub, meter, link, results)
    assert [e["event"] for e in logs if e["event"] == "meter_idle"] == ["meter_idle"]
    assert not link.peripheral.connections  # we closed the link


async def linger_session(
    hub: Hub, meter: GlucoseMeterEmulator, link: InProcessLink, results: list[Reading]
) -> None:
    async with plugin.open(hub.context()) as session:
        readings = session.readings()
        async for reading in readings:
            results.append(reading)
            if len(results) == 12:
                break
        # a live result while the link is up (a meter that notifies new ones by itself)
        record = meter.add_measurement(140)
        await meter.notify_live(record)
        live = await anext(readings)
        assert (live.seq, live.glucose_mgdl, live.backfilled) == (13, 140.0, False)
        assert [r async for r in readings] == []  # then silence: the session ends


async def test_a_meter_refusing_the_sequence_filter_is_asked_for_everything(
    link: InProcessLink,
) -> None:
    class NoFilters(GlucoseMeterEmulator):
        def _select(self, command: object) -> list:  # type: ignore[type-arg]
            if getattr(command, "operator", None) == RacpOperator.GREATER_THAN_OR_EQUAL:
                from protocols.errors import ControlPointError

                raise ControlPointError(
                    "no", b"", response_code=RacpResponseCode.OPERATOR_NOT_SUPPORTED
                )
            return super()._select(command)

    meter = NoFilters(link.peripheral, records=sample_records(5, end=NOW))
    await meter.start()
    hub = Hub()
    await hub.connect()
    meter.add_measurement(99)
    got = await hub.connect()
    assert [r.seq for r in got] == [6]  # the older ones are skipped by the driver
    assert hub.duplicates == 0
    assert [op for op, _ in report_requests(meter)] == [
        RacpOperator.ALL_RECORDS,
        RacpOperator.GREATER_THAN_OR_EQUAL,
        RacpOperator.ALL_RECORDS,
    ]


async def test_a_silent_meter_fails_the_session_for_a_retry(
    link: InProcessLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Silent(GlucoseMeterEmulator):
        async def _run(self, connection: object, data: bytes) -> None:  # type: ignore[override]
            await asyncio.Event().wait()

    import drivers.glucose.session as session_module

    monkeypatch.setattr(session_module, "RESPONSE_TIMEOUT", 0.3)
    meter = Silent(link.peripheral, records=sample_records(3, end=NOW))
    await meter.start()
    with pytest.raises(DeviceError, match="record transfer failed: timeout"):
        await Hub().connect()
    await meter.stop()


async def test_a_stopping_gateway_closes_the_link_and_leaves_no_task(link: InProcessLink) -> None:
    await start_meter(link, close_after_transfer=None)
    hub = Hub(options=replace(OPTIONS, linger=60))
    twelve = asyncio.Event()

    async def consume() -> None:
        async with plugin.open(hub.context()) as session:
            async for reading in session.readings():
                hub.keep(reading)
                if len(hub.order) == 12:
                    twelve.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(10):
        await twelve.wait()
    assert link.peripheral.connections  # lingering: the meter keeps the link
    task.cancel()  # what the supervisor does on SIGTERM
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not link.central.device.connections  # closed on the way out
    mine = [t for t in asyncio.all_tasks() if "site-packages" not in repr(t)]  # not Bumble's
    assert [t for t in mine if not t.done()] == [asyncio.current_task()]


async def test_a_record_in_flight_before_each_report_loses_nothing_near_a_damaged_one(
    link: InProcessLink,
) -> None:
    """Every report begins with the newest result, notified as a live one the meter had queued
    when it read the request: it is stored in its place, never before the older ones, and the
    damaged record after it keeps its place (passed over after its retries, nothing lost)."""
    meter = await start_meter(link)
    meter.damaged.add(7)
    meter.in_flight_next(10)
    hub = Hub()
    await hub.connect()
    assert [r.seq for r in hub.order] == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]  # 12 came first
    assert hub.duplicates == 0
    assert hub.dropped == Counter({"malformed": 3})  # the first try and the two retries
    assert [v for op, v in report_requests(meter)] == [(), (7,), (7,), (8,)]


async def test_a_record_in_flight_before_a_report_is_stored_after_the_older_ones(
    link: InProcessLink,
) -> None:
    """The newest result comes first (in flight when the meter read the request), then the
    link drops: the next connection resumes after what came in order, so nothing is lost."""
    meter = await start_meter(link)
    meter.in_flight_next(1)
    meter.drop_after(4)  # 12 (in flight), 1, 2, 3
    hub = Hub()
    with pytest.raises(LinkLost):
        await hub.connect()
    assert 12 not in hub.seqs()
    await hub.connect()
    assert [r.seq for r in hub.order] == list(range(1, 13))
    assert hub.duplicates == 0
