"""An emulated Dexcom receiver on a pseudo-terminal, built from the same protocol codecs.

The driver opens it exactly as it opens /dev/ttyACM0: through `link`, a symlink to the current
pty slave (raw mode at once; the emulator keeps the slave open so a client closing the port
does not break the master). It answers PING, READ_FIRMWARE_HEADER, READ_DATABASE_PAGE_RANGE,
READ_DATABASE_PAGES (EGV_DATA and MANUFACTURING_DATA; other partitions are empty) and
READ_SYSTEM_TIME; anything else gets INVALID_COMMAND, a request failing its CRC a NAK [L].

`EgvDatabase` holds one EGV record every `interval` true seconds from `origin`, each a pure
function of the seed and its index (glucose and trend from `drivers.emulation.physiology`;
LOW as 39, HIGH as 401), laid out in 528-byte pages of 38 (G4, 13-byte records) or 20 (G6,
25-byte records). `set_value(index, raw)` overrides one record (status values, display-only).
`clock` is the true time: a `ManualClock` (tests advance it) or a `ReplayClock` (replays
`history` seconds at `speed`, then follows the wall clock). The receiver's own clock is the
true time plus its error (`clock_error`, from the start; `set_clock_error` and `reset_clock`
later): READ_SYSTEM_TIME answers it and each record is stamped with it as it was then, while
`database.true_time(index)` keeps when the record was really measured.

Test hooks, link: `corrupt_next(n)` (the next n answers carry a wrong CRC),
`inject_garbage(data)` (sent before the next answer), `hold_next(n)` (the next answer comes
late: after the next n answers, in front of the one after them), `stalled = True` (requests
are read, never answered), `unplug()` (the pty and the symlink disappear, as /dev/ttyACM0 does),
`replug()` (a new pty behind the same symlink), `unplug_after(pages)` (the cable is pulled in
the middle of a backfill). Memory (faults real receivers have): `set_clock_error`,
`reset_clock`, `erase()` (the database starts again), `database.duplicate(index)` and
`database.store_late(index, after)` (stored twice, stored out of order),
`database.damaged_pages` / `database.damaged_records` (a page header or record CRC that fails
on every read). `requests` counts the commands received.
"""

from __future__ import annotations

import asyncio
import os
import time
import tty
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

from drivers.dexcom_receiver.session import TREND_DIRECTION
from drivers.emulation.physiology import sample
from gatewayd.plugin import Direction
from protocols.dexcom_receiver.commands import (
    build_page_range,
    build_u32,
    parse_read_pages,
    receiver_seconds,
    receiver_time,
)
from protocols.dexcom_receiver.frames import (
    BadFrame,
    Command,
    Frame,
    FrameDecoder,
    Packet,
    RecordType,
)
from protocols.dexcom_receiver.records import (
    EGV_LAYOUTS,
    HEADER_SIZE,
    EgvRecord,
    PageHeader,
    TrendArrow,
    build_page,
    build_xml_record,
)
from protocols.errors import ProtocolError

Model = Literal["g4", "g6"]
_ARROW = {direction: code for code, direction in TREND_DIRECTION.items()}
#: Raw glucose values the receiver stores for LOW and HIGH [L].
LOW_VALUE = 39
HIGH_VALUE = 401


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What differs between emulated receiver generations."""

    record_size: int
    #: EGV page revision: > 4 means 25-byte records (protocols.md §3.4) [M]; G4's value [L].
    revision: int
    product_id: str
    product_name: str
    firmware: str


MODELS: dict[str, ModelSpec] = {
    "g4": ModelSpec(13, 2, "G4Receiver", "Dexcom G4 Receiver", "2.0.1.104"),
    "g6": ModelSpec(25, 5, "G6Receiver", "Dexcom G6 Receiver", "5.0.1.0"),
}


class ReceiverClock(Protocol):
    """The true time, in whole receiver seconds since 2009-01-01 (UTC): what a receiver clock
    that is right reads (the emulated receiver's own clock adds its error)."""

    def now(self) -> int: ...


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: int) -> None:
        self.seconds = start

    def now(self) -> int:
        return self.seconds

    def advance(self, seconds: int) -> None:
        self.seconds += seconds


