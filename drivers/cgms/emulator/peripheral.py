"""The CGMS emulator's GATT server: a Bumble peripheral speaking CGMS from the `protocols` codecs.

Services: Device Information (0x180A: manufacturer, model, serial, firmware) and CGMS (0x181F:
Measurement notify, Feature / Status / Session Start Time / Session Run Time read, RACP and SOCP
write + indicate). Behaviour a collector meets on real sensors:

* values carry the E2E-CRC when the sensor has it; a SOCP write without it is refused with ATT
  error 0x80 (missing CRC), with a wrong one 0x81 (invalid CRC); a Session Start Time write is
  checked the same way and otherwise ignored (the sensor keeps its own start);
* a control point write without indications enabled is refused with 0xFD (CCCD improperly
  configured); a second RACP request while a report runs with 0xFE (procedure in progress);
  a bad request gets its RACP / SOCP response code (`ControlPointError.response_code`);
* with `bonding` every CGMS value needs an encrypted link (ATT 0x0F until the collector pairs)
  and no record is notified on an unencrypted one; with `refuse_bonding` every pairing request
  is refused (SMP "pairing not supported");
* records go out packed, up to `pack` per notification and never over ATT_MTU - 3; new records
  are notified live to subscribed links, except while that link's RACP report runs: the report
  includes every record stored while it runs, then live notifications resume.

Test hooks: `drop_link()`, `drop_after(n)` (disconnect after n more records went out, live or
in a report), `drop_in_report(n)` (the same, counted from the start of the next RACP report),
`corrupt_next(n)` (the next n notifications carry a damaged first record: a flipped bit under
the E2E-CRC, else a broken Size byte), `disorder_next(n)` (n times, two new live records go out
newest first and the older one twice), `in_flight_next(n)` (the next n RACP reports begin
with the newest record, as a live notification the sensor had queued when it read the
request), `restart_session(age, replay)` (also a memory reset: offsets start again),
`stop_session()`, `wait_idle()`; the sensor's own: `sensor.damage(...)` (records that stay
damaged in memory), `sensor.clock_skew` / `sensor.reset_clock()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from typing import Any

from bumble.core import AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.profiles.device_information_service import DeviceInformationService

from drivers.cgms.emulator.control import ControlPoints, Link
from drivers.cgms.emulator.sensor import CgmsSensor
from gatewayd.plugin.emulation import refuse_pairing
from protocols.cgms.uuids import (
    CGM_FEATURE,
    CGM_MEASUREMENT,
    CGM_SESSION_RUN_TIME,
    CGM_SESSION_START_TIME,
    CGM_SPECIFIC_OPS_CONTROL_POINT,
    CGM_STATUS,
    CGMS_SERVICE,
)
from protocols.gatt.racp import RECORD_ACCESS_CONTROL_POINT

__all__ = ["CgmsPeripheral"]

P = Characteristic.Properties
#: Shortest wait of the record producer (guards against a float boundary spinning it).
_MIN_WAIT = 0.001


class CgmsPeripheral(ControlPoints):
    """The emulated sensor `sensor` served on the Bumble `device`."""

    def __init__(
        self,
        device: Device,
        sensor: CgmsSensor,
        *,
        name: str = "CGMS Emulator",
        manufacturer: str = "gatewayd",
        firmware: str = "emu-1.0",
    ) -> None:
        self.device, self.sensor, self.name = device, sensor, name
        self.sent = 0  #: records notified so far
        self._links: dict[Connection, Link] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._drop_after: int | None = None
        self._drop_in_report: int | None = None
        self._disorder = 0
        self._in_flight = 0
        self._away = 0.0
        self._corrupt = 0
        read = "READABLE,READ_REQUIRES_ENCRYPTION" if sensor.config.bonding else "READABLE"
        write = "WRITEABLE,WRITE_REQUIRES_ENCRYPTION" if sensor.config.bonding else "WRITEABLE"

        def value(uuid: str, builder: Any) -> Characteristic[bytes]:
            return Characteristic(uuid, P.READ, read, CharacteristicValue(read=builder))

        s = sensor
        self.measurement: Characteristic[bytes] = Characteristic(
            CGM_MEASUREMENT, P.NOTIFY, "READABLE", b""
        )
        self.racp: Characteristic[bytes] = Characteristic(
            RECORD_ACCESS_CONTROL_POINT, P.WRITE | P.INDICATE, write,
            CharacteristicValue(write=self._on_racp),
        )  # fmt: skip
        self.socp: Characteristic[bytes] = Characteristic(
            CGM_SPECIFIC_OPS_CONTROL_POINT, P.WRITE | P.INDICATE, write,
            CharacteristicValue(write=self._on_socp),
        )  # fmt: skip
        start_time: Characteristic[bytes] = Characteristic(
            CGM_SESSION_START_TIME, P.READ | P.WRITE, f"{read},{write}",
            CharacteristicValue(read=lambda _c: s.session_start_time().build(), write=self._on_sst),
        )  # fmt: skip
        service = Service(
            CGMS_SERVICE,
            [
                self.measurement,
                value(CGM_FEATURE, lambda _c: s.feature().build()),
                value(CGM_STATUS, lambda _c: s.status().build()),
                start_time,
                value(CGM_SESSION_RUN_TIME, lambda _c: s.run_time().build()),
                self.racp,
                self.socp,
            ],
        )
        info = DeviceInformationService(
            manufacturer_name=manufacturer,
            model_number="CGMS Emulator",
            serial_number=s.config.serial,
            firmware_revision=firmware,
        )
        device.add_services([info, service])
        if sensor.config.refuse_bonding:
            refuse_pairing(device)
        device.on(Device.EVENT_CONNECTION, self._on_connection)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Advertise and start making records."""
        await self._advertise()
        self._spawn(self._produce())

    async def _advertise(self, delay: float = 0.0) -> None:
        """Advertise (20 ms, name + 0x181F) after `delay` s (out of range until then)."""
        await asyncio.sleep(delay)
        ad = AdvertisingData
        data = ad(
            [
                (ad.FLAGS, bytes((0x06,))),
                (ad.COMPLETE_LOCAL_NAME, self.name.encode()),
                (ad.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, b"\x1f\x18"),
            ]
        )
        with contextlib.suppress(Exception):  # powered off meanwhile: nothing to advertise
            await self.device.start_advertising(
                advertising_data=bytes(data),
                advertising_interval_min=20,
                advertising_interval_max=20,
            )

    async def close(self) -> None:
        """Stop every task of the emulator (the caller powers the device off)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- test hooks ------------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Links currently up."""
        return len(self._links)

    async def drop_link(self, away: float = 0.0) -> None:
        """Disconnect every link; the sensor stays out of range (not advertising) `away` s."""
        self._away = away
        for connection in list(self.device.connections.values()):
            with contextlib.suppress(Exception):  # already going away
                await connection.disconnect()

    def drop_link_soon(self, away: float = 0.0) -> None:
        """`drop_link(away)` from synchronous code (a signal handler)."""
        self._spawn(self.drop_link(away))

    def drop_after(self, records: int) -> None:
        """Drop the link once `records` more records went out (0: at the next one)."""
        self._drop_after = max(records, 1)

    def drop_in_report(self, records: int) -> None:
        """Drop the link once `records` records of the next RACP report went out."""
        self._drop_in_report = records

    def in_flight_next(self, reports: int = 1) -> None:
        """The next `reports` RACP reports begin with the newest record: a live notification
        the sensor had queued when it read the request, so it comes before the report's oldest
        records (as it does on a real link when a record is made just then)."""
        self._in_flight += reports

    def _report_begins(self) -> Sequence[int]:
        if self._drop_in_report is not None:
            self.drop_after(self._drop_in_report)
            self._drop_in_report = None
        newest = self.sensor.newest()
        if not self._in_flight or newest is None:
            return ()
        self._in_flight -= 1
        return (newest,)

    def disorder_next(self, pairs: int = 1) -> None:
        """`pairs` times, hold a new live record back until the next one, then send the newer
        first and the older one twice (duplicated and out of order, as a flaky sensor does)."""
        self._disorder += pairs

    def corrupt_next(self, notifications: int = 1) -> None:
        """Damage the first record of the next `notifications` measurement notifications."""
        self._corrupt += notifications

    def restart_session(self, age: float | None = None, replay: float | None = None) -> None:
        """A new sensor session (see `CgmsSensor.restart`)."""
        self.sensor.restart(age, replay)
        for link in self._links.values():
            link.cursor = -1
        self._wake.set()

    def stop_session(self) -> None:
        """Stop the session (no new records; the status says "session stopped")."""
        self.sensor.stop()

    async def wait_idle(self) -> None:
        """Return once no link is up."""
        await self._idle.wait()

    # -- links -----------------------------------------------------------------------------------

    def _on_connection(self, connection: Connection) -> None:
        newest = self.sensor.newest()
        link = self._links[connection] = Link(connection, -1 if newest is None else newest)
        self._idle.clear()

        def on_disconnection(_reason: int) -> None:
            self._spawn(self._advertise(self._away))
            self._away = 0.0
            link.up = False
            if link.report is not None:
                link.report.cancel()
            self._links.pop(connection, None)
            if not self._links:
                self._idle.set()

        connection.on(connection.EVENT_DISCONNECTION, on_disconnection)

    def _subscribed(self, connection: Connection, characteristic: Characteristic[bytes]) -> int:
        cccd = self.device.gatt_server.subscribers.get(connection, {}).get(characteristic.handle)
        return cccd[0] if cccd else 0

    def _may_notify(self, link: Link) -> bool:
        secure = link.connection.is_encrypted or not self.sensor.config.bonding
        return secure and bool(self._subscribed(link.connection, self.measurement) & 1)

    async def _produce(self) -> None:
        """Notify new records to every link as the record clock makes them."""
        while True:
            self._wake.clear()
            newest = self.sensor.newest()
            for link in list(self._links.values()):
                if newest is None or link.report is not None or newest <= link.cursor:
                    continue
                if not self._may_notify(link):
                    link.cursor = newest  # a real sensor keeps them for RACP only
                    continue
                offsets: Sequence[int] = self.sensor.offsets(link.cursor + 1, newest)
                if self._disorder:
                    if len(offsets) < 2:
                        continue  # the older one waits for the next
                    self._disorder -= 1
                    offsets = [offsets[1], offsets[0], offsets[0], *offsets[2:]]
                if sent := await self._notify(link, offsets, live=True):
                    link.cursor = max(link.cursor, *offsets[:sent])
            delay = self.sensor.due_in()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if delay is None else max(delay, _MIN_WAIT)):
                    await self._wake.wait()

    async def _notify(self, link: Link, offsets: Sequence[int], *, live: bool = False) -> int:
        """Send the records at `offsets`, packed; how many went (fewer: link gone / report)."""
        pack = self.sensor.config.pack
        room = link.connection.att_mtu - 3
        sent, batch = 0, list[bytes]()
        for offset in [*offsets, None]:
            record = None if offset is None else self.sensor.stored(offset)
            full = len(batch) == pack or (record and sum(map(len, batch)) + len(record) > room)
            if batch and (record is None or full):
                if (live and link.report is not None) or not await self._send(link, batch):
                    return sent
                sent, batch = sent + len(batch), []
            if record is not None:
                batch.append(record)
        return sent

    async def _send(self, link: Link, records: list[bytes]) -> bool:
        if not link.up:
            return False
        if self._corrupt:
            self._corrupt -= 1
            first = bytearray(records[0])
            if self.sensor.config.e2e_crc:
                first[2] ^= 0x01  # the CRC no longer matches
            else:
                first[0] = 0xFF  # a Size byte past the end: the framing breaks
            records = [bytes(first), *records[1:]]
        await self.device.notify_subscriber(link.connection, self.measurement, b"".join(records))
        self.sent += len(records)
        if self._drop_after is not None:
            self._drop_after -= len(records)
            if self._drop_after <= 0:
                self._drop_after = None
                link.up = False
                self._spawn(self.drop_link())
                return False
        await asyncio.sleep(0)  # let the link carry it before the next one
        return True

    async def _indicate(
        self, link: Link, characteristic: Characteristic[bytes], data: bytes
    ) -> None:
        with contextlib.suppress(Exception):  # the link may go while it waits for the confirmation
            await self.device.indicate_subscriber(link.connection, characteristic, data)
