"""A fake service manager: an AF_UNIX datagram socket collecting sd_notify messages."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class NotifySocket:
    """What systemd would receive on `$NOTIFY_SOCKET`: one dict of assignments per datagram.

    A thread drains the socket as systemd does: an unread datagram queue fills up after a few
    messages (net.unix.max_dgram_qlen) and the sender's further messages are dropped.
    """

    path: Path
    sock: socket.socket
    messages: list[dict[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.sock.settimeout(0.05)
        threading.Thread(target=self._drain, name="notify-socket", daemon=True).start()

    def _drain(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            with self._lock:
                self.messages.append(fields)

    def close(self) -> None:
        self._closed.set()
        self.sock.close()

    def poll(self) -> list[dict[str, str]]:
        """Every message received so far (a snapshot)."""
        with self._lock:
            return list(self.messages)

    def values(self, key: str) -> list[str]:
        """Every value sent for `key`, in order."""
        return [m[key] for m in self.poll() if key in m]

    def count(self, key: str) -> int:
        return len(self.values(key))

    def mark(self) -> int:
        """An index into `messages`: `since(mark)` is what arrived afterwards."""
        return len(self.poll())

    def since(self, mark: int) -> list[dict[str, str]]:
        return self.poll()[mark:]

    async def wait_for(
        self,
        condition: Callable[[list[dict[str, str]]], bool],
        timeout: float = 10.0,
        what: str = "",
    ) -> list[dict[str, str]]:
        """Poll until `condition(messages)` holds (a deadline, not a delay)."""
        deadline = time.monotonic() + timeout
        while not condition(self.poll()):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; got {self.poll()[-5:]}"
                )
            await asyncio.sleep(0.01)
        return self.poll()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    """A bound datagram socket in tmp_path (or a short temp dir if that path is too long)."""
    folder = tmp_path
    short: tempfile.TemporaryDirectory[str] | None = None
    if len(str(tmp_path / "notify")) > 100:  # sun_path holds 108 bytes
        short = tempfile.TemporaryDirectory(prefix="gwd-")
        folder = Path(short.name)
    path = folder / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    receiver = NotifySocket(path, sock)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.close()
        if short is not None:
            short.cleanup()
