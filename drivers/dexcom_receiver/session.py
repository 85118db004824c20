"""The receiver's driver session: identify the receiver, backfill, then poll the newest pages.

Identity: ReadFirmwareHeader (ProductName, FirmwareVersion) and the MANUFACTURING_DATA record
(SerialNumber), as openaps/dexcom_reader reads them. ReadDatabasePartitionInfo is not needed:
EGV record sizes are recognised from the pages themselves.

Ids and times (`drivers.dexcom_receiver.timeline`): `seq` is the record's `system_time`
(receiver seconds since 2009-01-01) and `session` is "egv" (after the receiver's clock went
back: "egv-" and the minute of its epoch by the hub's clock), the key DexcTrack and Nightscout
uploaders dedupe on; a record is the same reading on every poll, reconnect and restart. `time`
is anchored to the hub's clock: system_time minus the receiver clock's offset, measured on
every poll (`clock_offset_s` in the device status). Sensor changes are not split into sessions
(INSERTION_TIME records are not read).

Each poll: ReadSystemTime (the hub's clock read before and after), ReadDatabasePageRange(EGV),
then EGV pages from the newest back until a page holds the newest record already handled (by
its database position; on a new connection, the store's resume point or, on first contact,
`backfill_hours` before the hub's clock); when they hold new records, ReadSystemTime once more
before they are dated. A record the receiver stamped after its clock jumped during the poll
(after the first ReadSystemTime) is dated, and given its session, by the jump only the second
reading shows: without it, a record stamped an hour ahead was passed over as ahead of the
clock, and one stamped after the clock went back was dated an hour off.

Records of the first poll of a session are `backfilled`. Status values (< 13) are skipped with
an `egv_status` log event (counted in `statuses`); display-only records carry the status flag
"display_only", noise above 1 "noise_<n>".

Damaged memory: a page whose header CRC fails (or that fits no record layout) and a record
whose CRC fails are asked for again (`DeviceContext.record_damaged`, keys ("page", n) and
("page", n, index)); one still damaged after `DAMAGED_RETRIES` renewed reads is passed over
(`records_unreadable`) and the records before and after it are delivered as usual.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from datetime import timedelta
from types import TracebackType
from typing import Self

from drivers.dexcom_receiver.api import DamagedPage, ReceiverApi
from drivers.dexcom_receiver.link import ReceiverLink, find_receiver
from drivers.dexcom_receiver.options import ReceiverOptions
from drivers.dexcom_receiver.timeline import SESSION, Dated, Stored, Timeline, is_egv_session
from gatewayd.plugin import DeviceContext, DeviceIdentity, DeviceRefused, Direction, Reading
from protocols.dexcom_receiver.commands import receiver_time
from protocols.dexcom_receiver.frames import RecordType
from protocols.dexcom_receiver.records import EgvPage, TrendArrow
from protocols.errors import ProtocolError

__all__ = ["DRIVER", "SESSION", "TREND_DIRECTION", "ReceiverSession"]

DRIVER = "dexcom_receiver"
#: Readings delivered between two turns of the event loop (about a page).
_CHUNK = 40

TREND_DIRECTION: dict[int, Direction] = {
    TrendArrow.NONE: Direction.NONE,
    TrendArrow.DOUBLE_UP: Direction.DOUBLE_UP,
    TrendArrow.SINGLE_UP: Direction.SINGLE_UP,
    TrendArrow.FORTY_FIVE_UP: Direction.FORTY_FIVE_UP,
    TrendArrow.FLAT: Direction.FLAT,
    TrendArrow.FORTY_FIVE_DOWN: Direction.FORTY_FIVE_DOWN,
    TrendArrow.SINGLE_DOWN: Direction.SINGLE_DOWN,
    TrendArrow.DOUBLE_DOWN: Direction.DOUBLE_DOWN,
    TrendArrow.NOT_COMPUTABLE: Direction.NOT_COMPUTABLE,
    TrendArrow.RATE_OUT_OF_RANGE: Direction.RATE_OUT_OF_RANGE,
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
        #: Pages passed over on this connection (not asked for again).
        self._passed_pages: set[int] = set()
        #: Damaged records asked for again (forgotten once they arrive intact).
        self._suspect: set[Hashable] = set()
        self._unanchored = 0

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
        ctx, opts = self._ctx, self._ctx.options
        timeline = self._timeline()
        catching_up = True
        while True:
            await self._measure(timeline)
            count = 0
            for index, dated in enumerate(await self._new_records(timeline)):
                if index and not index % _CHUNK:
                    await asyncio.sleep(0)  # a long backfill does not hold the event loop
                reading = self._reading(dated, backfilled=catching_up)
                if reading is not None:
                    count += 1
                    yield reading
            if catching_up:
                ctx.log.info("backfill_done", count=count, session=timeline.session)
                catching_up = False
            await asyncio.sleep(opts.poll_interval)

    async def _measure(self, timeline: Timeline) -> None:
        """Read the receiver's clock (the hub's read around the request) into `timeline`."""
        assert self._api is not None  # noqa: S101 - readings() checked it
        ctx = self._ctx
        before = ctx.now()
        receiver_now = await self._api.system_time()
        jump = timeline.measure(receiver_now, before, ctx.now())
        ctx.set_clock_offset(timeline.offset)
        if jump is not None:
            ctx.log.warning(
                "receiver_clock_jump", seconds=round(jump.seconds), clock_offset_s=timeline.offset
            )

    def _timeline(self) -> Timeline:
        """Where delivery stands: the store's newest reading of this receiver, if any."""
        assert self.identity is not None  # noqa: S101 - readings() checked it
        ctx, resume = self._ctx, self._ctx.resume
        backfill = timedelta(hours=ctx.options.backfill_hours)
        if (
            resume is None
            or resume.serial != self.identity.serial
            or not is_egv_session(resume.session)
        ):
            return Timeline(offset=ctx.findings.clock_offset_s, backfill=backfill)
        # The offset the newest stored reading was dated with: a jump since is measured
        # against it, even across restarts.
        offset = (receiver_time(resume.seq) - resume.time).total_seconds()
        return Timeline(
            session=resume.session,
            newest=resume.seq,
            newest_time=resume.time,
            offset=offset,
            backfill=backfill,
        )

    async def _new_records(self, timeline: Timeline) -> list[Dated]:
        """The records not yet delivered, oldest (in the database) first, dated."""
        assert self._api is not None  # noqa: S101 - readings() checked it
        pages = await self._api.page_range(RecordType.EGV_DATA)
        if pages is None:
            return []
        read = await self._read_back(timeline, *pages)
        while True:
            records = sorted((s for p in read.values() for s in _stored(p)), key=_position)
            start = timeline.wanted(records)
            again = [n for n, page in read.items() if self._damaged_records(page, start)]
            if not again:
                break
            for number in again:  # read once more: a record damaged on the link comes back
                page = await self._page(number)
                if page is None:
                    del read[number]
                else:
                    read[number] = page
        self._recovered(read.values())
        if any(s.position >= start for s in records):
            # The clock again, after the pages: a record stamped after a jump of the clock
            # during this poll is then dated (and given its session) by that jump.
            await self._measure(timeline)
        placed = timeline.place(records, start)
        if timeline.unanchored > self._unanchored:
            self._ctx.log.warning(
                "egv_ahead_of_clock", count=timeline.unanchored - self._unanchored
            )
            self._unanchored = timeline.unanchored
        return placed

    async def _read_back(self, timeline: Timeline, first: int, last: int) -> dict[int, EgvPage]:
        """EGV pages from `last` back until one holds the newest record handled."""
        if timeline.erased(last, None):
            self._ctx.log.warning("receiver_database_erased", page=last)
        read: dict[int, EgvPage] = {}
        for number in range(last, first - 1, -1):
            if timeline.page is not None and number < timeline.page:
                break
            page = await self._page(number)
            if page is None:
                continue
            read[number] = page
            stored = _stored(page)
            if number == last and stored and timeline.erased(last, stored[-1].position):
                self._ctx.log.warning("receiver_database_erased", page=last)
            if timeline.reaches(stored):
                break
        return read

    async def _page(self, number: int) -> EgvPage | None:
        """EGV page `number`, asked for again while it arrives damaged; None once it is passed
        over (then not asked for again on this connection)."""
        assert self._api is not None  # noqa: S101 - readings() checked it
        key: Hashable = ("page", number)
        while number not in self._passed_pages:
            page = await self._api.egv_page(number)
            if not isinstance(page, DamagedPage):
                self._ctx.record_recovered(key)
                return page
            position = f"EGV page {number}"
            if not self._ctx.record_damaged(key, page.raw, position=position, reason=page.reason):
                self._passed_pages.add(number)
        return None

    def _damaged_records(self, page: EgvPage, start: int) -> bool:
        """Report the damaged records of `page` at or after `start`: whether to read it again."""
        again = False
        number, first = page.header.page, page.header.first_index
        for index, raw in page.bad:
            if first + index < start:
                continue
            key = ("page", number, index)
            position = f"EGV page {number} record {index}"
            if self._ctx.record_damaged(key, raw, position=position, reason="egv_record_crc"):
                self._suspect.add(key)
                again = True
        return again

    def _recovered(self, pages: Iterable[EgvPage]) -> None:
        """Records that arrived damaged and then intact: forget their attempts."""
        for page in pages:
            for index in page.indices:
                key = ("page", page.header.page, index)
                if key in self._suspect:
                    self._suspect.discard(key)
                    self._ctx.record_recovered(key)

    def _reading(self, dated: Dated, *, backfilled: bool) -> Reading | None:
        assert self.identity is not None  # noqa: S101 - readings() checked it
        record = dated.stored.record
        if (status := record.special) is not None:
            self.statuses[status] += 1
            self._ctx.log.info("egv_status", status=status, time=dated.time, seq=record.system_time)
            return None
        flags = ["display_only"] if record.display_only else []
        if record.noise > 1:
            flags.append(f"noise_{record.noise}")
        received = self._ctx.now()
        return Reading(
            device=self._ctx.device_id,
            driver=DRIVER,
            serial=self.identity.serial,
            session=dated.session,
            seq=record.system_time,
            # A record stored while the pages were read is newer than the clock reading:
            # never dated after its receipt (the clock's whole seconds, a request's time).
            time=min(dated.time, received),
            received=received,
            glucose_mgdl=record.glucose_mgdl,
            out_of_range=record.out_of_range,
            direction=TREND_DIRECTION.get(record.trend, Direction.NONE),
            status=tuple(flags),
            backfilled=backfilled,
        )


def _stored(page: EgvPage) -> list[Stored]:
    """The intact records of `page` with their database positions."""
    first, number = page.header.first_index, page.header.page
    return [
        Stored(number, first + index, record)
        for index, record in zip(page.indices, page.records, strict=True)
    ]


def _position(stored: Stored) -> int:
    return stored.position
