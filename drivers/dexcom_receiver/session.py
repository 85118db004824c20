"""The receiver's driver session: identify the receiver, backfill, then poll the newest pages.

Identity: ReadFirmwareHeader (ProductName, FirmwareVersion) and the MANUFACTURING_DATA record
(SerialNumber), as openaps/dexcom_reader reads them. ReadDatabasePartitionInfo is not needed:
EGV record sizes are recognised from the pages themselves.

Ids: `seq` is the record's `system_time` (receiver seconds since 2009-01-01, its UTC clock)
and `session` is the constant "egv": the receiver's EGV database is one series keyed by its own
clock, the key DexcTrack and Nightscout uploaders dedupe on. A record is the same reading on
every poll, reconnect and restart, whatever page it sits on (a record index would shift when
the database is erased or wraps). Sensor changes are not split into sessions (INSERTION_TIME
records are not read). `time` is the system_time as UTC.

Each poll: ReadSystemTime, ReadDatabasePageRange(EGV), then EGV pages from the newest back
until a page starts at or before the cursor (the newest record already delivered). The cursor
starts at the store's resume point (same receiver serial) or, on first contact, at
`backfill_hours` before the receiver's clock. Records of the first poll of a session are
`backfilled`. Status values (< 13) are skipped with an `egv_status` log event (counted in
`statuses`); display-only records carry the status flag "display_only", noise above 1
"noise_<n>".
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Self

from drivers.dexcom_receiver.api import ReceiverApi
from drivers.dexcom_receiver.link import ReceiverLink, UnreadableAnswer, find_receiver
from drivers.dexcom_receiver.options import ReceiverOptions
from gatewayd.driver import DeviceContext
from gatewayd.errors import DeviceRefused
from gatewayd.models import DeviceIdentity, Direction, Reading
from protocols import dexcom_receiver as dx
from protocols.errors import ProtocolError

DRIVER = "dexcom_receiver"
#: The session of every reading (see the module docstring).
SESSION = "egv"
#: A receiver clock further than this from the hub's is logged (seconds).
_SKEW_WARNING = 300

TREND_DIRECTION: dict[int, Direction] = {
    dx.TrendArrow.NONE: Direction.NONE,
    dx.TrendArrow.DOUBLE_UP: Direction.DOUBLE_UP,
    dx.TrendArrow.SINGLE_UP: Direction.SINGLE_UP,
    dx.TrendArrow.FORTY_FIVE_UP: Direction.FORTY_FIVE_UP,
    dx.TrendArrow.FLAT: Direction.FLAT,
    dx.TrendArrow.FORTY_FIVE_DOWN: Direction.FORTY_FIVE_DOWN,
    dx.TrendArrow.SINGLE_DOWN: Direction.SINGLE_DOWN,
    dx.TrendArrow.DOUBLE_DOWN: Direction.DOUBLE_DOWN,
    dx.TrendArrow.NOT_COMPUTABLE: Direction.NOT_COMPUTABLE,
    dx.TrendArrow.RATE_OUT_OF_RANGE: Direction.RATE_OUT_OF_RANGE,
}


class ReceiverSession:
    """One connection to one receiver."""

    def __init__(
        self,
        ctx: DeviceContext[ReceiverOptions],
        *,
        find: Callable[[], str] = find_receiver,
    ) -> None:
        self.identity: DeviceIdentity | None = None
        #: Status values seen (sensor_not_active, ...), by name.
        self.statuses: Counter[str] = Counter()
        self._ctx = ctx
        self._find = find
        self._link: ReceiverLink | None = None
        self._api: ReceiverApi | None = None
        self._skew_logged = False
        self._bad_seen: set[bytes] = set()

    async def __aenter__(self) -> Self:
        ctx, opts = self._ctx, self._ctx.options
        path = opts.path if opts.path is not None else await asyncio.to_thread(self._find)
        link = await ReceiverLink.open(
            path,
            reply_timeout=opts.timeout,
            drop=ctx.drop_packet,
            log=ctx.log,
            device=ctx.device_id,
        )
        try:
            api = ReceiverApi(link)
            self.identity = await self._identify(api)
        except BaseException:
            await link.close()
            raise
        self._link, self._api = link, api
        ctx.log.info("receiver_opened", path=path, model=self.identity.model)
        return self

    async def _identify(self, api: ReceiverApi) -> DeviceIdentity:
        """PING, then who the receiver is: `DeviceRefused` when it cannot say."""
        device = self._ctx.device_id
        await api.ping()
        try:
            firmware = await api.firmware_header()
            manufacturing = await api.manufacturing_data()
        except ProtocolError as exc:
            raise DeviceRefused(f"not a readable receiver: {exc}", device=device) from exc
        serial = manufacturing.attributes.get("SerialNumber")
        if not serial:
            raise DeviceRefused("the receiver reports no SerialNumber", device=device)
        return DeviceIdentity(
            manufacturer="Dexcom",
            model=firmware.get("ProductName") or "Dexcom receiver",
            serial=serial,
            firmware=firmware.get("FirmwareVersion"),
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._link is not None:
            await self._link.close()
        self._link = self._api = None

    async def readings(self) -> AsyncIterator[Reading]:
        """Backfill after the resume point (or the window), then poll until the link drops."""
        if self._api is None or self.identity is None:
            raise RuntimeError("readings() outside `async with`")
        api, ctx, opts = self._api, self._ctx, self._ctx.options
        resume = ctx.resume
        cursor: int | None = None
        if resume is not None and (resume.serial, resume.session) == (
            self.identity.serial,
            SESSION,
        ):
            cursor = resume.seq
        catching_up = True
        while True:
            now = await api.system_time()
            self._check_clock(now)
            if cursor is not None and cursor > now:
                # The store is ahead of the receiver's clock (clock reset, database erased):
                # waiting for the clock to catch up would hide every new record.
                ctx.log.warning("resume_ahead_of_receiver", resume=cursor, receiver=now)
                cursor = None
            if cursor is None:  # first contact: as far back as the window reaches
                cursor = now - round(opts.backfill_hours * 3600)
            count = 0
            for record in await self._records_after(cursor):
                cursor = max(cursor, record.system_time)
                reading = self._reading(record, backfilled=catching_up)
                if reading is not None:
                    count += 1
                    yield reading
            if catching_up:
                ctx.log.info("backfill_done", count=count, until=dx.receiver_time(cursor))
                catching_up = False
            await asyncio.sleep(opts.poll_interval)

    def _check_clock(self, now: int) -> None:
        skew = (dx.receiver_time(now) - self._ctx.now()).total_seconds()
        if abs(skew) > _SKEW_WARNING and not self._skew_logged:
            self._ctx.log.warning("receiver_clock_skew", seconds=round(skew))
            self._skew_logged = True

    async def _records_after(self, cursor: int) -> list[dx.EgvRecord]:
        """EGV records newer than `cursor`, oldest first, read from the newest page back."""
        assert self._api is not None  # noqa: S101 - readings() checked it
        pages = await self._api.page_range(dx.RecordType.EGV_DATA)
        if pages is None:
            return []
        first, last = pages
        found: list[dx.EgvRecord] = []
        for number in range(last, first - 1, -1):
            try:
                page = await self._api.egv_page(number)
            except UnreadableAnswer as exc:
                log = self._ctx.log
                log.error("egv_page_unreadable", page=number, reason=str(exc))  # noqa: TRY400
                continue
            self._report_bad(page.bad)
            found.extend(page.records)
            if page.records and page.records[0].system_time <= cursor:
                break
        return _newer(found, cursor)

    def _report_bad(self, bad: Iterable[bytes]) -> None:
        for raw in bad:
            if raw not in self._bad_seen:  # a bad record in flash stays bad: report it once
                self._bad_seen.add(raw)
                self._ctx.drop_packet(raw, "egv_record_crc")

    def _reading(self, record: dx.EgvRecord, *, backfilled: bool) -> Reading | None:
        assert self.identity is not None  # noqa: S101 - readings() checked it
        time = dx.receiver_time(record.system_time)
        if (status := record.special) is not None:
            self.statuses[status] += 1
            self._ctx.log.info("egv_status", status=status, time=time, seq=record.system_time)
            return None
        flags = ["display_only"] if record.display_only else []
        if record.noise > 1:
            flags.append(f"noise_{record.noise}")
        return Reading(
            device=self._ctx.device_id,
            driver=DRIVER,
            serial=self.identity.serial,
            session=SESSION,
            seq=record.system_time,
            time=time,
            received=self._ctx.now(),
            glucose_mgdl=record.glucose_mgdl,
            out_of_range=record.out_of_range,
            direction=TREND_DIRECTION.get(record.trend, Direction.NONE),
            status=tuple(flags),
            backfilled=backfilled,
        )


def _newer(records: Iterable[dx.EgvRecord], cursor: int) -> list[dx.EgvRecord]:
    """Records after `cursor`, oldest first, one per system_time (the first one read)."""
    by_time: dict[int, dx.EgvRecord] = {}
    for record in records:
        if record.system_time > cursor:
            by_time.setdefault(record.system_time, record)
    return [by_time[t] for t in sorted(by_time)]
