"""The hub's clock: when to trust it, what to do with readings until then, and how to fix them.

A Raspberry Pi has no real-time clock. It boots at 1970 or, with fake-hwclock / timesyncd's
saved clock, at the time it last shut down, and only an NTP client makes the wall clock right.
Drivers date readings from the hub's wall clock (`received = ctx.now()`; `time` is that minus
the age the sensor's own time base reports), so until the clock is right both are wrong by the
same unknown offset. The monotonic clock is right all along (it only counts seconds since boot).

Policy (`Timekeeper`, applied in the supervisor's accept step, one place for every driver):

- **Trusted clock** (`ClockStatus` from adjtimex(2) says synchronised; or it did earlier this
  boot; or no time service runs that could ever synchronise it; or the platform cannot tell):
  a reading dated after `now + tolerance` or before 2020 is clamped to its `received` time and
  flagged `time_adjusted`; nothing else changes.
- **Untrusted clock** (not synchronised while a time service is running, or a wall clock before
  2020 whatever the kernel says): the reading is stored, flagged `clock_unsynced`, with the
  boot id and `time.monotonic()` at receipt (`store.Hold`). Held readings are not published,
  not shown to services, and nothing after them is published (the outbox stays in order).
- **The clock becomes trusted**: every held reading of this boot is re-dated:
  `received = wall_now - (mono_now - received_mono)` and `time` moves by the same offset (the
  sensor-reported age is kept; a driver whose times come from the device's own calendar clock,
  `DriverPlugin.time_base = "device"`, keeps its `time`); flagged `time_corrected`; then
  published, in order, and handed to the services. The id never changes (it does not include
  the time). Readings held in an earlier boot cannot be re-dated (that boot's monotonic clock
  is gone): published as they are, flagged `time_unverified`, when their times are plausible
  (2020 .. now); otherwise kept in the store but never published (`time_uncorrectable`, logged
  at error level).

So no reading is ever published dated before 2020 or in the future. See docs/resilience.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from gatewayd.models import Reading
from gatewayd.ops.doctor.system import adjtimex_probe
from gatewayd.store import Hold, Store, StoreFull

#: No reading is published dated before this (a clock at 1970 or at a firmware build date).
EPOCH_FLOOR = datetime(2020, 1, 1, tzinfo=UTC)

#: Reading status flags set by the hub (beside the device's own, in `Reading.status`).
CLOCK_UNSYNCED = "clock_unsynced"
TIME_CORRECTED = "time_corrected"
TIME_ADJUSTED = "time_adjusted"
TIME_UNVERIFIED = "time_unverified"
TIME_UNCORRECTABLE = "time_uncorrectable"

#: Present while a time service runs that will synchronise the clock (and clear STA_UNSYNC):
#: systemd-timesyncd's RuntimeDirectory (removed by `timedatectl set-ntp false`), chrony's, ntpd's.
TIME_SERVICE_MARKERS = (
    Path("/run/systemd/timesync"),
    Path("/run/chrony"),
    Path("/var/run/chrony"),
    Path("/run/ntpd.pid"),
    Path("/var/run/ntpd.pid"),
)
#: systemd-timesyncd touches this on its first synchronisation of the boot (/run is per boot).
TIMESYNCD_SYNCHRONISED = Path("/run/systemd/timesync/synchronized")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_META_KEY = "clock_trusted_boot"


@dataclass(frozen=True, slots=True)
class ClockStatus:
    """What the kernel says about the wall clock."""

    #: Synchronised (adjtimex: STA_UNSYNC clear); None: the platform cannot tell.
    synced: bool | None
    #: A time service runs that is expected to synchronise the clock.
    sync_expected: bool
    source: str
    detail: str = ""


def time_service_running(markers: tuple[Path, ...] = TIME_SERVICE_MARKERS) -> bool:
    """Whether an NTP client (timesyncd, chrony, ntpd) appears to run on this machine."""
    return any(marker.exists() for marker in markers)


def probe_clock_status() -> ClockStatus:
    """adjtimex(2), read-only (the probe `gatewayd doctor` uses), plus the time service's state.

    Off Linux (no adjtimex) the clock cannot be judged and is assumed synchronised.
    """
    state = adjtimex_probe()
    if state is None or state.synchronised is None:
        return ClockStatus(None, False, "none", "adjtimex(2) unavailable")
    if not state.synchronised and TIMESYNCD_SYNCHRONISED.exists():
        return ClockStatus(True, True, "timesyncd", "synchronised earlier this boot")
    return ClockStatus(state.synchronised, time_service_running(), "adjtimex", state.detail)


def read_boot_id(path: Path = BOOT_ID) -> str:
    """This boot's id (a random one per process where the kernel gives none)."""
    try:
        return path.read_text().strip() or f"unknown-{uuid.uuid4()}"
    except OSError:
        return f"unknown-{uuid.uuid4()}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class TimeSyncOptions:
    """The clocks and limits of a `Timekeeper` (the defaults are the real ones)."""

    probe: Callable[[], ClockStatus] = probe_clock_status
    wall: Callable[[], datetime] = _utc_now
    monotonic: Callable[[], float] = time.monotonic
    #: None: /proc/sys/kernel/random/boot_id.
    boot_id: str | None = None
    #: How far past the hub's (trusted) clock a reading may be dated before it is clamped.
    tolerance: timedelta = timedelta(minutes=2)
    #: Seconds between polls of the clock status.
    poll_s: float = 10.0
    #: Seconds between reminders in the log while readings are held.
    remind_s: float = 600.0


