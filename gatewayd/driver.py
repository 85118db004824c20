"""The driver contract: what a driver package implements and what it is given.

Driver packages import these names from `gatewayd.plugin` (the driver author's API), never
from here. A driver family registers one `DriverPlugin` in the entry-point group
``gatewayd.drivers``::

    [project.entry-points."gatewayd.drivers"]
    mycgm = "mycgm_driver:plugin"

The supervisor opens one `DriverSession` per connection attempt with a fresh `DeviceContext`
whose `resume` names the newest reading already stored for the device; the session backfills
from there out of the device's own memory, then yields live readings, and ends (returns, or
raises a `DeviceError`) when the link drops. Reconnecting, backoff and storage are the
supervisor's job, never the driver's. Keep this contract small: a required member added later
breaks every third-party driver.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, Self, TypeVar

import structlog

from gatewayd.models import DeviceIdentity, Reading
from gatewayd.options import OptionReader

if TYPE_CHECKING:  # the BLE transport imports bleak: only BLE drivers pay for it at run time
    from gatewayd.transport.ble import BleConfig

Transport = Literal["ble", "serial", "virtual"]
#: Where a driver's reading times come from (`DriverPlugin.time_base`).
TimeBase = Literal["hub", "device"]
OptionsT = TypeVar("OptionsT")

#: How many bytes of a dropped packet are logged as hex (a whole notification fits).
_HEX_LIMIT = 512
#: How many times a record that arrives damaged is asked for again before it is passed over
#: (`DeviceContext.record_damaged`). A damage that survives two fresh reads is in the device's
#: memory, not on the link; more tries only hold good readings back.
DAMAGED_RETRIES = 2


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """The newest reading of a device that is already in the store."""

    serial: str
    session: str
    seq: int
    time: datetime


@dataclass(frozen=True, slots=True)
class DeviceMatch:
    """How a candidate device is recognised, read by `gatewayd scan`.

    A BLE device matches when it advertises one of `ble_service_uuids`, or its advertised name
    matches `ble_name_pattern` (a regular expression, whole name) or begins with one of
    `ble_name_prefixes`. A serial port matches when its USB VID:PID is one of `usb_vid_pid`.
    `gatewayd scan` prints a ``[[devices]]`` table for each device found: the found address
    (BLE) or port (serial) goes in the option `address_option` (default: "address" for a BLE
    driver, "path" for a serial one), and every `(key, hint)` of `required_options` is shown
    for the person to fill in (e.g. a transmitter id printed on the device).
    """

    ble_service_uuids: tuple[str, ...] = ()
    ble_name_pattern: str | None = None
    usb_vid_pid: tuple[tuple[int, int], ...] = ()
    ble_name_prefixes: tuple[str, ...] = ()
    address_option: str | None = None
    required_options: tuple[tuple[str, str], ...] = ()

    def matches_ble(self, name: str | None, service_uuids: Iterable[str]) -> bool:
        """Whether an advertisement (its local name, its service UUIDs) is such a device."""
        wanted = {_uuid128(u) for u in self.ble_service_uuids}
        if wanted and any(_uuid128(u) in wanted for u in service_uuids):
            return True
        if name is None:
            return False
        if self.ble_name_pattern is not None and re.fullmatch(self.ble_name_pattern, name):
            return True
        return any(name.startswith(prefix) for prefix in self.ble_name_prefixes)

    def matches_usb(self, vid: int | None, pid: int | None) -> bool:
        """Whether a USB device with this VID:PID is such a device."""
        return vid is not None and pid is not None and (vid, pid) in self.usb_vid_pid


#: Bluetooth Base UUID: a 16- or 32-bit UUID `x` stands for 0000xxxx-0000-1000-8000-00805f9b34fb.
_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"


def _uuid128(text: str) -> str:
    """A service UUID in bleak's form (128-bit, lower case), from its 16-, 32- or 128-bit form."""
    text = text.strip().lower()
    if len(text) in (4, 8):
        return f"{int(text, 16):08x}{_BASE_UUID_TAIL}"
    return text


@dataclass(frozen=True, slots=True)
class Emulator:
    """A driver's emulated device, run by ``gatewayd simulate --device NAME``.

    `runner` is ``"package.module:function"``, an ``async def function(context:
    SimulateContext) -> None`` imported only when this emulator is chosen (an emulator may need
    the optional Bumble stack; the daemon never imports it). `name` is the ``--device`` name.
    """

    name: str
    runner: str


def _nothing() -> None:
    return None


@dataclass(slots=True)
class DeviceFindings:
    """What the sessions of one device found about it, kept across its connections.

    The supervisor owns one per device and hands it to every `DeviceContext`; its counters are
    published in the device `status` payload (`records_unreadable`, `clock_offset_s`), shown by
    `gatewayd status` and exported as metrics.
    """

    #: Records passed over because they stayed damaged after `DAMAGED_RETRIES`.
    unreadable: int = 0
    #: The device clock minus the hub's clock, in seconds, as last measured (None: unknown,
    #: or the device has no clock the hub can read).
    clock_offset_s: float | None = None
    #: Damaged arrivals per record key not yet passed over.
    attempts: dict[Hashable, int] = field(default_factory=dict)
    #: Keys of the records passed over (so each is counted and logged once).
    passed_over: set[Hashable] = field(default_factory=set)
    #: Called after a counter changed (the supervisor republishes the device status).
    changed: Callable[[], None] = _nothing


