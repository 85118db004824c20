"""A private `dbus-daemon` for tests: the "system bus" bleak's BlueZ backend talks to.

bleak (and dbus-fast under it) find the system bus through ``DBUS_SYSTEM_BUS_ADDRESS``; pointing
that at a daemon of our own lets the `org.bluez` stand-in own the name ``org.bluez`` without
root, without the machine's bus and without Bluetooth in the kernel. The daemon runs with the
session bus policy (anyone may own any name), in the foreground (its PID is ours to stop).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["DBUS_DAEMON", "SESSION_CONF", "DbusDaemon"]

DBUS_DAEMON = "dbus-daemon"
#: The stock session policy: any connection may own any name (what a test bus needs).
SESSION_CONF = Path("/usr/share/dbus-1/session.conf")
#: Seconds the daemon may take to print its address (it takes milliseconds).
START_TIMEOUT = 10.0


class DbusDaemon:
    """One `dbus-daemon` on a unix socket in `folder`; `start()`, `address`, `stop()`."""

    def __init__(self, folder: Path) -> None:
        self.socket = folder / "system_bus_socket"
        self.address = f"unix:path={self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        """Why no daemon can start here (None: it can)."""
        if shutil.which(DBUS_DAEMON) is None:
            return f"{DBUS_DAEMON} is not installed (Debian: apt-get install dbus)"
        if not SESSION_CONF.is_file():
            return f"{SESSION_CONF} is missing (Debian: apt-get install dbus)"
        return None

    @property
    def pid(self) -> int | None:
        """The daemon's process id while it runs."""
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the daemon and wait until it listens (it prints its address then)."""
        self.process = subprocess.Popen(
            [
                DBUS_DAEMON, f"--config-file={SESSION_CONF}", f"--address={self.address}",
                "--nofork", "--nopidfile", "--print-address=1",
            ],
            stdout=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("DBUS_")},
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("unix:"):
            self.stop()
            raise RuntimeError(f"{DBUS_DAEMON} did not start (printed {line!r})")

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after 5 s)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
