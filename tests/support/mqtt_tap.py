"""A TCP relay between an MQTT client and the broker that reads the packet types on the wire: to
count, hold back or stop what passes (`Tap`)."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import sys
import termios
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from mosquitto import Mosquitto

_PUBLISH, _PUBACK = 3, 4


async def _read_packet(reader: asyncio.StreamReader) -> bytes:
    """One whole MQTT control packet (fixed header, remaining length, body)."""
    head = await reader.readexactly(1)
    length, shift, raw = 0, 0, b""
    while True:
        byte = await reader.readexactly(1)
        raw += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    return head + raw + await reader.readexactly(length)


class Tap:
    """A TCP relay between a publisher and the broker that reads the MQTT packet types.

    It counts QoS>0 PUBLISH packets from the client and PUBACKs delivered back to it (the
    in-flight window as seen on the wire), can hold PUBACKs back (`ack_budget`: None lets all
    pass, a number lets that many more pass, then holds), and can stop listening so that
    connection attempts are refused (a closed port fails fast; a relay that accepts and then
    hangs up would make aiomqtt wait for its whole timeout).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = 0
        self.publishes = 0
        self.acks = 0
        self.max_outstanding = 0
        self.ack_budget: int | None = None
        self._held: list[tuple[bytes, asyncio.StreamWriter]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._clients: list[asyncio.StreamWriter] = []

    @property
    def outstanding(self) -> int:
        return self.publishes - self.acks

    @property
    def held(self) -> int:
        """PUBACKs the broker sent that the client has not been given yet."""
        return len(self._held)

    async def listen(self, *, receive_buffer: int | None = None) -> None:
        """Listen; `receive_buffer` sets SO_RCVBUF of the links it accepts (bytes) and keeps
        what the relay buffers itself as small (a client's writes back up sooner)."""
        limit = 2**16 if receive_buffer is None else receive_buffer // 4
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, limit=limit)
        self.port = self._server.sockets[0].getsockname()[1]
        if receive_buffer is not None:
            self._server.sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)

    def stop_reading(self) -> None:
        """Read nothing more from the client until `read_again()`: its socket fills up."""
        self._reading.clear()

    def read_again(self) -> None:
        self._reading.set()

    def unread(self) -> int:
        """Bytes the clients sent that wait in the relay's sockets."""
        total = 0
        for writer in self._clients:
            sock = writer.get_extra_info("socket")
            if sock is not None and sock.fileno() >= 0:
                raw = bytearray(4)
                fcntl.ioctl(sock.fileno(), termios.FIONREAD, raw)
                total += int.from_bytes(raw, sys.byteorder)
        return total

    def refuse(self) -> None:
        """Stop listening (links already open stay up)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def close(self) -> None:
        self.refuse()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def pass_acks(self) -> None:
        """Stop holding PUBACKs and deliver the held ones."""
        self.ack_budget = None
        self.release()

    def release(self, count: int | None = None) -> None:
        """Deliver `count` held PUBACKs (all when None)."""
        take = len(self._held) if count is None else count
        for packet, writer in self._held[:take]:
            self._forward_ack(packet, writer)
        del self._held[:take]

    def _forward_ack(self, packet: bytes, writer: asyncio.StreamWriter) -> None:
        self.acks += 1
        writer.write(packet)
        self.changed.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        self._clients.append(writer)
        for coro in (self._to_broker(reader, up_writer), self._to_client(up_reader, writer)):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _to_broker(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                packet = await _read_packet(reader)
                await self._reading.wait()  # (holding the packet it was reading)
                if packet[0] >> 4 == _PUBLISH and (packet[0] >> 1) & 3:
                    self.publishes += 1
                    self.max_outstanding = max(self.max_outstanding, self.outstanding)
                    self.changed.set()
                writer.write(packet)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _to_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                packet = await _read_packet(reader)
                if packet[0] >> 4 == _PUBACK:
                    if self.ack_budget is None:
                        self._forward_ack(packet, writer)
                    elif self.ack_budget > 0:
                        self.ack_budget -= 1
                        self._forward_ack(packet, writer)
                    else:
                        self._held.append((packet, writer))
                        self.changed.set()
                    continue
                writer.write(packet)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def wait(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def tap_to(broker: Mosquitto, *, receive_buffer: int | None = None) -> AsyncIterator[Tap]:
    tap = Tap(broker.port)
    await tap.listen(receive_buffer=receive_buffer)
    try:
        yield tap
    finally:
        await tap.close()