class ReplayClock:
    """`history` seconds in the past at first, running `speed` times faster until it reaches
    the wall clock, then in real time (so no record is ever dated in the future)."""

    def __init__(
        self,
        *,
        history: float = 0.0,
        speed: float = 1.0,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = receiver_seconds(wall())
        self._history, self._speed, self._monotonic = history, speed, monotonic
        self._start = monotonic()

    def now(self) -> int:
        elapsed = self._monotonic() - self._start
        replay = self._wall - self._history + elapsed * self._speed
        return int(min(replay, self._wall + elapsed))


class EgvDatabase:
    """The receiver's EGV partition: a record every `interval` true seconds from `origin`.

    Record `index` is measured at true time `true_time(index)` and stamped with the receiver's
    clock as it was then (`time(index)`: the true time plus the clock's error, `clock_error`).
    Storage is the order the receiver wrote the records in: by index, from `base` (the first
    record after an `erase`), with records `duplicate`d or `stored_late` (out of order).
    """

    def __init__(
        self, spec: ModelSpec, *, seed: int, interval: int, origin: int, display_offset: int = 0
    ) -> None:
        self.spec = spec
        self.seed, self.interval, self.origin = seed, interval, origin
        self.display_offset = display_offset
        self.per_page = 500 // spec.record_size
        self.overrides: dict[int, tuple[int, int]] = {}
        #: (from true time, error): the receiver clock reads true time + error from then on.
        self.clock_steps: list[tuple[int, int]] = [(-(2**62), 0)]
        #: Index of the record at database position 0.
        self.base = 0
        #: Records stored again (or late) right after the record of the key, in this order.
        self.extras: dict[int, list[int]] = {}
        #: Records not stored at their own place (`store_late`).
        self.withheld: set[int] = set()
        #: Pages whose header CRC, and records whose CRC, are broken in memory.
        self.damaged_pages: set[int] = set()
        self.damaged_records: set[int] = set()
        self.record = lru_cache(maxsize=4096)(self._record)

    # -- clock -----------------------------------------------------------------------------------

    def clock_error(self, true: int) -> int:
        """The receiver clock's error at true time `true` (seconds)."""
        return max(step for step in self.clock_steps if step[0] <= true)[1]

    def set_clock_error(self, error: int, at: int) -> None:
        """From true time `at` on, the receiver clock reads the true time plus `error`."""
        self.clock_steps = [step for step in self.clock_steps if step[0] < at]
        self.clock_steps.append((at, error))
        self.record.cache_clear()

    def true_time(self, index: int) -> int:
        """True time (receiver seconds of a right clock) at which record `index` was measured."""
        return self.origin + index * self.interval

    def time(self, index: int) -> int:
        """System time of record `index`: what the receiver's clock read then."""
        true = self.true_time(index)
        return true + self.clock_error(true)

    def newest(self, now: int) -> int:
        """Index of the newest record measured by true time `now` (-1: none yet)."""
        return (now - self.origin) // self.interval if now >= self.origin else -1

    def _record(self, index: int) -> EgvRecord:
        t = self.time(index)
        if index in self.overrides:
            raw, trend_noise = self.overrides[index]
        else:
            s = sample(self.seed, 0, index, receiver_time(self.true_time(index)).timestamp())
            raw = s.glucose_mgdl or (LOW_VALUE if s.out_of_range == "low" else HIGH_VALUE)
            trend_noise = 1 << 4 | _ARROW[Direction.from_rate(s.trend_mgdl_min)]
        before, after = EGV_LAYOUTS[self.spec.record_size]
        return EgvRecord(t, t + self.display_offset, raw, trend_noise, bytes(before), bytes(after))

    def set_value(self, index: int, raw: int, trend: int = TrendArrow.FLAT, noise: int = 1) -> None:
        """Override record `index` with a raw glucose field (status value, display-only bit)."""
        self.overrides[index] = (raw, noise << 4 | trend)
        self.record.cache_clear()

    # -- storage ---------------------------------------------------------------------------------

    def erase(self, now: int) -> None:
        """The database is erased at true time `now`: storage starts again at the next record."""
        self.base = self.newest(now) + 1
        self.extras.clear()
        self.withheld.clear()

    def duplicate(self, index: int) -> None:
        """Record `index` is stored twice (the copy right after it)."""
        self.extras.setdefault(index, []).append(index)

    def store_late(self, index: int, after: int) -> None:
        """Record `index` is stored after record `after` (> index), out of order."""
        self.withheld.add(index)
        self.extras.setdefault(after, []).append(index)

    def _entries_before(self, index: int) -> int:
        """Database positions taken by the records stored before record `index`'s place."""
        count = index - self.base - sum(1 for w in self.withheld if self.base <= w < index)
        return count + sum(len(v) for k, v in self.extras.items() if self.base <= k < index)

    def _at(self, index: int) -> list[int]:
        return ([] if index in self.withheld else [index]) + self.extras.get(index, [])

    def stored(self, now: int) -> list[int]:
        """Indices of the records in the database at true time `now`, in storage order."""
        return self.indices(0, self.size(now), now)

    def size(self, now: int) -> int:
        """How many records the database holds at true time `now`."""
        return max(0, self._entries_before(self.newest(now) + 1))

    def indices(self, position: int, count: int, now: int) -> list[int]:
        """Indices of the records at database positions [position, position + count)."""
        low, high = self.base, self.newest(now) + 1
        while low < high:  # the last index whose place starts at or before `position`
            middle = (low + high + 1) // 2
            if self._entries_before(middle) <= position:
                low = middle
            else:
                high = middle - 1
        out: list[int] = []
        index, skip = low, position - self._entries_before(low)
        while len(out) < count + skip and index <= self.newest(now):
            out += self._at(index)
            index += 1
        return out[skip : skip + count]

    def page_range(self, now: int) -> tuple[int, int] | None:
        size = self.size(now)
        return None if size == 0 else (0, (size - 1) // self.per_page)

    def page(self, number: int, now: int) -> bytes | None:
        """Page `number` as the receiver sends it (None when it does not exist)."""
        pages = self.page_range(now)
        if pages is None or not pages[0] <= number <= pages[1]:
            return None
        first = number * self.per_page
        indices = self.indices(first, self.per_page, now)
        header = PageHeader(first, len(indices), RecordType.EGV_DATA, self.spec.revision, number)
        records = b"".join(self._stored_record(i) for i in indices)
        page = bytearray(build_page(header, records))
        if number in self.damaged_pages:
            page[HEADER_SIZE - 1] ^= 0xFF  # the header CRC
        return bytes(page)

    def _stored_record(self, index: int) -> bytes:
        raw = self.record(index).build()
        if index in self.damaged_records:
            return raw[:-1] + bytes([raw[-1] ^ 0xFF])
        return raw


class ReceiverEmulator:
    """A receiver behind `link` (a symlink to a pty slave); use as an async context manager."""

    def __init__(
        self,
        link: Path,
        *,
        clock: ReceiverClock,
        model: Model = "g4",
        seed: int = 1,
        interval: int = 300,
        origin: int | None = None,
        serial: str = "SM10000001",
        clock_error: int = 0,
    ) -> None:
        self.link = link
        self.clock = clock
        self.spec = MODELS[model]
        self.serial = serial
        start = clock.now() - 14 * 86400 if origin is None else origin
        self.database = EgvDatabase(self.spec, seed=seed, interval=interval, origin=start)
        if clock_error:
            self.database.set_clock_error(clock_error, start)
        self.requests: Counter[str] = Counter()
        self.stalled = False
        self.device: str | None = None
        self._corrupt = 0
        self._hold: int | None = None
        self._held: bytes | None = None
        self._overtaken = 0
        self._garbage = b""
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self._fds: tuple[int, int] | None = None
        self._unplug_after: int | None = None
        self._replug_after: float | None = None

    async def __aenter__(self) -> Self:
        self.replug()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unplug()

    # -- hooks -------------------------------------------------------------------------------------

    def corrupt_next(self, count: int = 1) -> None:
        """The next `count` answers go out with a wrong CRC."""
        self._corrupt += count

    def hold_next(self, overtaken: int = 1) -> None:
        """Hold the next answer back until `overtaken` later answers went out, then send it
        just before the answer after them: a late answer."""
        self._hold, self._overtaken = overtaken, overtaken

    def inject_garbage(self, data: bytes) -> None:
        """Send `data` before the next answer."""
        self._garbage += data

    @property
    def plugged(self) -> bool:
        """Whether the receiver is plugged in (its pty exists)."""
        return self._fds is not None

    def replug(self) -> None:
        """Plug in: a new pty, `link` pointing at its slave."""
        if self._fds is not None:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # a fresh pty is cooked: echo and CR/LF mapping corrupt binary frames
        os.set_blocking(master, False)
        self._fds = (master, slave)
        self.device = os.ttyname(slave)
        staged = self.link.with_name(self.link.name + ".new")
        staged.unlink(missing_ok=True)
        staged.symlink_to(self.device)
        staged.replace(self.link)
        asyncio.get_running_loop().add_reader(master, self._readable)

    def unplug(self) -> None:
        """Pull the cable: the pty closes (the client reads EIO) and `link` disappears."""
        if self._fds is None:
            return
        master, slave = self._fds
        loop = asyncio.get_running_loop()
        loop.remove_reader(master)
        loop.remove_writer(master)
        os.close(master)
        os.close(slave)
        self._fds = None
        self.link.unlink(missing_ok=True)
        self._out.clear()
        self._decoder.clear()

    # -- the receiver ----------------------------------------------------------------------------

    def system_time(self) -> int:
        """What the receiver's clock reads now (the true clock plus its error)."""
        true = self.clock.now()
        return true + self.database.clock_error(true)

    def set_clock_error(self, error: int) -> None:
        """The receiver's clock is moved just after now (a record stamped now keeps its stamp):
        from then on it reads the true time plus `error`."""
        self.database.set_clock_error(error, self.clock.now() + 1)

    def reset_clock(self) -> None:
        """The receiver's clock restarts at its epoch (2009-01-01) just after now."""
        self.set_clock_error(-(self.clock.now() + 1))

    def unplug_after(self, pages: int, *, replug_after: float | None = None) -> None:
        """Pull the cable when the `pages`-th EGV page from now is asked for (mid-backfill),
        and plug it back in `replug_after` seconds later (None: leave it out)."""
        self._unplug_after, self._replug_after = pages, replug_after

    def erase(self) -> None:
        """The EGV database is erased now (records start again at position 0)."""
        self.database.erase(self.clock.now())

    def answer(self, packet: Packet) -> Packet:  # noqa: PLR0911 - one per command
        """The receiver's answer to one request."""
        command, payload, now = packet.command, packet.payload, self.clock.now()
        if command == Command.PING:
            return Packet(Command.ACK)
        if command == Command.READ_FIRMWARE_HEADER:
            return Packet(Command.ACK, self._firmware_header().encode())
        if command == Command.READ_SYSTEM_TIME:
            return Packet(Command.ACK, build_u32(self.system_time()))
        if command == Command.READ_DATABASE_PAGE_RANGE:
            if len(payload) != 1:
                return Packet(Command.INVALID_PARAM)
            return Packet(Command.ACK, build_page_range(self._page_range(payload[0], now)))
        if command == Command.READ_DATABASE_PAGES:
            return self._pages(payload, now)
        return Packet(Command.INVALID_COMMAND)

    def _firmware_header(self) -> str:
        s = self.spec
        return (
            f"<FirmwareHeader SchemaVersion='1' ApiVersion='2.2.0.0' TestApiVersion='2.4.0.0' "
            f"ProductId='{s.product_id}' ProductName='{s.product_name}' SoftwareNumber='SW10050' "
            f"FirmwareVersion='{s.firmware}' PortVersion='4.6.4.45' RFVersion='1.0.0.27' "
            "DexBootVersion='3'/>"
        )

    def _manufacturing_page(self) -> bytes:
        origin = self.database.origin
        xml = (
            f'<ManufacturingParameters SerialNumber="{self.serial}" '
            'HardwarePartNumber="MD1060-MT20649" HardwareRevision="14" />'
        )
        header = PageHeader(0, 1, RecordType.MANUFACTURING_DATA, 1, 0)
        return build_page(header, build_xml_record(origin, origin, xml))

    def _page_range(self, record_type: int, now: int) -> tuple[int, int] | None:
        if record_type == RecordType.EGV_DATA:
            return self.database.page_range(now)
        return (0, 0) if record_type == RecordType.MANUFACTURING_DATA else None

    def _pages(self, payload: bytes, now: int) -> Packet:
        try:
            record_type, first, count = parse_read_pages(payload)
        except ProtocolError:
            return Packet(Command.INVALID_PARAM)
        pages: list[bytes | None] = []
        for number in range(first, first + count):
            if record_type == RecordType.EGV_DATA:
                pages.append(self.database.page(number, now))
            elif record_type == RecordType.MANUFACTURING_DATA and number == 0:
                pages.append(self._manufacturing_page())
            else:
                pages.append(None)
        if not 1 <= count <= 3 or any(p is None for p in pages):
            return Packet(Command.INVALID_PARAM)
        return Packet(Command.ACK, b"".join(p for p in pages if p is not None))

    # -- pty I/O ---------------------------------------------------------------------------------

    def _readable(self) -> None:
        assert self._fds is not None  # noqa: S101 - the reader is removed on unplug
        try:
            data = os.read(self._fds[0], 4096)
        except OSError:  # EAGAIN, or EIO while no client has the port open
            return
        for event in self._decoder.feed(data):
            if isinstance(event, Frame):
                self.requests[_name(event.packet.command)] += 1
                if self._pull_cable(event.packet):
                    return
                if not self.stalled:
                    self._reply(self.answer(event.packet))
            elif isinstance(event, BadFrame) and not self.stalled:
                self._reply(Packet(Command.NAK))

    def _pull_cable(self, request: Packet) -> bool:
        """`unplug_after`: whether the cable was pulled before answering `request`."""
        if self._unplug_after is None or request.command != Command.READ_DATABASE_PAGES:
            return False
        self._unplug_after -= 1
        if self._unplug_after > 0:
            return False
        self._unplug_after = None
        self.unplug()
        if self._replug_after is not None:
            asyncio.get_running_loop().call_later(self._replug_after, self.replug)
        return True

    def _reply(self, packet: Packet) -> None:
        frame = bytearray(packet.build())
        if self._corrupt:
            self._corrupt -= 1
            frame[-1] ^= 0xFF
        data, self._garbage = self._garbage + frame, b""
        if self._hold is not None:
            self._held, self._hold = data, None
            return
        if self._held is not None and self._overtaken == 0:
            data, self._held = self._held + data, None
        elif self._held is not None:
            self._overtaken -= 1
        self._send(data)

    def _send(self, data: bytes) -> None:
        self._out += data
        self._flush()

    def _flush(self) -> None:
        if self._fds is None:
            return
        master = self._fds[0]
        try:
            written = os.write(master, self._out)
        except BlockingIOError:
            written = 0
        del self._out[:written]
        loop = asyncio.get_running_loop()
        if self._out:
            loop.add_writer(master, self._flush)
        else:
            loop.remove_writer(master)


def _name(command: int) -> str:
    try:
        return Command(command).name
    except ValueError:
        return str(command)
