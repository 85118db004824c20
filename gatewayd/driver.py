"""The public driver API: what a driver package implements and what it is given.

A driver family registers one `DriverPlugin` in the entry-point group ``gatewayd.drivers``::

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

from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
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


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """The newest reading of a device that is already in the store."""

    serial: str
    session: str
    seq: int
    time: datetime


@dataclass(frozen=True, slots=True)
class DeviceMatch:
    """How a candidate device is recognised (for scanning and `gatewayd scan`)."""

    ble_service_uuids: tuple[str, ...] = ()
    ble_name_pattern: str | None = None
    usb_vid_pid: tuple[tuple[int, int], ...] = ()


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
    returns. `open` creates a session for one connection attempt. Optional:
    `expected_interval(options)` gives the seconds between a connected device's readings (None:
    the health check uses the options' `interval`, else 5 min; `math.inf`: a connected device
    may be silent indefinitely, e.g. a receiver relaying a sensor; see gatewayd.health).
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

    @property
    def summary(self) -> str:
        """First line of the help text."""
        return self.help.strip().splitlines()[0] if self.help.strip() else self.name


def options_table(raw: Mapping[str, Any], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """A device table without the keys the daemon itself reads (`driver`, `id`, `enabled`,
    and the service sub-tables in `exclude`)."""
    skip = {"driver", "id", "enabled", *exclude}
    return {k: v for k, v in raw.items() if k not in skip}
