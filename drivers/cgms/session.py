"""The CGMS driver's session: one connection to one sensor, backfill first, then live records.

Per connection (CGMP, protocols.md §1.10): find the sensor (service 0x181F advertised, or the
configured `address` / `name`) within `scan_timeout`, connect (`establish`: BlueZ or the hub's
Bumble stack per `[ble]`), bond when the sensor answers "insufficient authentication /
encryption" (`bond = "auto"`; "always" pairs on connect; "never" parks a sensor that insists:
`DeviceRefused`), read Device Information (the serial keys the reading ids), enable
notifications on CGM Measurement and indications on RACP and SOCP, then run
`protocols.cgms_session.CgmsCollector`: Feature (E2E-CRC), Session Start Time, Status, Run Time,
SOCP "start the session" (`start_session`, when stopped), SOCP communication interval (unless
`interval` is set), a RACP report from the offset after the newest stored reading of this sensor
session (everything when the sensor or its session is new), then live records, with a RACP range
backfill of every gap and a full one after a session change. `drivers.cgms.flow.RecordFlow`
decides when a record may go to the store (always a gap-free prefix, so a link drop at any
moment loses nothing). Every collector input is stamped with the hub's clock (`ctx.now()`).

Ends with `LinkLost` when the link drops (or a report stops answering); damaged records are
fetched again from the sensor's memory, then passed over (`ctx.record_damaged`, in the flow).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Final, Self, TypeVar

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError, BleakGATTProtocolError

from drivers._ble_common import (
    LOST,
    SECURITY_ERRORS,
    BleSessionBase,
    disconnect,
    find_device,
    gatt_text,
)
from drivers.cgms.convert import parse_session_key, to_reading
from drivers.cgms.flow import RecordFlow
from drivers.cgms.options import DEFAULT_INTERVAL, CgmsOptions
from gatewayd.driver import DeviceContext
from gatewayd.errors import DeviceRefused, LinkLost
from gatewayd.models import DeviceIdentity, Reading
from gatewayd.transport.ble import BleConfig, establish
from protocols.cgms import (
    CGM_MEASUREMENT,
    CGM_SPECIFIC_OPS_CONTROL_POINT,
    CGMS_SERVICE,
    RECORD_ACCESS_CONTROL_POINT,
)
from protocols.cgms_session import (
    BackfillComplete,
    CgmsCollector,
    CgmsEvent,
    GapDetected,
    Measurement,
    ProcedureFailed,
    Ready,
    SessionChanged,
    SessionStopped,
)
from protocols.gatt import (
    FIRMWARE_REVISION,
    MANUFACTURER_NAME,
    MODEL_NUMBER,
    SERIAL_NUMBER,
    Request,
    RequestKind,
)

__all__ = ["CgmsSession"]

T = TypeVar("T")

#: Seconds one GATT operation, or the silence while a control point response (or the rest of
#: a RACP report) is due, may take.
RESPONSE_TIMEOUT: Final = 10.0
#: Seconds a bonding may take (the sensor may show a prompt).
PAIRING_TIMEOUT: Final = 30.0
_SUBSCRIBED: Final = (CGM_MEASUREMENT, RECORD_ACCESS_CONTROL_POINT, CGM_SPECIFIC_OPS_CONTROL_POINT)


class CgmsSession(BleSessionBase):
    """One connection to one CGMS sensor (see the module docstring)."""

    def __init__(self, ctx: DeviceContext[CgmsOptions]) -> None:
        super().__init__()
        self.identity: DeviceIdentity | None = None
        self._ctx = ctx
        self._options = ctx.options
        self._log = ctx.log
        self._paired = False
        self._address = ""

    # -- connection ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        cfg = self._ctx.ble or BleConfig()
        device = await self._find(cfg)
        self._address = device.address
        self._client = await establish(
            device,
            cfg,
            name=device.name,
            disconnected_callback=self._on_disconnect,
            pair=self._options.bond == "always",
        )
        self._paired = self._options.bond == "always"
        try:
            self.identity = await self._identity(device)
        except BaseException:
            await self._close()
            raise
        self._log.info(
            "cgms_connected",
            address=device.address,
            serial=self.identity.serial,
            model=self.identity.model,
        )
        return self

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:  # also when the link already reports itself gone
            await disconnect(client)

    def _matches(self, device: BLEDevice, adv: AdvertisementData) -> bool:
        opts = self._options
        if opts.address is not None:
            return device.address.upper() == opts.address
        if opts.name is not None:
            return (adv.local_name or device.name or "").startswith(opts.name)
        return CGMS_SERVICE in (uuid.lower() for uuid in adv.service_uuids)

    async def _find(self, cfg: BleConfig) -> BLEDevice:
        opts = self._options
        return await find_device(
            self._matches,
            cfg,
            timeout=opts.scan_timeout,
            wanted=opts.address or opts.name or "a CGMS (0x181F) sensor",
            device_id=self._ctx.device_id,
        )

    async def _gatt(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """Run one GATT operation; bond and retry once when the sensor asks for it."""
        try:
            return await self._bounded(operation, what)
        except BleakGATTProtocolError as exc:
            if exc.code not in SECURITY_ERRORS:
                raise
            if self._options.bond == "never":
                raise DeviceRefused(
                    f"{what}: the sensor requires bonding (ATT 0x{exc.code:02x}) and bond = never",
                    device=self._ctx.device_id,
                ) from exc
            if self._paired:
                raise DeviceRefused(
                    f"{what}: refused (ATT 0x{exc.code:02x}) although bonded",
                    device=self._ctx.device_id,
                ) from exc
            await self._pair()
            return await self._bounded(operation, what)
        except BleakError as exc:
            raise self._lost(what, exc) from exc

    async def _bounded(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        try:
            async with asyncio.timeout(RESPONSE_TIMEOUT):
                return await operation()
        except TimeoutError as exc:
            raise LinkLost(
                f"{what}: no answer within {RESPONSE_TIMEOUT:g} s", device=self._ctx.device_id
            ) from exc

    async def _pair(self) -> None:
        client = self._require()
        self._log.info("cgms_bonding", address=self._address)
        try:
            async with asyncio.timeout(PAIRING_TIMEOUT):
                await client.pair()
        except TimeoutError as exc:
            raise LinkLost(
                f"bonding: no answer within {PAIRING_TIMEOUT:g} s", device=self._ctx.device_id
            ) from exc
        except BleakError as exc:
            if not client.is_connected:
                raise self._lost("bonding", exc) from exc
            raise DeviceRefused(f"bonding refused: {exc}", device=self._ctx.device_id) from exc
        self._paired = True

    def _lost(self, what: str, exc: BaseException) -> LinkLost:
        return LinkLost(f"{what}: {exc}", device=self._ctx.device_id)

    async def _identity(self, device: BLEDevice) -> DeviceIdentity:
        client = self._require()
        found: dict[str, str] = {}
        for uuid in (MANUFACTURER_NAME, MODEL_NUMBER, SERIAL_NUMBER, FIRMWARE_REVISION):
            if client.services.get_characteristic(uuid) is None:
                continue
            try:
                value = await self._gatt(partial(client.read_gatt_char, uuid), "device info")
            except BleakGATTProtocolError:
                continue  # optional: a sensor may refuse one
            if text := gatt_text(value):
                found[uuid] = text
        return DeviceIdentity(
            manufacturer=found.get(MANUFACTURER_NAME, "unknown"),
            model=found.get(MODEL_NUMBER, device.name or "CGMS sensor"),
            serial=found.get(SERIAL_NUMBER, device.address),
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
        if result == "session_unknown":  # comes again once the session is settled
            self._log.debug("cgms_record_unplaced", offset=event.time_offset)
        else:
            self._ctx.drop_packet(event.record.build(self._options.status_octet_order), result)
        return None

    async def readings(self) -> AsyncIterator[Reading]:
        """Backfilled records (oldest first), then live ones; ends when the link drops."""
        client = self._require()
        assert self.identity is not None  # noqa: S101 - set by __aenter__
        collector, released = self._collector(self.identity.serial)
        flow = RecordFlow(collector, self._convert, self._ctx, released=released)
        for uuid in _SUBSCRIBED:
            subscribe = partial(client.start_notify, uuid, self._forward(uuid))
            await self._gatt(subscribe, f"subscribe {uuid}")
        pending: Request | None = None  # a write whose indication is due
        while True:
            if flow.failure is not None:
                raise LinkLost(flow.failure, device=self._ctx.device_id)
            request = collector.next_request()
            if request is None:
                if pending is None:
                    flow.idle()
                while flow.ready:
                    yield flow.ready.popleft()
                item = await self._next(RESPONSE_TIMEOUT if pending is not None else None)
                if item is None:
                    self._log.warning("cgms_no_response", request=pending and pending.label)
                    pending = None
                    self._handle(collector, flow, collector.timeout())
                    continue
                uuid, data = item
                if pending is not None and uuid == pending.characteristic:
                    pending = None
                self._handle(collector, flow, collector.receive(uuid, data, now=self._ctx.now()))
                continue
            flow.sent(request)
            if await self._perform(collector, flow, request):
                pending = request
            while flow.ready:
                yield flow.ready.popleft()

    async def _perform(self, collector: CgmsCollector, flow: RecordFlow, request: Request) -> bool:
        """Do `request`; True when its answer is an indication still to come."""
        client, uuid = self._require(), request.characteristic
        try:
            if request.kind is RequestKind.READ:
                data = await self._gatt(lambda: client.read_gatt_char(uuid), request.label)
            else:
                await self._gatt(
                    lambda: client.write_gatt_char(uuid, request.data, response=True),
                    request.label,
                )
        except BleakGATTProtocolError as exc:  # refused: the collector skips the step
            self._log.warning("cgms_request_refused", request=request.label, att_error=exc.code)
            if request.awaits_response:
                self._handle(collector, flow, collector.timeout())
            return False
        if request.kind is RequestKind.READ:
            events = collector.receive(uuid, bytes(data), now=self._ctx.now())
            self._handle(collector, flow, events)
            return False
        return request.awaits_response

    def _forward(self, uuid: str) -> Callable[[object, bytearray], None]:
        def on_value(_characteristic: object, data: bytearray) -> None:
            self._queue.put_nowait((uuid, bytes(data)))

        return on_value

    async def _next(self, timeout: float | None) -> tuple[str, bytes] | None:  # noqa: ASYNC109
        """The next notification / indication; None after `timeout` s of silence."""
        try:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if item is LOST:
            raise LinkLost("the sensor dropped the link", device=self._ctx.device_id)
        assert isinstance(item, tuple)  # noqa: S101 - only _forward puts tuples
        return item

    def _handle(self, collector: CgmsCollector, flow: RecordFlow, events: list[CgmsEvent]) -> None:
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
                if collector.interval_min is None:  # neither configured, asked nor learnt
                    collector.interval_min = DEFAULT_INTERVAL
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
