"""What a check returns, and whose permissions the file checks are about."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

#: The user `systemd/gatewayd.service` runs the daemon as.
SERVICE_USER = "gatewayd"


class Status(StrEnum):
    """The outcome of one check; only FAIL makes `gatewayd doctor` exit non-zero."""

    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"  # not applicable to this config (no BLE device, no serial device)


@dataclass(frozen=True, slots=True)
class Result:
    """One check: what was found and, when something is wrong, what to do about it."""

    check: str
    status: Status
    message: str
    hint: str | None = None

    def line(self) -> str:
        """The one output line: status, check name, message and ` — hint`."""
        text = f"{self.status.value:<6}{self.check:<12}{self.message}"
        return f"{text} — {self.hint}" if self.hint else text

    def as_dict(self) -> dict[str, Any]:
        """For `--format json`."""
        return {
            "check": self.check,
            "status": self.status.value.lower(),
            "message": self.message,
            "hint": self.hint,
        }


def ok(check: str, message: str) -> Result:
    """A passed check."""
    return Result(check, Status.OK, message)


def warn(check: str, message: str, hint: str | None = None) -> Result:
    """Works, but will bite later (or cannot be verified)."""
    return Result(check, Status.WARN, message, hint)


def fail(check: str, message: str, hint: str | None = None) -> Result:
    """Broken: the gateway will not work (or not safely) until fixed."""
    return Result(check, Status.FAIL, message, hint)


def skip(check: str, message: str) -> Result:
    """Not applicable to this configuration."""
    return Result(check, Status.SKIP, message)


def worst(results: list[Result]) -> Status:
    """FAIL over WARN over OK (SKIP counts as OK)."""
    statuses = {r.status for r in results}
    for status in (Status.FAIL, Status.WARN):
        if status in statuses:
            return status
    return Status.OK


@dataclass(frozen=True, slots=True)
class Identity:
    """A user and its groups: file checks ask what *the daemon's* user may do, which is not
    necessarily who runs `gatewayd doctor` (often root, for whom every file is readable)."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def current(cls) -> Identity:
        """The user running this process."""
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, frozenset({os.getegid(), *os.getgroups()}))

    @classmethod
    def of_user(cls, name: str) -> Identity:
        """A user of this system with its supplementary groups (KeyError when there is none)."""
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, frozenset(os.getgrouplist(name, entry.pw_gid)))

    @property
    def is_root(self) -> bool:
        """Root may read and write any file (permission bits aside)."""
        return self.uid == 0

    def may(self, st: os.stat_result, *, read: bool = False, write: bool = False) -> bool:
        """Whether this user may read/write a file of `st` by its mode bits (POSIX: the owner's
        bits apply to the owner even when the group's are wider). ACLs are not consulted."""
        if self.is_root:
            return True
        if st.st_uid == self.uid:
            r, w = stat.S_IRUSR, stat.S_IWUSR
        elif st.st_gid in self.gids:
            r, w = stat.S_IRGRP, stat.S_IWGRP
        else:
            r, w = stat.S_IROTH, stat.S_IWOTH
        return (not read or bool(st.st_mode & r)) and (not write or bool(st.st_mode & w))

    def in_group(self, group: str) -> bool | None:
        """Whether the user is in `group`; None when the system has no such group."""
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            return None
        return gid in self.gids


def service_identity(user: str | None) -> Identity:
    """`--user NAME`; by default the service user `gatewayd` when run as root and it exists,
    else whoever runs the command."""
    if user is not None:
        return Identity.of_user(user)
    if os.geteuid() == 0:
        try:
            return Identity.of_user(SERVICE_USER)
        except KeyError:
            pass
    return Identity.current()


def owner_text(st: os.stat_result) -> str:
    """`crw-rw---- root:dialout`: the mode and owners, as `ls -l` shows them."""
    return f"{stat.filemode(st.st_mode)} {user_name(st.st_uid)}:{group_name(st.st_gid)}"


def user_name(uid: int) -> str:
    """The name of a uid (the number when it has none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    """The name of a gid (the number when it has none)."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def size_text(n: float) -> str:
    """Bytes for people: `812 MB`, `14.6 GB` (powers of 1000, like `df -H`)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit in ("B", "kB", "MB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
