"""An emulated Bluetooth Glucose Service meter: a Bumble GATT server built from `protocols`.

The meter has a record memory (`drivers.glucose.records.MeterRecord`: sequence number, base time
+ offset in the meter's local clock, some with a Measurement Context, some out of range), the
Glucose Service (0x1808: Measurement 0x2A18 notify, Context 0x2A34 notify, Feature 0x2A51 read,
RACP 0x2A52 write/indicate; a RACP write without indications enabled is refused with ATT 0xFD,
one while a procedure runs with 0xFE) and Device Information (0x180A: manufacturer, model,
serial, firmware). RACP answers "report / delete / report number of stored records" with the
operators all, <=, >=, range, first and last on sequence numbers (filter 0x01; user facing time
is answered "operand not supported", as many meters do), and "abort operation". Like a real
meter it closes the link once a report has been answered and no new request came for
`close_after_transfer` seconds (0: at once, later requests unanswered; None: never), and
advertises again.

With `current_time` it also serves the Current Time Service (0x1805: Current Time 0x2A2B, read
and notify): what its calendar reads now. The calendar is the true time (`clock`) plus `skew`
(`set_calendar(skew)`; `since_start`: the records already stored were stamped by it too), or
restarts at `METER_EPOCH` (`reset_calendar()`, a battery change); each change is notified to
a subscribed collector (adjust reason "manual time update"), and every record keeps the true
time it was measured at (`MeterRecord.measured`).

Test hooks: `add_measurement(...)` (a new fingerstick result; with `notify_new` it is also
notified at once to a connected collector, as some meters do), `notify_live(record)`,
`drop_link()` (now), `drop_after(n)` (after n more records: mid-transfer), `corrupt(seq, times)`
(the next `times` notifications of that record are sent one byte short), `corrupt_next(times)`
(the next notifications of any record), `damaged` (sequence numbers of records damaged in
memory: sent one byte short on every read), `disorder_next()` (the next new result is notified
late, the one after it twice), `in_flight_next(n)` (the next n reports begin with the newest
record, as a live notification queued when the meter read the request), `reset_memory()`
(every record erased, sequence numbers start again at 1; each erased memory is kept in
`erased`), `wait_idle()` (no link up).
A report of "all" or ">= n" includes the results taken while it runs. `require_bonding` makes
the Feature and RACP answer "insufficient authentication" on an unencrypted link;
`refuse_bonding` makes the meter refuse every pairing request (a meter bonded to a phone,
not in pairing mode).

In this process::

    async with in_process_link() as link:
        meter = GlucoseMeterEmulator(link.peripheral, records=sample_records(20))
        await meter.start()

As a process of its own (`gatewayd simulate --device glucose`): see `drivers.glucose.serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal

from bumble import att
from bumble.core import AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service

from drivers.glucose.records import NO_STATUS, MeterRecord, make_record, sample_records
from gatewayd.plugin.emulation import refuse_pairing
from protocols.errors import ControlPointError, ProtocolError
from protocols.gatt.date_time import DateTime
from protocols.gatt.racp import (
    RECORD_ACCESS_CONTROL_POINT,
    RacpCommand,
    RacpFilter,
    RacpNumberOfRecords,
    RacpOpCode,
    RacpOperator,
    RacpResponse,
    RacpResponseCode,
    parse_racp,
)
from protocols.gatt.uuids import FIRMWARE_REVISION, MANUFACTURER_NAME, MODEL_NUMBER, SERIAL_NUMBER
from protocols.glucose.clock import CURRENT_TIME, CURRENT_TIME_SERVICE, AdjustReason, CurrentTime
from protocols.glucose.context import GlucoseContext
from protocols.glucose.feature import GlucoseFeature, build_feature
from protocols.glucose.measurement import GlucoseStatus, GlucoseUnit
from protocols.glucose.uuids import (
    GLUCOSE_FEATURE,
    GLUCOSE_MEASUREMENT,
    GLUCOSE_MEASUREMENT_CONTEXT,
    GLUCOSE_SERVICE,
)

__all__ = [
    "GlucoseMeterEmulator",
    "MeterRecord",
    "make_record",
    "sample_records",
]

DEVICE_INFORMATION = "0000180a-0000-1000-8000-00805f9b34fb"
#: What the meter says it can detect.
FEATURES = (
    GlucoseFeature.LOW_BATTERY_DETECTION
    | GlucoseFeature.SENSOR_STRIP_INSERTION_ERROR_DETECTION
    | GlucoseFeature.SENSOR_RESULT_HIGH_LOW_DETECTION
    | GlucoseFeature.TIME_FAULT
)
#: ATT "procedure already in progress" (GLS: a RACP write while a procedure runs).
PROCEDURE_ALREADY_IN_PROGRESS = 0xFE
#: ATT "CCCD improperly configured" (a RACP write without indications enabled).
CCCD_IMPROPERLY_CONFIGURED = 0xFD
P = Characteristic.Properties
#: The emulated meter's default serial number.
SERIAL = "GLS-EMU-0001"
#: Where the emulated meter's calendar restarts after a reset (its local time).
METER_EPOCH = datetime(2000, 1, 1)  # noqa: DTZ001 - a calendar reading, zone given by the meter


class GlucoseMeterEmulator:
    """A Glucose Service meter on a Bumble `Device` (see the module docstring)."""

    def __init__(
        self,
        device: Device,
        *,
        records: Iterable[MeterRecord] = (),
        serial: str = SERIAL,
        name: str = "meter+EMU0001",
        manufacturer: str = "gatewayd",
        model: str = "Emulated Glucose Meter",
        firmware: str = "emu-1.0",
        tz: tzinfo = UTC,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        unit: GlucoseUnit = GlucoseUnit.KG_PER_L,
        close_after_transfer: float | None = 0.5,
        notify_new: bool = False,
        require_bonding: bool = False,
        refuse_bonding: bool = False,
        serial_characteristic: bool = True,
        current_time: bool = False,
    ) -> None:
        self.device = device
        self.records: list[MeterRecord] = sorted(records, key=lambda r: r.seq)
        self.serial = serial
        self.name = name
        self.tz = tz
        self.clock = clock
        self.unit = unit
        self.close_after_transfer = close_after_transfer
        self.notify_new = notify_new
        self.require_bonding = require_bonding
        if refuse_bonding:
            refuse_pairing(device)
        #: Every RACP request written to the meter, in order.
        self.requests: list[bytes] = []
        #: How many records were notified (measurements, corrupted ones included).
        self.sent = 0
        #: Connections seen so far.
        self.connections = 0
        self._drop_after: int | None = None
        self._corrupt: dict[int, int] = {}
        self._corrupt_next = 0
        #: Sequence numbers of the records damaged in memory (sent one byte short every time).
        self.damaged: set[int] = set()
        self._late = False  # `disorder_next`: the next result's notification is held back
        self._in_flight = 0  # `in_flight_next`: reports that begin with the newest record
        self._held_live: MeterRecord | None = None
        #: The memories erased by `reset_memory`, oldest first.
        self.erased: list[list[MeterRecord]] = []
        #: The calendar: the true time plus `skew`, or since `_reset_at` (true) from the epoch.
        self.skew = timedelta(0)
        self._reset_at: datetime | None = None
        self._reported: set[int] = set()  # what the last report sent
        self._synced: set[Connection] = set()  # links that had a report: new results go live
        self._open = 0  # links up
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._procedure: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._closing = False  # answered, closing at once: later requests are ignored
        self.measurement: Characteristic[bytes] = Characteristic(
            GLUCOSE_MEASUREMENT, P.NOTIFY, "READABLE", b""
        )
        self.context: Characteristic[bytes] = Characteristic(
            GLUCOSE_MEASUREMENT_CONTEXT, P.NOTIFY, "READABLE", b""
        )
        self.racp: Characteristic[bytes] = Characteristic(
            RECORD_ACCESS_CONTROL_POINT,
            P.WRITE | P.INDICATE,
            "WRITEABLE",
            CharacteristicValue(write=self._on_racp),
        )
        feature: Characteristic[bytes] = Characteristic(
            GLUCOSE_FEATURE, P.READ, "READABLE", CharacteristicValue(read=self._read_feature)
        )
        info = [
            (MANUFACTURER_NAME, manufacturer),
            (MODEL_NUMBER, model),
            (FIRMWARE_REVISION, firmware),
        ]
        if serial_characteristic:
            info.insert(2, (SERIAL_NUMBER, serial))
        self.current_time: Characteristic[bytes] | None = None
        if current_time:
            self.current_time = Characteristic(
                CURRENT_TIME,
                P.READ | P.NOTIFY,
                "READABLE",
                CharacteristicValue(read=lambda _connection: self._current_time().build()),
            )
            device.add_service(Service(CURRENT_TIME_SERVICE, [self.current_time]))
        device.add_service(
            Service(
                DEVICE_INFORMATION,
                [Characteristic(u, P.READ, "READABLE", v.encode()) for u, v in info],
            )
        )
        device.add_service(
            Service(GLUCOSE_SERVICE, [self.measurement, self.context, feature, self.racp])
        )
        device.on(device.EVENT_CONNECTION, self._on_connection)

    # -- hooks -------------------------------------------------------------------------------

    def add_measurement(
        self,
        mgdl: float | None = None,
        *,
        out_of_range: Literal["low", "high"] | None = None,
        when: datetime | None = None,
        context: GlucoseContext | None = None,
        status: GlucoseStatus = NO_STATUS,
    ) -> MeterRecord:
        """A new result (`when`: default the meter clock's now), stored with the next seq."""
        seq = (self.records[-1].seq + 1) & 0xFFFF if self.records else 1
        true = self.clock()
        moment = self.calendar(true) if when is None else when.astimezone(self.tz)
        record = make_record(
            seq,
            moment,
            mgdl,
            out_of_range=out_of_range,
            context=context,
            status=status,
            unit=self.unit,
        )
        record = replace(record, measured=true if when is None else when)
        self.records.append(record)
        if self.notify_new:
            if self._late:  # `disorder_next`
                self._late, self._held_live = False, record
            elif self._held_live is not None:
                held, self._held_live = self._held_live, None
                self._spawn(self._notify_each(record, held, record))
            else:
                self._spawn(self.notify_live(record))
        return record

    def in_flight_next(self, reports: int = 1) -> None:
        """The next `reports` reports begin with the newest record: a live notification the
        meter had queued when it read the request, so it comes before the oldest records."""
        self._in_flight += reports

    def disorder_next(self) -> None:
        """The next result is notified late (after the one after it), and that one twice."""
        self._late = True

    async def _notify_each(self, *records: MeterRecord) -> None:
        for record in records:
            await self.notify_live(record)

    async def notify_live(self, record: MeterRecord) -> None:
        """Notify `record` now to every subscribed link that had a report, outside any report
        (what some meters do with a result taken while connected; a running report includes
        it anyway)."""
        procedure = self._procedure
        if procedure is not None and not procedure.done():
            await asyncio.wait([procedure])  # a report includes what was stored meanwhile
            if record.seq in self._reported:
                return
        for connection in list(self.device.connections.values()):
            if connection in self._synced and self._subscribed(connection, self.measurement) & 1:
                await self._send(connection, record)

    def calendar(self, true: datetime | None = None) -> datetime:
        """What the meter's calendar reads (in its zone) at true time `true` (default now)."""
        true = self.clock() if true is None else true
        if self._reset_at is not None:
            return METER_EPOCH.replace(tzinfo=self.tz) + (true - self._reset_at)
        return (true + self.skew).astimezone(self.tz)

    def true_time(self, record: MeterRecord) -> datetime:
        """When `record` was truly measured."""
        if record.measured is not None:
            return record.measured
        when = record.measurement.time(self.tz)
        assert when is not None  # noqa: S101 - the emulator stamps valid dates
        return when

    def set_calendar(self, skew: timedelta, *, since_start: bool = False) -> None:
        """The calendar reads the true time plus `skew` from now (`since_start`: it always did,
        the stored records are stamped by it)."""
        self.skew, self._reset_at = skew, None
        if since_start:
            self.records = [self._stamped(r) for r in self.records]
        self._clock_set()

    def reset_calendar(self) -> None:
        """The calendar restarts at `METER_EPOCH` now (a battery change)."""
        self._reset_at, self.skew = self.clock(), timedelta(0)
        self._clock_set()

    def _stamped(self, record: MeterRecord) -> MeterRecord:
        true = self.true_time(record)
        m = record.measurement
        base = self.calendar(true) - timedelta(minutes=m.time_offset or 0)
        measurement = replace(m, base_time=DateTime.from_datetime(base))
        return replace(record, measurement=measurement, measured=true)

    def _current_time(self, reason: AdjustReason = AdjustReason.NONE) -> CurrentTime:
        return CurrentTime.from_datetime(self.calendar(), reason)

    def _clock_set(self) -> None:
        """Notify the new Current Time to a subscribed collector."""
        characteristic = self.current_time
        if characteristic is None:
            return
        value = self._current_time(AdjustReason.MANUAL_TIME_UPDATE).build()
        for connection in list(self.device.connections.values()):
            if self._subscribed(connection, characteristic) & 1:
                self._spawn(self.device.notify_subscriber(connection, characteristic, value))

    def reset_memory(self) -> None:
        """Every record is erased; sequence numbers start again at 1."""
        self.erased.append(self.records)
        self.records = []
        self.damaged.clear()

    async def drop_link(self) -> None:
        """Disconnect every connection now (the meter advertises again)."""
        for connection in list(self.device.connections.values()):
            with contextlib.suppress(Exception):
                await connection.disconnect()

    def drop_after(self, records: int) -> None:
        """Drop the link after `records` more records were notified (mid-transfer)."""
        self._drop_after = self.sent + records

    def corrupt(self, seq: int, times: int = 1) -> None:
        """Send the next `times` notifications of record `seq` one byte short."""
        self._corrupt[seq] = times

    def corrupt_next(self, times: int = 1) -> None:
        """Send the next `times` record notifications (any record, live or reported) one byte
        short."""
        self._corrupt_next = times

    async def wait_idle(self) -> None:
        """Return once no link is up."""
        await self._idle.wait()

    async def start(self) -> None:
        """Advertise (connectable, 20 ms, again after every disconnection)."""
        ad = AdvertisingData
        data = ad(
            [
                (ad.FLAGS, bytes([0x06])),
                (ad.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, bytes.fromhex("0818")),
                (ad.COMPLETE_LOCAL_NAME, self.name.encode()),
            ]
        )
        await self.device.start_advertising(
            advertising_data=bytes(data),
            auto_restart=True,
            advertising_interval_min=20,
            advertising_interval_max=20,
        )

    async def stop(self) -> None:
        """Stop every procedure of the meter (the link goes with the device)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- GATT --------------------------------------------------------------------------------

    def _on_connection(self, connection: Connection) -> None:
        self.connections += 1
        self._open += 1
        self._closing = False
        self._idle.clear()

        def on_disconnection(_reason: int) -> None:
            self._abort()
            self._synced.discard(connection)
            self._open -= 1
            if not self._open:
                self._idle.set()

        connection.on(connection.EVENT_DISCONNECTION, on_disconnection)

    def _abort(self) -> None:
        if self._procedure is not None:
            self._procedure.cancel()
            self._procedure = None

    def _check_security(self, connection: Connection | None) -> None:
        if self.require_bonding and (connection is None or not connection.is_encrypted):
            raise att.ATT_Error(att.ErrorCode.INSUFFICIENT_AUTHENTICATION)

    def _read_feature(self, connection: Connection | None) -> bytes:
        self._check_security(connection)
        return build_feature(FEATURES)

    def _subscribed(self, connection: Connection, characteristic: Characteristic[bytes]) -> int:
        cccd = self.device.gatt_server.subscribers.get(connection, {}).get(characteristic.handle)
        return cccd[0] if cccd else 0

    def _on_racp(self, connection: Connection | None, value: bytes) -> None:
        self._check_security(connection)
        assert connection is not None  # noqa: S101 - Bumble passes the writer's connection
        if not self._subscribed(connection, self.racp) & 2:
            raise att.ATT_Error(CCCD_IMPROPERLY_CONFIGURED)
        data = bytes(value)
        self.requests.append(data)
        if self._closing:
            return  # the link is going: accepted, never answered
        if self._closer is not None:
            self._closer.cancel()
        if self._procedure is not None and not self._procedure.done():
            if data[:1] != bytes([RacpOpCode.ABORT_OPERATION]):
                raise att.ATT_Error(PROCEDURE_ALREADY_IN_PROGRESS)
            self._abort()
        self._procedure = self._spawn(self._run(connection, data))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _respond(self, connection: Connection, response: bytes) -> None:
        await self.device.indicate_subscriber(connection, self.racp, response)

    async def _run(self, connection: Connection, data: bytes) -> None:
        opcode = data[0] if data else 0
        try:
            message = parse_racp(data)
            selected = self._select(message)
        except ControlPointError as exc:
            await self._respond(connection, RacpResponse(opcode, exc.response_code).build())
            return
        except ProtocolError:
            code = RacpResponseCode.INVALID_OPERAND
            await self._respond(connection, RacpResponse(opcode, code).build())
            return
        assert isinstance(message, RacpCommand)  # noqa: S101 - _select refused the others
        op = message.opcode
        if op == RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS:
            await self._respond(connection, RacpNumberOfRecords(len(selected)).build())
        elif op == RacpOpCode.ABORT_OPERATION:
            await self._respond(connection, RacpResponse(op, RacpResponseCode.SUCCESS).build())
        elif op == RacpOpCode.DELETE_STORED_RECORDS:
            gone = {r.seq for r in selected}
            self.records = [r for r in self.records if r.seq not in gone]
            code = RacpResponseCode.SUCCESS if gone else RacpResponseCode.NO_RECORDS_FOUND
            await self._respond(connection, RacpResponse(op, code).build())
        else:
            open_ended = message.operator in (
                RacpOperator.ALL_RECORDS,
                RacpOperator.GREATER_THAN_OR_EQUAL,
            )
            await self._report(connection, selected, open_ended)

    def _select(self, command: object) -> list[MeterRecord]:
        """The records a request names (none for abort); ControlPointError if it cannot."""
        if not isinstance(command, RacpCommand):  # a response written to the meter
            raise ControlPointError(
                "not a request", b"", response_code=RacpResponseCode.OP_CODE_NOT_SUPPORTED
            )
        if command.filter_type == RacpFilter.USER_FACING_TIME:
            raise ControlPointError(
                "user facing time", b"", response_code=RacpResponseCode.OPERAND_NOT_SUPPORTED
            )
        records, values = self.records, [int(v) for v in command.values if isinstance(v, int)]
        low, high = (values + values)[:2] if values else (0, 0xFFFF)
        operator = command.operator
        if command.opcode == RacpOpCode.ABORT_OPERATION:
            chosen: list[MeterRecord] = []
        elif operator in (RacpOperator.FIRST_RECORD, RacpOperator.LAST_RECORD):
            chosen = records[:1] if operator == RacpOperator.FIRST_RECORD else records[-1:]
        elif operator == RacpOperator.ALL_RECORDS:
            chosen = list(records)
        else:
            if operator == RacpOperator.GREATER_THAN_OR_EQUAL:
                high = 0xFFFF
            elif operator == RacpOperator.LESS_THAN_OR_EQUAL:
                high, low = low, 0
            chosen = [r for r in records if low <= r.seq <= high]
        return chosen

    async def _send(self, connection: Connection, record: MeterRecord) -> bool:
        """Notify one record (damaged when a hook says so); False when the link was dropped."""
        data = record.measurement.build()
        if record.seq in self.damaged:
            data = data[:-1]
        elif self._corrupt.get(record.seq, 0) > 0 or self._corrupt_next > 0:
            if self._corrupt.get(record.seq, 0) > 0:
                self._corrupt[record.seq] -= 1
            else:
                self._corrupt_next -= 1
            data = data[:-1]
        await self.device.notify_subscriber(connection, self.measurement, data)
        if record.context is not None:
            await self.device.notify_subscriber(connection, self.context, record.context.build())
        self.sent += 1
        if self._drop_after is not None and self.sent >= self._drop_after:
            self._drop_after = None
            await connection.disconnect()
            return False
        return True

    async def _report(
        self, connection: Connection, records: list[MeterRecord], open_ended: bool
    ) -> None:
        op = RacpOpCode.REPORT_STORED_RECORDS
        sent = 0
        self._reported = set()
        if self._in_flight and self.records:
            self._in_flight -= 1
            if not await self._send(connection, self.records[-1]):
                return
        while records:
            for record in records:
                self._reported.add(record.seq)
                if not await self._send(connection, record):
                    return
            sent += len(records)
            # a result taken while the report runs is part of it ("records >= n", "all")
            last = records[-1].seq
            records = [r for r in self.records if r.seq > last] if open_ended else []
        code = RacpResponseCode.SUCCESS if sent else RacpResponseCode.NO_RECORDS_FOUND
        delay = self.close_after_transfer
        self._closing = delay == 0
        self._synced.add(connection)
        await self._respond(connection, RacpResponse(op, code).build())
        if delay is not None:
            self._closer = self._spawn(self._close_later(connection, delay))

    async def _close_later(self, connection: Connection, delay: float) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(Exception):
            await connection.disconnect()
