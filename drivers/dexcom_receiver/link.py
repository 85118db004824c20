"""The receiver's serial link (zigpy-znp's "uart" layer): one request, one answer, with timeouts.

`ReceiverLink` is the asyncio protocol of a pyserial-asyncio-fast transport (non-blocking reads
and buffered writes on the event loop, no thread per port). Received bytes go through the
protocol's `FrameDecoder`: garbage and bad frames are counted with `DeviceContext.drop_packet`
(reasons "garbage", "crc", "bad_frame", "unexpected_answer") and skipped.

`request(frame, what, parse)` sends one request and returns `parse(answer)`. It sends again
(at most `ATTEMPTS` times) when the answer is corrupted (a CRC failure and nothing valid
after it), does not come within `timeout` seconds, is a transient NAK (NAK, incomplete packet,
receiver error), or does not parse (a late answer to an earlier attempt). Then it gives up
with `LinkLost`, or `UnreadableAnswer` when every attempt got a well-framed answer that did
not parse (the receiver's own content is bad: retrying cannot help). EGV pages never get
there: a damaged page is a value of `ReceiverApi.egv_page`, and the session applies the
shared damaged-record rule to it (`DeviceContext.record_damaged`). INVALID_COMMAND means the
receiver does not implement a command it must: `DeviceRefused` (the supervisor parks it).
A write that does not drain within `timeout` and a port that disappears (EIO on unplug) are
`LinkLost`; a port that cannot be opened is `DeviceNotFound`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections import deque
from collections.abc import Callable, Iterable
from typing import TypeVar, cast

import serial_asyncio_fast
import structlog
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from gatewayd.plugin import DeviceNotFound, DeviceRefused, LinkLost
from protocols.dexcom_receiver.frames import (
    ANSWERS,
    BadFrame,
    Command,
    FrameDecoder,
    Garbage,
    NakError,
    Packet,
)
from protocols.errors import CrcError, ProtocolError

T = TypeVar("T")

#: USB ids of the G4 / G5 / G6 receiver (CDC-ACM), protocols.md §3.1.
USB_VID = 0x22A3
USB_PID = 0x0047
#: Nominal for CDC-ACM; what dexcom_reader and the Dexcom software open the port with.
BAUDRATE = 115200
#: Times one request is sent before the link counts as lost: one corrupted answer or one lost
#: packet is line noise; three in a row is a link that no longer works.
ATTEMPTS = 3
#: Answers after which the same request is worth sending again.
_TRANSIENT = frozenset({Command.NAK, Command.INCOMPLETE_PACKET_RECEIVED, Command.RECEIVER_ERROR})


class UnreadableAnswer(LinkLost):
    """Every attempt got a well-framed answer that does not parse."""


class _Corrupt(Exception):  # noqa: N818 - internal signal: send the request again
    pass


def find_receiver(ports: Iterable[ListPortInfo] | None = None) -> str:
    """The device path of the one plugged-in receiver (by USB VID:PID)."""
    found = sorted(
        p.device
        for p in (list_ports.comports() if ports is None else ports)
        if (p.vid, p.pid) == (USB_VID, USB_PID)
    )
    if not found:
        raise DeviceNotFound(f"no Dexcom receiver (USB {USB_VID:04x}:{USB_PID:04x}) plugged in")
    if len(found) > 1:
        raise DeviceNotFound(f"{len(found)} receivers plugged in ({', '.join(found)}): set `path`")
    return found[0]


class ReceiverLink(asyncio.Protocol):
    """A serial connection to one receiver; create with `ReceiverLink.open`."""

    def __init__(
        self,
        path: str,
        *,
        reply_timeout: float,
        drop: Callable[[bytes, str], None],
        log: structlog.typing.FilteringBoundLogger,
        device: str | None = None,
    ) -> None:
        self.path = path
        self._timeout = reply_timeout
        self._drop = drop
        self._log = log
        self._device = device
        self._decoder = FrameDecoder(ANSWERS)
        self._answers: deque[Packet] = deque()
        self._corrupt = False
        self._wake = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._made = asyncio.Event()
        self._closed = asyncio.Event()
        self._transport: asyncio.Transport | None = None
        self._lost: str | None = None

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        reply_timeout: float,
        drop: Callable[[bytes, str], None],
        log: structlog.typing.FilteringBoundLogger,
        device: str | None = None,
    ) -> ReceiverLink:
        """Open `path` at 115200 8N1, exclusively (a second reader would steal answers)."""
        link = cls(path, reply_timeout=reply_timeout, drop=drop, log=log, device=device)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(reply_timeout):
                await serial_asyncio_fast.create_serial_connection(
                    loop, lambda: link, path, baudrate=BAUDRATE, exclusive=True
                )
                await link._made.wait()  # connection_made runs on the next loop iteration
        except TimeoutError:
            raise DeviceNotFound(f"opening {path} timed out", device=device) from None
        except OSError as exc:  # serial.SerialException is an OSError
            reason = "no such device (unplugged?)" if exc.errno == errno.ENOENT else str(exc)
            raise DeviceNotFound(f"cannot open {path}: {reason}", device=device) from exc
        return link

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=0)  # pause_writing while anything waits
        self._made.set()

    def data_received(self, data: bytes) -> None:
        for event in self._decoder.feed(data):
            if isinstance(event, Garbage):
                self._drop(event.raw, "garbage")
            elif isinstance(event, BadFrame):
                self._drop(event.raw, "crc" if isinstance(event.error, CrcError) else "bad_frame")
                self._corrupt = True
            else:
                self._answers.append(event.packet)
        self._wake.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = f"serial link lost: {exc}" if exc else "serial port closed"
        self._transport = None
        self._closed.set()
        self._wake.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- requests --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the port and wait (briefly) until it is released for the next session."""
        if self._transport is not None:
            self._transport.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._closed.wait()

    def _check_open(self) -> asyncio.Transport:
        if self._lost is not None or self._transport is None:
            raise LinkLost(self._lost or "serial port not open", device=self._device)
        return self._transport

    async def _answer(self) -> Packet:
        while True:
            if self._answers:
                return self._answers.popleft()
            self._check_open()
            if self._corrupt and not self._decoder.pending:
                raise _Corrupt
            self._wake.clear()
            await self._wake.wait()

    async def _exchange(self, frame: bytes) -> Packet:
        """Send `frame`; its answer (TimeoutError, _Corrupt, LinkLost)."""
        self._decoder.clear()
        self._answers.clear()
        self._corrupt = False
        self._check_open().write(frame)
        try:
            async with asyncio.timeout(self._timeout):
                await self._writable.wait()
        except TimeoutError:
            raise LinkLost("serial write timed out", device=self._device) from None
        self._check_open()
        async with asyncio.timeout(self._timeout):
            return await self._answer()

    async def request(self, frame: bytes, what: str, parse: Callable[[Packet], T]) -> T:
        """`parse(answer)` of the request `frame`, sending it again on a bad or no answer."""
        unparsed = 0
        for attempt in range(1, ATTEMPTS + 1):
            try:
                packet = await self._exchange(frame)
            except TimeoutError:
                self._log.warning("request_timeout", request=what, attempt=attempt)
                continue
            except _Corrupt:
                self._log.info("request_retry", request=what, attempt=attempt, reason="crc")
                continue
            try:
                return parse(packet)
            except NakError as exc:
                if exc.code == Command.INVALID_COMMAND:
                    raise DeviceRefused(
                        f"{exc} (unsupported receiver)", device=self._device
                    ) from exc
                if exc.code not in _TRANSIENT:
                    raise LinkLost(str(exc), device=self._device) from exc
                self._log.info("request_retry", request=what, attempt=attempt, reason=str(exc))
            except ProtocolError as exc:
                unparsed += 1
                self._drop(packet.build(), "unexpected_answer")
                self._log.info("request_retry", request=what, attempt=attempt, reason=str(exc))
        if unparsed == ATTEMPTS:
            raise UnreadableAnswer(f"{what}: unreadable answer", device=self._device)
        raise LinkLost(f"{what}: no valid answer after {ATTEMPTS} attempts", device=self._device)
