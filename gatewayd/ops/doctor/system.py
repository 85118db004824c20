"""Checks of the machine: clock synchronisation, free disk space, serial device permissions.

Each check takes its probe as an argument (the real one by default), so tests can hand in a
clock that is not synchronised or a disk that is full.
"""

from __future__ import annotations

import ctypes
import shutil
import stat
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from gatewayd.ops.doctor.core import (
    Identity,
    Result,
    fail,
    group_name,
    ok,
    owner_text,
    size_text,
    warn,
)

# -- clock -------------------------------------------------------------------------------------

#: adjtimex(2): the kernel's "clock not synchronised" status bit and clock state.
STA_UNSYNC = 0x0040
TIME_ERROR = 5


@dataclass(frozen=True, slots=True)
class ClockState:
    """What a probe found: synchronised (None: cannot tell), by which means, and details."""

    synchronised: bool | None
    source: str
    detail: str = ""


class _Timex(ctypes.Structure):
    """The head of `struct timex` (the kernel writes the rest into `_rest`)."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    )


def timedatectl_probe(timeout: float = 3.0) -> ClockState | None:
    """`timedatectl show -p NTPSynchronized --value` (systemd-timesyncd, chrony, ntpd all set
    it); None when there is no timedatectl or no systemd to answer it."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - a fixed system tool, no user input
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = done.stdout.strip()
    if done.returncode != 0 or value not in ("yes", "no"):
        return None
    return ClockState(value == "yes", "timedatectl")


def adjtimex_probe() -> ClockState | None:
    """The kernel's own view, read-only (modes = 0): adjtimex(2) via ctypes; None off Linux."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    timex = _Timex()
    state = adjtimex(ctypes.byref(timex))
    if state < 0:
        return None
    unsync = bool(timex.status & STA_UNSYNC) or state == TIME_ERROR
    detail = "STA_UNSYNC" if unsync else f"max error {timex.maxerror / 1e6:.3g} s"
    return ClockState(not unsync, "adjtimex", detail)


def probe_clock() -> ClockState:
    """timedatectl when it answers, else adjtimex(2)."""
    return timedatectl_probe() or adjtimex_probe() or ClockState(None, "none")


def check_clock(probe: Callable[[], ClockState] = probe_clock) -> Result:
    """Warn when the system clock is not synchronised (a Pi has no real-time clock)."""
    state = probe()
    how = f"{state.source}: {state.detail}" if state.detail else state.source
    if state.synchronised is None:
        return warn(
            "clock",
            "cannot tell whether the clock is synchronised",
            "install and enable an NTP client (systemd-timesyncd or chrony)",
        )
    if not state.synchronised:
        return warn(
            "clock",
            f"not synchronised ({how})",
            "enable NTP: sudo timedatectl set-ntp true (a Pi has no real-time clock: until it "
            "syncs, received times and TLS certificate checks use a wrong date)",
        )
    return ok("clock", f"synchronised ({how})")


# -- disk --------------------------------------------------------------------------------------

#: Free space on the store's filesystem below which doctor warns / fails.
DISK_WARN_BYTES = 200_000_000
DISK_FAIL_BYTES = 20_000_000


class DiskUsage(NamedTuple):
    """`shutil.disk_usage`'s shape."""

    total: int
    used: int
    free: int


def existing_parent(path: Path) -> Path:
    """`path` or its nearest ancestor that exists (the store may not be created yet)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_disk(
    store_path: Path, usage: Callable[[Path], DiskUsage | Any] = shutil.disk_usage
) -> Result:
    """Free space where the store lives: warn below 200 MB, fail below 20 MB."""
    where = existing_parent(store_path.parent)
    try:
        found = usage(where)
    except OSError as exc:
        return fail("disk", f"{where}: cannot read free space: {exc.strerror}")
    text = f"{where}: {size_text(found.free)} free of {size_text(found.total)}"
    hint = (
        "free space (sudo journalctl --vacuum-size=100M, old logs, apt clean) or lower "
        "[store] retention_days"
    )
    if found.free < DISK_FAIL_BYTES:
        return fail("disk", f"{text}: SQLite cannot write safely", hint)
    if found.free < DISK_WARN_BYTES:
        return warn("disk", f"{text}: below {size_text(DISK_WARN_BYTES)}", hint)
    return ok("disk", text)


# -- serial ------------------------------------------------------------------------------------

#: Driver option names that hold a serial device path (`/dev/ttyACM0`, `/dev/serial/by-id/...`).
SERIAL_OPTION_KEYS = ("path", "port", "device", "tty", "serial_port")


def serial_path(options: Mapping[str, Any]) -> Path | None:
    """The serial device path of a device's driver options, when it has one."""
    for key in SERIAL_OPTION_KEYS:
        value = options.get(key)
        if isinstance(value, str) and value.startswith("/"):
            return Path(value)
    return None


def check_serial(device: str, path: Path, identity: Identity) -> Result:
    """The device node exists, is a character device, and the daemon's user may open it."""
    where = f"{device} {path}" if device else str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return fail(
            "serial",
            f"{where}: no such device",
            "is it plugged in? `ls -l /dev/serial/by-id/` lists the connected ones; a by-id path "
            "survives re-plugging, /dev/ttyACM0 may not",
        )
    except OSError as exc:
        return fail("serial", f"{where}: {exc.strerror}")
    if not identity.may(st, read=True, write=True):
        group = group_name(st.st_gid)
        can_group = bool(st.st_mode & stat.S_IRGRP and st.st_mode & stat.S_IWGRP)
        hint = (
            f"add the {identity.name} user to {group} (sudo usermod -aG {group} {identity.name}),"
            " then restart the service"
            if can_group and group != "root"
            else f'give group dialout read/write with a udev rule (MODE="0660", '
            f'GROUP="dialout"; see systemd/) and add {identity.name} to dialout'
        )
        return fail(
            "serial",
            f"{where}: permission denied for user {identity.name} ({owner_text(st)})",
            hint,
        )
    kind = "character device" if stat.S_ISCHR(st.st_mode) else "not a character device"
    result = f"{where}: {kind}, read/write as {identity.name}"
    if not stat.S_ISCHR(st.st_mode):
        return warn("serial", result, "point the device option at the tty (/dev/tty*)")
    return ok("serial", result)
