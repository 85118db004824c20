"""The store's files on disk: the check at open, moving a corrupt store aside, the reserve.

- `quick_check(db)`: SQLite's `PRAGMA quick_check` (page structure, record formats, NOT NULL and
  UNIQUE; not the index-to-table cross-check, which is what makes `integrity_check` slow).
- `is_corrupt(exc)`: only SQLITE_CORRUPT and SQLITE_NOTADB mean the file is unusable. A locked,
  read-only, full or unreadable store is not corrupt, and moving it aside would lose it.
- `move_aside(path)`: renames the store and its `-wal` / `-shm` companions to
  `<name>.corrupt-<UTC timestamp>[-wal|-shm]`, so the daemon can start on a fresh store instead of
  failing in a restart loop, and the old file stays there for `sqlite3 <file> .recover`.
- `restore(db, path)`: the store file was deleted or replaced under the running daemon (its
  identity, st_dev/st_ino, changed): the still-open database is written back to the path with
  SQLite's backup API, a replacement moved aside to `<name>.replaced-<UTC timestamp>`. History,
  outbox and resume points survive; nothing waits for a restart to find an empty store.
- `Reserve`: a ballast file beside the store (`<name>.reserve`). When the disk is full SQLite
  cannot even delete rows (a delete appends to the WAL, and the checkpoint that would recycle the
  WAL needs room); releasing the reserve gives the emergency prune the room it needs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import structlog

from gatewayd.errors import CorruptStore

#: SQLite's primary result codes that mean "this file is not a usable database".
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
#: The files SQLite keeps beside a WAL-mode database.
_COMPANIONS = ("-wal", "-shm")
#: Bytes written per call while filling a reserve by hand (no fallocate on the filesystem).
_FILL_CHUNK = 1 << 16


def is_corrupt(exc: BaseException) -> bool:
    """Whether `exc` says the database file itself is damaged (not locked, full or unreadable)."""
    if isinstance(exc, CorruptStore):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _CORRUPT_CODES


def quick_check(db: sqlite3.Connection) -> None:
    """Raise `CorruptStore` unless `PRAGMA quick_check` says "ok" (and the pager's errors)."""
    rows = db.execute("PRAGMA quick_check(5)").fetchall()
    found = [str(row[0]) for row in rows]
    if found != ["ok"]:
        raise CorruptStore("quick_check: " + "; ".join(found))


def _free_name(path: Path, stamp: str, kind: str = "corrupt") -> Path:
    """`<name>.<kind>-<stamp>`, with a counter when a store was moved aside in the same second."""
    candidate = path.with_name(f"{path.name}.{kind}-{stamp}")
    n = 1
    while any(Path(f"{candidate}{s}").exists() for s in ("", *_COMPANIONS)):
        candidate = path.with_name(f"{path.name}.{kind}-{stamp}-{n}")
        n += 1
    return candidate


def identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at `path`, None when there is none: one stat, no read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def restore(
    db: sqlite3.Connection, path: Path, *, foreign: bool, now: datetime | None = None
) -> Path | None:
    """Write the open database `db` back to `path` (whose file, or its WAL, was deleted or
    replaced), then close `db`; returns where a `foreign` file found at `path` was moved.

    The WAL is checkpointed first, so the copy is the whole database and the `-wal` that closing
    `db` deletes holds nothing. On an error (a full disk) `db` stays open and `path` untouched.
    """
    with contextlib.suppress(sqlite3.Error):
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".restoring")
    temporary.unlink(missing_ok=True)
    os.close(os.open(temporary, os.O_CREAT | os.O_WRONLY, 0o600))
    try:
        copy = sqlite3.connect(temporary)
        try:
            db.backup(copy)
        finally:
            copy.close()
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    moved = None
    if foreign and path.exists():
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        moved = path.rename(_free_name(path, stamp, "replaced"))
    os.replace(temporary, path)
    db.close()  # deletes the (empty) -wal and -shm beside `path`: the copy has none yet
    return moved


def move_aside(path: Path, reason: BaseException, *, now: datetime | None = None) -> Path:
    """Rename a corrupt store (and its -wal/-shm) out of the way; returns the new path.

    Logged at error level as `store_corrupt_moved_aside` with the new path: the readings in it
    are not lost, but the daemon no longer sees them (recover with `sqlite3 <file> .recover`).
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = _free_name(path, stamp)
    path.rename(target)
    moved = [str(target)]
    for suffix in _COMPANIONS:
        companion = Path(f"{path}{suffix}")
        if companion.exists():
            companion.rename(Path(f"{target}{suffix}"))
            moved.append(f"{target}{suffix}")
    structlog.get_logger().bind(component="store").error(
        "store_corrupt_moved_aside",
        path=str(path),
        moved_to=str(target),
        files=moved,
        error=str(reason),
        action="started on a fresh store; recover readings with: sqlite3 <moved_to> .recover",
    )
    return target


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of `folder`."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


class Reserve:
    """A ballast file of `size` bytes beside the store, given up when the disk fills."""

    def __init__(self, store_path: Path, size: int) -> None:
        self.path = store_path.with_name(store_path.name + ".reserve")
        self.size = size

    @property
    def held(self) -> bool:
        """Whether the reserve file is in place at its full size."""
        try:
            return self.path.stat().st_size >= self.size > 0
        except OSError:
            return False

    def ensure(self) -> bool:
        """Create the reserve when it is missing and there is room for it twice over.

        The margin keeps the reserve itself from being what fills the disk. Never raises.
        """
        if self.size <= 0 or self.held:
            return self.held
        try:
            if free_bytes(self.path.parent) < 2 * self.size:
                return False
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                _allocate(fd, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            self.release()
            return False
        return True

    def release(self) -> bool:
        """Delete the reserve; True when there was one to give back."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError:
            return False
        return True


def _allocate(fd: int, size: int) -> None:
    """Allocate `size` real bytes (not a sparse hole) in the open file `fd`."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate here: write it
            raise
        zeros = bytes(_FILL_CHUNK)
        left = size
        while left > 0:
            left -= os.write(fd, zeros[: min(left, _FILL_CHUNK)])
