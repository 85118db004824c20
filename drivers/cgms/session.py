"""The CGMS driver's session: one connection to one sensor, backfill first, then live records.

Per connection (CGMP, protocols.md §1.10): find the sensor (service 0x181F advertised, or the
configured `address` / `name`) within `scan_timeout`, connect (`establish`: BlueZ or the hub's
Bumble stack per `[ble]`), bond when the sensor answers "insufficient authentication /
encryption" (`bond = "auto"`; "always" pairs on connect; "never" parks a sensor that insists:
`DeviceRefused`), read Device Information (the serial keys the reading ids), enable
notifications on CGM Measurement and indications on RACP and SOCP, then run
`protocols.cgms.session.CgmsCollector`: Feature (E2E-CRC), Session Start Time, Status, Run Time,
SOCP "start the session" (`start_session`, when stopped), SOCP communication interval (unless
`interval` is set), a RACP report from the offset after the newest stored reading of this sensor
session (everything when the sensor or its session is new), then live records, with a RACP range
backfill of every gap and a full one after a session change. The release rule
(`protocols.cgms.release`, wired in by `drivers.cgms.flow.RecordFlow`) decides when a record
may go to the store (always a gap-free prefix, so a link drop at any moment loses nothing).
When the interval is neither configured, answered nor learnt by the end of the first backfill,
the collector assumes `DEFAULT_INTERVAL`. Every collector input is stamped with the hub's clock
(`ctx.now()`).

Ends with `LinkLost` when the link drops (or a report stops answering); damaged records are
fetched again from the sensor's memory, then passed over (`ctx.record_damaged`, judged by the
release rule).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final, Self

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from drivers.cgms.convert import parse_session_key, to_reading
from drivers.cgms.flow import RecordFlow
from drivers.cgms.options import DEFAULT_INTERVAL, CgmsOptions
from gatewayd.plugin import (
    AttError,
    BleConfig,
    CollectorLoop,
    DeviceContext,
    DeviceIdentity,
    GattLink,
    LinkLost,
    Reading,
    gatt_text,
)
from protocols.cgms.events import (
    BackfillComplete,
    CgmsEvent,
    GapDetected,
    Measurement,
    Ready,
    SessionChanged,
    SessionStopped,
)
from protocols.cgms.session import CgmsCollector
from protocols.cgms.uuids import CGM_MEASUREMENT, CGM_SPECIFIC_OPS_CONTROL_POINT, CGMS_SERVICE
from protocols.gatt.racp import RECORD_ACCESS_CONTROL_POINT
from protocols.gatt.session import ProcedureFailed
from protocols.gatt.uuids import FIRMWARE_REVISION, MANUFACTURER_NAME, MODEL_NUMBER, SERIAL_NUMBER

__all__ = ["CgmsSession"]

#: Seconds one GATT operation, or the silence while a control point response (or the rest of
#: a RACP report) is due, may take.
RESPONSE_TIMEOUT: Final = 10.0
#: Seconds a bonding may take (the sensor may show a prompt).
PAIRING_TIMEOUT: Final = 30.0
_SUBSCRIBED: Final = (CGM_MEASUREMENT, RECORD_ACCESS_CONTROL_POINT, CGM_SPECIFIC_OPS_CONTROL_POINT)


class CgmsSession:
    """One connection to one CGMS sensor (see the module docstring)."""

    def __init__(self, ctx: DeviceContext[CgmsOptions]) -> None:
        self.identity: DeviceIdentity | None = None
        self._ctx = ctx
        self._options = ctx.options
        self._log = ctx.log
        self._link = GattLink(
            ctx.device_id,
            bond=ctx.options.bond,
            noun="sensor",
            log=ctx.log,
            timeout=RESPONSE_TIMEOUT,
            pair_timeout=PAIRING_TIMEOUT,
        )

    # -- connection ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        opts = self._options
        await self._link.connect(
            self._ctx.ble or BleConfig(),
            self._matches,
            wanted=opts.address or opts.name or "a CGMS (0x181F) sensor",
            scan_timeout=opts.scan_timeout,
        )
        try:
            self.identity = await self._identity()
        except BaseException:
            await self._link.close()
            raise
        self._log.info(
            "cgms_connected",
            address=self._link.address,
            serial=self.identity.serial,
            model=self.identity.model,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._link.close()

    def _matches(self, device: BLEDevice, adv: AdvertisementData) -> bool:
        opts = self._options
        if opts.address is not None:
            return device.address.upper() == opts.address
        if opts.name is not None:
            return (adv.local_name or device.name or "").startswith(opts.name)
        return CGMS_SERVICE in (uuid.lower() for uuid in adv.service_uuids)

    async def _identity(self) -> DeviceIdentity:
        link = self._link
        found: dict[str, str] = {}
        for uuid in (MANUFACTURER_NAME, MODEL_NUMBER, SERIAL_NUMBER, FIRMWARE_REVISION):
            if not link.has_characteristic(uuid):
                continue
            try:
                value = await link.read(uuid, what="device info")
            except AttError:
                continue  # optional: a sensor may refuse one
            if text := gatt_text(value):
                found[uuid] = text
        name = link.device.name if link.device is not None else None
        return DeviceIdentity(
            manufacturer=found.get(MANUFACTURER_NAME, "unknown"),
            model=found.get(MODEL_NUMBER, name or "CGMS sensor"),
            serial=found.get(SERIAL_NUMBER, link.address),
            firmware=found.get(FIRMWARE_REVISION),
        )

    # -- the collector loop ----------------------------------------------------------------------

    def _collector(self, serial: str) -> tuple[CgmsCollector, tuple[str, int] | None]:
        """The procedure, resuming after the newest stored reading when it is this sensor's."""
        opts, resume = self._options, self._ctx.resume
        start = parse_session_key(resume.session) if resume is not None else None
        if resume is None or resume.serial != serial or start is None:
            if resume is not None:
                self._log.info("cgms_resume_other_sensor", serial=resume.serial)
            released = None
            start, after = None, None
        else:
            released = (resume.session, resume.seq)
            after = min(resume.seq + 1, 0xFFFF)
        collector = CgmsCollector(
            backfill_from=after,
            session_start=start,
            interval_min=opts.interval,
            start_session=opts.start_session,
            order=opts.status_octet_order,
            default_interval_min=DEFAULT_INTERVAL,
        )
        return collector, released

    def _convert(self, event: Measurement) -> Reading | None:
        assert self.identity is not None  # noqa: S101 - set by __aenter__
        result = to_reading(
            event,
            device=self._ctx.device_id,
            serial=self.identity.serial,
            received=self._ctx.now(),
        )
        if isinstance(result, Reading):
            return result
        if result.reason == "session_unknown":  # comes again once the session is settled
            self._log.debug("cgms_record_unplaced", offset=event.time_offset)
        else:
            record = event.record.build(self._options.status_octet_order)
            self._ctx.drop_packet(record, result.reason)
        return None

    async def readings(self) -> AsyncIterator[Reading]:
        """Backfilled records (oldest first), then live ones; ends when the link drops."""
        assert self.identity is not None  # noqa: S101 - set by __aenter__
        collector, released = self._collector(self.identity.serial)
        flow = RecordFlow(collector, self._convert, self._ctx, released=released)
        for uuid in _SUBSCRIBED:
            await self._link.subscribe(uuid)
        loop: CollectorLoop[CgmsEvent] = CollectorLoop(
            self._link,
            collector,
            lambda uuid, data: collector.receive(uuid, data, now=self._ctx.now()),
        )
        while True:
            if flow.failure is not None:
                raise LinkLost(flow.failure, device=self._ctx.device_id)
            events = await loop.perform_next()
            if events is None:
                if loop.awaiting is None:
                    flow.idle()
                while flow.ready:
                    yield flow.ready.popleft()
                events = await loop.wait()  # no idle timeout: a value, a timeout, or LinkLost
            self._handle(flow, events or [])
            while flow.ready:
                yield flow.ready.popleft()

    def _handle(self, flow: RecordFlow, events: list[CgmsEvent]) -> None:
        log = self._log
        for event in events:
            if isinstance(event, Ready):
                log.info(
                    "cgms_ready",
                    session_start=event.session_start,
                    interval_min=event.interval_min,
                    e2e_crc=event.feature.e2e_crc if event.feature else None,
                    status=event.status.time_offset if event.status else None,
                )
            elif isinstance(event, BackfillComplete):
                log.info("cgms_backfill_done", count=event.count, first=event.first_offset)
            elif isinstance(event, GapDetected):
                log.info("cgms_gap", expected=event.expected_offset, got=event.got_offset)
            elif isinstance(event, SessionChanged):
                log.info("cgms_session_changed", start=event.session_start, was=event.previous)
            elif isinstance(event, SessionStopped):
                log.warning("cgms_session_stopped", offset=event.time_offset)
            elif isinstance(event, ProcedureFailed):
                log.warning(
                    "cgms_procedure_failed",
                    request=event.request.label,
                    reason=event.reason,
                    code=event.code,
                    hex=event.data.hex(),
                )
        flow.events(events)
