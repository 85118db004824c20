"""A small scripted CGMS sensor for the collector's tests, built from the same codecs.

It answers reads, RACP and SOCP writes, and produces live notifications, with switches for the
faults under test (no RACP answer, no range support, records without CRC, records that stay
damaged in memory, a Session Start Time that is off). `pump()` runs a collector against it
until the collector is idle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from protocols.cgms.events import CgmsEvent
from protocols.cgms.measurement import CgmMeasurement
from protocols.cgms.session import CgmsCollector
from protocols.cgms.socp import SocpOpCode, SocpPacket, SocpResponseCode, SocpResult
from protocols.cgms.state import (
    CgmFeature,
    CgmFeatureBits,
    CgmStatus,
    SensorStatus,
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
from protocols.gatt.date_time import DateTime
from protocols.gatt.racp import (
    RECORD_ACCESS_CONTROL_POINT,
    RacpCommand,
    RacpOperator,
    RacpResponse,
    RacpResponseCode,
    parse_racp,
)
from protocols.gatt.session import Request, RequestKind
from protocols.sfloat import SFloat

__all__ = ["START", "FakeCgm", "Observer", "pump"]

START = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


@dataclass
class FakeCgm:
    """A CGMS sensor in a session that started at `start`, now `offset` minutes in."""

    e2e: bool = True
    interval: int = 5
    start: datetime = START
    offset: int = 60
    stopped: bool = False
    range_supported: bool = True
    socp_supported: bool = True
    racp_silent: bool = False
    crc_on_records: bool | None = None  # None: follow e2e
    sst_known: bool = True
    per_notification: int = 4
    #: The sensor's calendar minus the truth (its Session Start Time is off by this much).
    sst_skew: timedelta = timedelta(0)
    #: Offsets whose record stays damaged in memory (a flipped bit under the E2E-CRC).
    damaged: set[int] = field(default_factory=set)
    records: dict[int, CgmMeasurement] = field(default_factory=dict)
    writes: list[tuple[str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for offset in range(0, self.offset + 1, self.interval):
            self.records[offset] = self.record(offset)

    @property
    def now(self) -> datetime:
        return self.start + timedelta(minutes=self.offset, seconds=20)

    def record(self, offset: int) -> CgmMeasurement:
        crc = self.e2e if self.crc_on_records is None else self.crc_on_records
        return CgmMeasurement(SFloat(100 + offset % 50), offset, e2e_crc=crc)

    def read(self, uuid: str) -> bytes:
        features = CgmFeatureBits.CGM_TREND_INFORMATION | (
            CgmFeatureBits.E2E_CRC if self.e2e else 0
        )
        if uuid == CGM_FEATURE:
            return CgmFeature(CgmFeatureBits(features)).build()
        if uuid == CGM_STATUS:
            status = SensorStatus.SESSION_STOPPED if self.stopped else SensorStatus(0)
            return CgmStatus(self.offset, status, self.e2e).build()
        if uuid == CGM_SESSION_START_TIME:
            if not self.sst_known:
                return SessionStartTime(DateTime(0, 0, 0), -128, 255, self.e2e).build()
            sst = SessionStartTime.from_datetime(self.start + self.sst_skew, e2e_crc=self.e2e)
            return sst.build()
        assert uuid == CGM_SESSION_RUN_TIME
        return SessionRunTime(336, self.e2e).build()

    def write(self, uuid: str, data: bytes) -> list[tuple[str, bytes]]:
        """What the sensor sends back (notifications, then the indication)."""
        self.writes.append((uuid, data))
        if uuid == RECORD_ACCESS_CONTROL_POINT:
            return self._racp(parse_racp(data))
        if uuid == CGM_SPECIFIC_OPS_CONTROL_POINT:
            return [(uuid, self._socp(SocpPacket.parse(data)).build())]
        return []

    def _racp(self, command: object) -> list[tuple[str, bytes]]:
        assert isinstance(command, RacpCommand)
        if self.racp_silent:
            return []
        code = RacpResponseCode.SUCCESS
        if command.operator == RacpOperator.NULL:
            return [(RECORD_ACCESS_CONTROL_POINT, RacpResponse(3, code).build())]
        if command.operator == RacpOperator.WITHIN_RANGE and not self.range_supported:
            response = RacpResponse(command.opcode, RacpResponseCode.OPERATOR_NOT_SUPPORTED)
            return [(RECORD_ACCESS_CONTROL_POINT, response.build())]
        low, high = 0, 0xFFFF
        if command.values:
            low = int(command.values[0])  # type: ignore[arg-type]
        if command.operator == RacpOperator.WITHIN_RANGE:
            high = int(command.values[1])  # type: ignore[arg-type]
        chosen = [r for o, r in sorted(self.records.items()) if low <= o <= high]
        out = [
            (CGM_MEASUREMENT, b"".join(map(self.stored, chosen[i : i + self.per_notification])))
            for i in range(0, len(chosen), self.per_notification)
        ]
        if not chosen:
            code = RacpResponseCode.NO_RECORDS_FOUND
        return [*out, (RECORD_ACCESS_CONTROL_POINT, RacpResponse(command.opcode, code).build())]

    def stored(self, record: CgmMeasurement) -> bytes:
        """A record as its memory holds it (damaged at the offsets in `damaged`)."""
        data = bytearray(record.build())
        if record.time_offset in self.damaged:
            data[2] ^= 0x01
        return bytes(data)

    def _socp(self, packet: SocpPacket) -> SocpPacket:
        assert packet.e2e_crc == self.e2e
        if not self.socp_supported:
            result = SocpResult(packet.opcode, SocpResponseCode.OP_CODE_NOT_SUPPORTED)
            return SocpPacket(SocpOpCode.RESPONSE_CODE, result, self.e2e)
        if packet.opcode == SocpOpCode.GET_COMMUNICATION_INTERVAL:
            return SocpPacket(SocpOpCode.COMMUNICATION_INTERVAL_RESPONSE, self.interval, self.e2e)
        if packet.opcode == SocpOpCode.START_SESSION:
            self.start, self.offset, self.stopped = self.now, 0, False
            self.records = {0: self.record(0)}
        result = SocpResult(packet.opcode, SocpResponseCode.SUCCESS)
        return SocpPacket(SocpOpCode.RESPONSE_CODE, result, self.e2e)

    def tick(self, *, notify: bool = True) -> bytes | None:
        """One interval passes; the new record is stored and (maybe) notified."""
        self.offset += self.interval
        self.records[self.offset] = self.record(self.offset)
        return self.records[self.offset].build() if notify else None


class Observer(Protocol):
    """What a driver does around the collector (`pump(observer=...)`)."""

    def sent(self, request: Request) -> bool:
        """`request` is performed now; False: the link drops instead."""

    def events(self, events: list[CgmsEvent]) -> None:
        """What one answer meant."""

    def idle(self) -> None:
        """No request is due (the collector may have queued one meanwhile)."""


def pump(
    session: CgmsCollector,
    device: FakeCgm,
    limit: int = 1000,
    *,
    observer: Observer | None = None,
) -> list[CgmsEvent]:
    """Run requests until the session is idle (or the observer drops the link); a missing
    awaited answer is a timeout."""
    events: list[CgmsEvent] = []

    def take(batch: list[CgmsEvent]) -> None:
        events.extend(batch)
        if observer is not None:
            observer.events(batch)

    for _ in range(limit):
        request = session.next_request()
        if request is None and observer is not None:
            observer.idle()
            request = session.next_request()
        if request is None:
            return events
        if observer is not None and not observer.sent(request):
            return events
        if request.kind is RequestKind.READ:
            value = device.read(request.characteristic)
            take(session.receive(request.characteristic, value, now=device.now))
            continue
        answers = device.write(request.characteristic, request.data)
        for uuid, data in answers:
            take(session.receive(uuid, data, now=device.now))
        if request.awaits_response and not any(u == request.characteristic for u, _ in answers):
            take(session.timeout())
    raise AssertionError("the session never went idle")