def _flagged(status: tuple[str, ...], *flags: str) -> tuple[str, ...]:
    return status + tuple(f for f in flags if f not in status)


def sanitize(reading: Reading, now: datetime, tolerance: timedelta) -> Reading:
    """`reading` with `time` (and `received`) clamped into [2020, now + tolerance].

    A time outside that range is replaced by the received time (a device clock that is wrong:
    the moment the hub got it is the best estimate left) and flagged `time_adjusted`. Returns
    the same object when nothing needed changing (the common case).
    """
    limit = now + tolerance
    received = reading.received
    if not EPOCH_FLOOR <= received <= limit:
        received = now
    measured = reading.time
    if not EPOCH_FLOOR <= measured <= limit:
        measured = received
    if measured is reading.time and received is reading.received:
        return reading
    return replace(
        reading,
        time=measured,
        received=received,
        status=_flagged(reading.status, TIME_ADJUSTED),
    )


class Timekeeper:
    """Decides whether the hub's clock is trusted; holds and later re-dates readings."""

    def __init__(self, store: Store, options: TimeSyncOptions | None = None) -> None:
        self.store = store
        self.options = opts = options or TimeSyncOptions()
        self.wall = opts.wall
        self.monotonic = opts.monotonic
        self.boot_id = opts.boot_id if opts.boot_id is not None else read_boot_id()
        self.log = structlog.get_logger().bind(component="clock")
        #: None until the first `poll()`; then whether new readings are published directly.
        self.trusted: bool | None = None
        #: Why the clock is (not) trusted, as last judged.
        self.reason = "not polled yet"
        self.status: ClockStatus | None = None
        #: Readings re-dated (or released) since start, for metrics and tests.
        self.corrected = 0
        self.quarantined = 0
        #: Drivers whose reading times come from the device's own clock (not re-dated).
        self.device_clock: set[str] = set()
        self._boot_trusted = self._boot_was_trusted()
        self._untrusted_since: float | None = None
        self._reminded = 0.0

    # -- the accept step ------------------------------------------------------------------

    def place(self, reading: Reading) -> tuple[Reading, Hold | None]:
        """The reading as it is to be stored, and its hold when the clock is not trusted."""
        if self.trusted:
            return sanitize(reading, self.wall(), self.options.tolerance), None
        hold = Hold(self.boot_id, self.monotonic())
        return replace(reading, status=_flagged(reading.status, CLOCK_UNSYNCED)), hold

    # -- polling ----------------------------------------------------------------------------

    def poll(self) -> list[Reading]:
        """Judge the clock; when it has just become trusted, re-date and release every held
        reading. Returns the released readings, oldest first (to hand to the services)."""
        status = self._probe()
        now = self.wall()
        trusted, reason, sticky = self._judge(status, now)
        self.status = status
        if trusted and sticky and not self._boot_trusted:
            self._remember_boot()
        if trusted and self.trusted is not True:
            try:
                released = self._release(now)
            except StoreFull as exc:
                self.log.warning("clock_release_deferred", reason="store full", error=str(exc))
                return []
            held_for = self._held_for()
            self.trusted, self.reason = True, reason
            self.log.info(
                "clock_trusted",
                reason=reason,
                source=status.source,
                released=len(released),
                quarantined=self.quarantined,
                held_s=held_for,
            )
            return released
        if not trusted and self.trusted is not False:
            self.trusted, self.reason = False, reason
            self._untrusted_since = self.monotonic()
            self._reminded = self._untrusted_since
            self.log.warning(
                "clock_untrusted",
                reason=reason,
                source=status.source,
                detail=status.detail,
                wall=now.isoformat(),
                action="readings are stored and held back from the broker until it is",
            )
        elif not trusted and self.monotonic() - self._reminded >= self.options.remind_s:
            self._reminded = self.monotonic()
            self.log.warning(
                "clock_still_untrusted",
                reason=reason,
                held=self.store.held_depth(),
                held_s=self._held_for(),
            )
        self.reason = reason
        return []

    async def run(self, on_release: Callable[[list[Reading]], None]) -> None:
        """Poll every `poll_s` seconds until cancelled; released readings go to `on_release`."""
        while True:
            await asyncio.sleep(self.options.poll_s)
            released = self.poll()
            if released:
                on_release(released)

    def _probe(self) -> ClockStatus:
        try:
            return self.options.probe()
        except Exception as exc:  # noqa: BLE001 - a broken probe must not stop the data path
            return ClockStatus(None, False, "error", f"{type(exc).__name__}: {exc}")

    def _judge(self, status: ClockStatus, now: datetime) -> tuple[bool, str, bool]:
        """(trusted, why, trusted for the rest of this boot)."""
        if now < EPOCH_FLOOR:
            return False, f"wall clock at {now.isoformat()}, before 2020", False
        if status.synced:
            return True, "synchronised", True
        if self._boot_trusted:
            # The kernel sets STA_UNSYNC again after ~9 h without an NTP update; the clock
            # has only drifted by the crystal's error since it was last synchronised.
            return True, "synchronised earlier this boot", False
        if status.synced is None:
            return True, f"synchronisation unknown ({status.detail or status.source})", False
        if not status.sync_expected:
            return True, "not synchronised, but no time service runs to synchronise it", False
        return False, "waiting for the time service to synchronise the clock", False

    def _held_for(self) -> float | None:
        if self._untrusted_since is None:
            return None
        return round(self.monotonic() - self._untrusted_since, 1)

    def _boot_was_trusted(self) -> bool:
        return self.store.meta(_META_KEY) == self.boot_id

    def _remember_boot(self) -> None:
        with contextlib.suppress(StoreFull):
            self.store.set_meta(_META_KEY, self.boot_id)
            self._boot_trusted = True

    # -- re-dating --------------------------------------------------------------------------

    def _release(self, now: datetime) -> list[Reading]:
        """Re-date every held reading and take it off hold, in one transaction."""
        rows = self.store.held()
        if not rows:
            return []
        mono_now = self.monotonic()
        released: list[tuple[int, Reading]] = []
        unknown: list[tuple[int, Reading]] = []
        for rowid, (boot_id, received_mono), reading in (
            (row.rowid, row.hold, row.reading) for row in rows
        ):
            if boot_id == self.boot_id and received_mono <= mono_now:
                true_received = now - timedelta(seconds=mono_now - received_mono)
                fixed = self.redate(
                    reading, true_received, keep_time=reading.driver in self.device_clock
                )
                released.append((rowid, sanitize(fixed, now, self.options.tolerance)))
            elif self._plausible(reading, now):
                status = _flagged(reading.status, TIME_UNVERIFIED)
                released.append((rowid, replace(reading, status=status)))
            else:
                unknown.append(
                    (rowid, replace(reading, status=_flagged(reading.status, TIME_UNCORRECTABLE)))
                )
        self.store.release_held(released, unknown)
        self.corrected += len(released)
        self.quarantined += len(unknown)
        if unknown:
            self.log.error(
                "readings_time_unknown",
                count=len(unknown),
                first=unknown[0][1].id,
                last=unknown[-1][1].id,
                reason="held in an earlier boot that never synchronised its clock, "
                "with implausible times: kept in the store, not published",
            )
        return [reading for _, reading in released]

    @staticmethod
    def redate(reading: Reading, received: datetime, *, keep_time: bool = False) -> Reading:
        """`reading` received at `received` (true time): `time` moves by the same offset,
        unless `keep_time` (it came from the device's own clock, not the hub's)."""
        offset = received - reading.received
        return replace(
            reading,
            time=reading.time if keep_time else reading.time + offset,
            received=received,
            status=_flagged(reading.status, CLOCK_UNSYNCED, TIME_CORRECTED),
        )

    def _plausible(self, reading: Reading, now: datetime) -> bool:
        limit = now + self.options.tolerance
        return all(EPOCH_FLOOR <= t <= limit for t in (reading.time, reading.received))
