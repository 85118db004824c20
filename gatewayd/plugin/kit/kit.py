"""What a driver's tests provide to the checks: `DriverKit` (its hooks, fault hooks included)
and `Target` (how the gateway reaches the emulator).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gatewayd.driver import DriverPlugin
from gatewayd.models import Reading

Key = tuple[str, int]
#: Device clock faults `DriverKit.set_device_clock` takes ("right": the clock is set right).
CLOCK_FAULTS = ("ahead_1h", "behind_7_months", "epoch", "right")
#: How far a reading's `time` may be from the device's truth.
CLOCK_TOLERANCE = timedelta(seconds=60)
#: Records of `check_large_backfill`.
LARGE_BACKFILL = 3000
#: Reports that begin with a record in flight in `check_record_in_flight_before_reports`.
IN_FLIGHT_REPORTS = 10


class FaultUnsupportedError(NotImplementedError):
    """Raised by a fault hook the kit does not implement: the check that needs it skips."""

    def __init__(self, hook: str) -> None:
        super().__init__(f"DriverKit.{hook} is not implemented by this kit")
        self.hook = hook


@dataclass(frozen=True)
class Target:
    """How the gateway reaches a running emulator."""

    #: The driver's keys of the device's ``[[devices]]`` table.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Handed to the driver as `DeviceContext.ble` (a `BleConfig`); None for other transports.
    ble: Any = None
    #: Brings the hub's radio up in this loop around the gateway (default: `ble_session(ble)`
    #: when `ble` is set, else nothing).
    radio: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None
    #: Awaits the moment the emulator has no link up (checked after shutdown when given).
    idle: Callable[[], Awaitable[None]] | None = None
    #: The hub's clock, when the emulator runs on its own (e.g. an accelerated one the hub must
    #: share to date readings as on a real hub); None: the wall clock.
    clock: Callable[[], datetime] | None = None


class DriverKit(abc.ABC):
    """What a driver's tests provide to the checks (see the module docstring)."""

    #: Stored readings to wait for before each forced event, and new ones after it.
    readings_before: int = 5
    readings_after: int = 5
    #: Count only live (not backfilled) readings there: a device that streams shows its
    #: backfill finished and live readings flowing before each event.
    live: bool = False
    #: Link drops forced by `check_backfill_after_link_drop`.
    drops: int = 2
    #: Seconds one check may take.
    timeout: float = 30.0
    #: Whether the driver may yield a reading twice (the store absorbs it); else that fails.
    redelivers: bool = False
    #: Whether a reconnect must bring backfilled readings (the device made some meanwhile).
    backfills_after_drop: bool = True
    device_id: str = "kit-device"

    @abc.abstractmethod
    def make_plugin(self) -> DriverPlugin[Any]:
        """The driver's plugin, as the daemon would load it."""

    @abc.abstractmethod
    def start_emulator(self) -> contextlib.AbstractAsyncContextManager[Target]:
        """Start the emulated device; yields how to reach it; stops it on exit."""

    @abc.abstractmethod
    async def force_link_drop(self) -> None:
        """Make the running emulator drop the link now."""

    @abc.abstractmethod
    async def corrupt_next(self) -> None:
        """Make the running emulator damage the next packet it sends."""

    @abc.abstractmethod
    def expected_sequence(self, readings: Sequence[Reading]) -> Sequence[Key]:
        """Every (session, seq) the device held from the oldest to the newest of `readings`."""

    async def make_readings(self, count: int) -> None:  # noqa: B027 - optional hook
        """Have the device produce `count` new readings (default: it does by itself)."""

    def refuse_bonding(self) -> None:
        """Optional (for `check_refused_bond_parks`): make the emulator started next demand a
        bond (an ATT security error on the data the driver needs) and refuse every pairing
        request, as a device bonded to a phone and not in pairing mode does."""
        raise NotImplementedError(f"{type(self).__name__} cannot make its device refuse bonding")

    # -- fault hooks (optional: see the module docstring) -----------------------------------------

    #: Whether the driver measures the device clock (`DeviceContext.set_clock_offset`).
    reports_clock_offset: bool = True

    async def damage_in_memory(self, where: Sequence[str]) -> Sequence[Key]:
        """Before the first connection: damage the records at `where` ("start", "middle",
        "end" of the memory) for good; their keys."""
        raise FaultUnsupportedError("damage_in_memory")

    async def set_device_clock(self, fault: str) -> float:
        """Set the device's own calendar per `fault` (`CLOCK_FAULTS`); device minus true time
        in seconds."""
        raise FaultUnsupportedError("set_device_clock")

    def true_time(self, reading: Reading) -> datetime:
        """When the device truly measured `reading`."""
        raise FaultUnsupportedError("true_time")

    async def reset_memory(self) -> None:
        """Erase the device's memory: its sequence numbers start again."""
        raise FaultUnsupportedError("reset_memory")

    async def disorder_records(self) -> None:
        """Make the device send its next new records duplicated and out of order."""
        raise FaultUnsupportedError("disorder_records")

    async def fill_memory(self, count: int) -> None:
        """Before the first connection: the device holds `count` records not yet seen."""
        raise FaultUnsupportedError("fill_memory")

    async def drop_in_report(self) -> None:
        """Before the first connection: the link drops part way through the first backfill."""
        raise FaultUnsupportedError("drop_in_report")

    async def records_in_flight(self, reports: int) -> None:
        """Before the first connection: the next `reports` reports (backfills) begin with the
        device's newest record, notified as a live one it had queued when it read the request."""
        raise FaultUnsupportedError("records_in_flight")
