"""A dependency-free sd_notify client: datagrams to `$NOTIFY_SOCKET`, a no-op when unset.

The protocol is systemd's (sd_notify(3)): newline-separated `KEY=value` assignments in one
datagram on an AF_UNIX SOCK_DGRAM socket whose path is `$NOTIFY_SOCKET` (a leading '@' names
the abstract namespace). `$WATCHDOG_USEC` (and `$WATCHDOG_PID`, when set, naming this process)
says the service manager expects `WATCHDOG=1` at least that often.

Sending never blocks and never raises: a notification that cannot be delivered is dropped
(systemd's queue is deep; a lost ping is covered by the next one) and reported once in the log.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

#: STATUS= is shown by `systemctl status`; systemd truncates long lines anyway.
_STATUS_MAX = 400


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between watchdog pings (half of `$WATCHDOG_USEC`), or None when not asked for."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None  # meant for another process (e.g. a wrapper that exec'd us is not us)
    return int(usec) / 2_000_000


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and other transports are not used by a system service


class Notifier:
    """Sends sd_notify messages to one socket; every method is a no-op when disabled."""

    def __init__(self, socket_path: str | None) -> None:
        self.address = _address(socket_path) if socket_path else None
        self.log = structlog.get_logger().bind(component="notify")
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for (`$NOTIFY_SOCKET`), or a disabled one."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send `KEY=value` lines in one datagram (`send(READY=1, STATUS="...")`)."""
        if self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value).replace("\n", " ")
            if key == "STATUS":
                text = text[:_STATUS_MAX]
            lines.append(f"{key}={text}")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto("\n".join(lines).encode(), socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                self.log.warning("notify_failed", error=str(exc), socket=self.address)
            return False
        if self._failed:
            self._failed = False
            self.log.info("notify_restored", socket=self.address)
        return True

    def close(self) -> None:
        """Close the socket (a later `send` opens a new one)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
