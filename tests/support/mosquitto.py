"""A real mosquitto broker for tests: free loopback ports, password auth, TLS, stop and restart.

Listeners (all on 127.0.0.1, ports chosen free at start and kept across restarts):

- `port`: plain MQTT, username/password required;
- `tls_port`: TLS with the test CA's server cert, username/password required;
- `mtls_port`: TLS requiring a client certificate signed by the test CA (no password).

Persistence is off by default: durability is the hub's outbox's job, and a broker restart must
not hand back what it had queued (mosquitto only snapshots periodically anyway). With
`persistence=True` a clean stop saves the sessions of persistent subscribers (and what is queued
for them, without limit), so a test's subscriber misses nothing across a broker restart.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from certs import TestPKI, make_pki

USERNAME = "gateway"
PASSWORD = "s3cret-test-password"
#: First starts tried when the ports chosen were taken before mosquitto bound them.
_START_ATTEMPTS = 3


#: Ports this process has handed out (a broker's three are all chosen before any is bound).
_HANDED_OUT: set[int] = set()
#: The lowest port handed out: below it sit the well-known and registered services' ports.
_LOWEST = 10_000


def _ephemeral_floor() -> int:
    """The lowest port of the kernel's ephemeral range (outgoing connections' source ports)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to right now, below the ephemeral range.

    A port the kernel picks with bind(0) lies in the ephemeral range: between this check and the
    server's own bind, any outgoing connection on the machine can take it as its source port, and
    the server then exits with "Address already in use" (seen once in CI as a session broker that
    never started). The kernel never picks a source port below that range.
    """
    floor = _ephemeral_floor()
    candidates = range(_LOWEST, max(floor, _LOWEST + 1_000))  # (a machine's range may be odd)
    for _ in range(500):
        port = random.choice(candidates)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen: int = sock.getsockname()[1]
        _HANDED_OUT.add(chosen)
        return chosen
    raise RuntimeError(f"no free port on 127.0.0.1 between {_LOWEST} and {floor}")


def wait_for_port(
    port: int, timeout: float = 10.0, *, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.01)  # polling a condition with a deadline, not synchronisation by delay


@dataclass
class Mosquitto:
    """One mosquitto process with its own folder, ports and credentials."""

    folder: Path
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    mtls_port: int = field(default_factory=free_port)
    username: str = USERNAME
    password: str = PASSWORD
    pki: TestPKI | None = None
    persistence: bool = False
    #: Further mosquitto.conf lines (e.g. "max_queued_messages 0"), appended at the end.
    extra_config: tuple[str, ...] = ()
    _process: subprocess.Popen[bytes] | None = None
    _started: bool = False

    @property
    def binary(self) -> str:
        """Path of the mosquitto executable."""
        found = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if found is None:
            raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
        return found

    def _write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.pki is None:
            self.pki = make_pki(self.folder / "pki")
        passwd = self.folder / "passwd"
        passwd_tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        subprocess.run(
            [passwd_tool, "-b", "-c", str(passwd), self.username, self.password],
            check=True,
            capture_output=True,
        )
        pki = self.pki
        lines = [
            "per_listener_settings true",
            *(
                [f"persistence true\npersistence_location {self.folder}/", "max_queued_messages 0"]
                if self.persistence
                else ["persistence false"]
            ),
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"listener {self.tls_port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"cafile {pki.ca_cert}",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
            f"listener {self.mtls_port} 127.0.0.1",
            "allow_anonymous false",
            "require_certificate true",
            "use_identity_as_username true",
            f"cafile {pki.ca_cert}",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
        ]
        if os.geteuid() == 0:
            # As root mosquitto would drop to the `mosquitto` user and fail to read these files.
            lines.insert(0, "user root")
        lines.extend(self.extra_config)
        conf = self.folder / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        """Start (or restart) the broker and wait until every listener accepts connections.

        On its first start a broker whose port another program took meanwhile moves to free ones
        (a restart keeps its ports: the tests' clients reconnect to them). A broker that exits
        raises with what it wrote to its log.
        """
        if self.running:
            return
        for attempt in range(_START_ATTEMPTS):
            conf = self._write_config()
            log_path = self.folder / "mosquitto.log"
            already = log_path.stat().st_size if log_path.exists() else 0
            with log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    [self.binary, "-c", str(conf)], stdout=log, stderr=log
                )
            try:
                for port in (self.port, self.tls_port, self.mtls_port):
                    wait_for_port(port, process=self._process)
            except RuntimeError as exited:
                self._process = None
                said = log_path.read_bytes()[already:].decode(errors="replace").strip()
                if "in use" in said and not self._started and attempt + 1 < _START_ATTEMPTS:
                    self.port, self.tls_port, self.mtls_port = free_port(), free_port(), free_port()
                    continue
                raise RuntimeError(f"mosquitto {exited}: {said[-1000:]}") from None
            self._started = True
            return

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker (SIGKILL with `kill`, as a crash would)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def url(self, *, tls: bool = False, mtls: bool = False) -> str:
        """The broker URL of one listener (hostname `localhost` for TLS, matching the cert)."""
        if mtls:
            return f"mqtts://localhost:{self.mtls_port}"
        if tls:
            return f"mqtts://localhost:{self.tls_port}"
        return f"mqtt://127.0.0.1:{self.port}"