@dataclass(slots=True)
class DeviceContext(Generic[OptionsT]):
    """Everything a driver session is given for one connection attempt."""

    device_id: str
    driver: str
    options: OptionsT
    resume: ResumePoint | None
    log: structlog.typing.FilteringBoundLogger
    dropped: Counter[str] = field(default_factory=Counter)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    #: The hub's `[ble]` table (stack, HCI transport); None means the defaults (BlueZ).
    ble: BleConfig | None = None
    #: Damaged records and the device clock's offset, kept across connections of the device.
    findings: DeviceFindings = field(default_factory=DeviceFindings)

    def now(self) -> datetime:
        """The hub's wall clock, aware UTC."""
        return self.clock()

    def drop_packet(self, data: bytes, reason: str) -> None:
        """Count, log (driver, device, hex) and drop one malformed packet; never raises."""
        self.dropped[reason] += 1
        self.log.warning(
            "packet_dropped",
            reason=reason,
            hex=data[:_HEX_LIMIT].hex(),
            length=len(data),
            dropped_total=sum(self.dropped.values()),
        )

    def record_damaged(self, key: Hashable, data: bytes, *, position: str, reason: str) -> bool:
        """One damaged arrival of the record at `key`: True while it should be asked for again,
        False once it is passed over.

        Every damaged arrival is a dropped packet (`drop_packet`). After `DAMAGED_RETRIES`
        renewed requests that still bring it damaged, the record is passed over: counted once in
        `records_unreadable`, logged once (`record_unreadable`, with its hex, `position` and
        `reason`), and the driver lets everything before and after it flow. `key` names the
        record the same way on every connection (e.g. a sensor session and the offset after the
        last good record; a receiver page number), so a record passed over stays passed over.
        """
        self.drop_packet(data, reason)
        found = self.findings
        if key in found.passed_over:
            return False
        tries = found.attempts.get(key, 0) + 1
        if tries <= DAMAGED_RETRIES:
            found.attempts[key] = tries
            self.log.info("record_damaged_retry", position=position, reason=reason, attempt=tries)
            return True
        found.attempts.pop(key, None)
        found.passed_over.add(key)
        found.unreadable += 1
        self.log.error(
            "record_unreadable",
            position=position,
            reason=reason,
            hex=data[:_HEX_LIMIT].hex(),
            length=len(data),
            attempts=tries,
            unreadable_total=found.unreadable,
        )
        found.changed()
        return False

    def record_recovered(self, key: Hashable) -> None:
        """A record at `key` that had arrived damaged arrived intact: forget its attempts."""
        self.findings.attempts.pop(key, None)

    def set_clock_offset(self, seconds: float | None) -> None:
        """The device clock's offset from the hub's clock (device minus hub, seconds) as just
        measured; reported in the device `status` as `clock_offset_s` (rounded to 0.1 s: a
        change smaller than 1 s is not republished).
        """
        found = self.findings
        old = found.clock_offset_s
        found.clock_offset_s = None if seconds is None else round(seconds, 1)
        if (old is None) != (seconds is None) or (
            old is not None and seconds is not None and abs(old - seconds) >= 1.0
        ):
            self.log.info("device_clock_offset", clock_offset_s=found.clock_offset_s)
            found.changed()


class DriverSession(Protocol):
    """One connection to one device: an async context manager yielding readings."""

    identity: DeviceIdentity | None

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...

    def readings(self) -> AsyncIterator[Reading]:
        """Backfilled readings (oldest first) then live ones; ends when the link drops."""
        ...


@dataclass(frozen=True, slots=True)
class DriverPlugin(Generic[OptionsT]):
    """A driver family as the daemon sees it.

    `parse_options` reads the driver's own keys of a ``[[devices]]`` table through an
    `OptionReader` (which fails with file, key and reason); unknown keys are refused after it
    returns. `open` creates a session for one connection attempt. Optional: `match`, how
    `gatewayd scan` recognises the driver's devices; `emulator`, the driver's emulated device
    for `gatewayd simulate`; `expected_interval(options)`, the seconds between a connected
    device's readings (None: the health check uses the options' `interval`, else 5 min;
    `math.inf`: a connected device may be silent indefinitely, e.g. a receiver relaying a
    sensor; see gatewayd.ops.health).
    """

    name: str
    transport: Transport
    help: str
    parse_options: Callable[[OptionReader], OptionsT]
    open: Callable[[DeviceContext[OptionsT]], DriverSession]
    match: DeviceMatch = DeviceMatch()
    expected_interval: Callable[[OptionsT], float | None] | None = None
    #: Optional: where a reading's `time` comes from. "hub": the hub's clock (`ctx.now()`)
    #: minus the age the device reports (CGM sensors: offsets from a session start). "device":
    #: the device's own calendar clock (a receiver's or a meter's RTC). Readings received
    #: before the hub's clock is synchronised get `received` re-dated once it is, and `time`
    #: too only for "hub" (gatewayd.timesync).
    time_base: TimeBase = "hub"
    #: Optional: the driver's emulated device (`gatewayd simulate --device NAME`).
    emulator: Emulator | None = None

    @property
    def address_option(self) -> str:
        """The `[[devices]]` option that takes a found device's address (BLE) or port (serial)."""
        if self.match.address_option is not None:
            return self.match.address_option
        return "path" if self.transport == "serial" else "address"

    @property
    def summary(self) -> str:
        """First line of the help text."""
        return self.help.strip().splitlines()[0] if self.help.strip() else self.name


def options_table(raw: Mapping[str, Any], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """A device table without the keys the daemon itself reads (`driver`, `id`, `enabled`,
    and the service sub-tables in `exclude`)."""
    skip = {"driver", "id", "enabled", *exclude}
    return {k: v for k, v in raw.items() if k not in skip}
