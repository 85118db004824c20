"""The driver test kit: a driver package proves the driver contract against its own emulator.

The checks run the real `Supervisor` + `Store` (+ `Publisher`, which only publishes when given a
broker) in the test's event loop, with the driver loaded as the daemon loads it (its plugin,
its options parsed from a ``[[devices]]``-like table) and the emulator standing in for the
device. What every driver must show (DESIGN.md §3):

* `check_readings_arrive` - readings reach the store, well formed, none missing, none twice;
* `check_backfill_after_link_drop` - after forced link drops the driver reconnects and backfills
  the gap from the device's memory: no sequence missing, no (session, seq) stored twice;
* `check_corrupt_packet_survived` - a damaged packet is counted (`DeviceContext.drop_packet`),
  the session goes on, and the record it hid is recovered;
* `check_clean_shutdown` - stopping the gateway closes every session and the device's link.

And, opt-in (`BOND_CHECKS`), for a BLE driver whose emulator can demand a bond and refuse it
(its kit implements `refuse_bonding()`):

* `check_refused_bond_parks` - a device that refuses to bond is parked (not retried in a loop)
  with a reason a person can act on, and nothing is stored.

A driver's test provides a `DriverKit` (subclass it; one instance per check) and parametrises::

    from gatewayd.testing import driverkit

    class MyKit(driverkit.DriverKit):
        def make_plugin(self):
            return mydriver.plugin

        @contextlib.asynccontextmanager
        async def start_emulator(self):
            async with my_emulator() as (host, emulator):
                self.emulator = emulator
                yield driverkit.Target(
                    options={"address": emulator.address},    # the [[devices]] keys
                    ble=BleConfig(stack="bumble", hci="in-process"),  # DeviceContext.ble
                    radio=lambda: bumble_session(host),      # the hub's radio in this loop
                    idle=emulator.wait_idle,                  # awaits "no link up"
                )

        async def force_link_drop(self):
            await self.emulator.drop_link()

        async def corrupt_next(self):
            self.emulator.corrupt_next()

        def expected_sequence(self, readings):
            return self.emulator.keys_between(readings)       # what the device held

    @pytest.mark.parametrize("check", driverkit.CHECKS, ids=driverkit.check_name)
    async def test_my_driver_honours_the_contract(check):
        await check(MyKit())

    async def test_a_refused_bond_parks_my_device():    # when MyKit.refuse_bonding() exists
        await driverkit.check_refused_bond_parks(MyKit())

Opt-in fault checks (`FAULT_CHECKS`, run them the same way): each needs a fault hook of the
kit; the default hooks raise `FaultUnsupportedError`, and a check whose hook does so is skipped
(``pytest.skip`` naming the hook), so a kit gains a check by implementing its hook:

* `check_records_damaged_in_memory` - three records stay damaged in the device's memory (at
  the start, the middle and the end of the first report; hook `damage_in_memory`): every other
  record is stored once, in order, none of those, and `findings.unreadable` == 3;
* `check_device_clock_ahead_1h`, `check_device_clock_behind_7_months`,
  `check_device_clock_at_epoch` - the device's calendar is wrong from the start, then right,
  then wrong again, with a link drop at each jump (hooks `set_device_clock`, `true_time`):
  every reading's `time` is within `CLOCK_TOLERANCE` (60 s) of the device's truth, no true
  record is stored twice (ids stable), and `findings.clock_offset_s` shows the offset (unless
  `reports_clock_offset` is False);
* `check_memory_reset` - the device's memory is erased and its sequence numbers start again
  (hook `reset_memory`; a CGM: a new sensor session): the new records are stored, none lost;
* `check_duplicated_and_out_of_order` - the device sends new records twice and out of order
  (hook `disorder_records`): each stored once, in order;
* `check_large_backfill` - the device holds `LARGE_BACKFILL` (3,000) records on first contact
  (hook `fill_memory`): all stored, once, in order;
* `check_link_drop_mid_report` - the link drops part way through the first backfill (hook
  `drop_in_report`): the next connection completes it, nothing lost or repeated.

The fault hooks, all optional (raise `FaultUnsupportedError(hook)` where not supported)::

    async def damage_in_memory(self, where: Sequence[str]) -> Sequence[Key]
        # before the first connection: the records at these positions ("start", "middle",
        # "end" of what the memory holds) stay damaged for good; returns their keys
    async def set_device_clock(self, fault: str) -> float
        # one of CLOCK_FAULTS ("ahead_1h", "behind_7_months", "epoch", "right"): the device's
        # own calendar only; returns device clock minus true time, seconds
    def true_time(self, reading: Reading) -> datetime
        # when the device truly measured `reading`
    async def reset_memory(self) -> None
    async def disorder_records(self) -> None
    async def fill_memory(self, count: int) -> None   # before the first connection
    async def drop_in_report(self) -> None            # before the first connection

`expected_sequence(readings)` returns every (session, seq) the device held from the oldest to
the newest of `readings` within each session (the keys that must be stored; records damaged
in memory excluded). A serial driver's `Target` has no `ble` and no `radio` (its options name
the emulator's port). `make_readings(n)` may make the device produce readings on demand (a
meter's new measurement); the default does nothing (a CGM produces them by itself).
`run_gateway(plugin, target)` gives the harness to tests of the driver's own (`KitGateway`:
`stored`, `yielded`, `attempts`, `wait_for()`, the supervisor's `device` with its `dropped`
counter and its `findings`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

from gatewayd.config import MqttConfig, SupervisorConfig
from gatewayd.driver import DeviceContext, DriverPlugin, DriverSession
from gatewayd.models import Reading, reading_id
from gatewayd.options import OptionReader
from gatewayd.publisher import Publisher
from gatewayd.status import DeviceStatus, LinkState
from gatewayd.store import Store
from gatewayd.supervisor import Device, Supervisor

__all__ = [
    "BOND_CHECKS",
    "CHECKS",
    "CLOCK_FAULTS",
    "CLOCK_TOLERANCE",
    "FAULT_CHECKS",
    "LARGE_BACKFILL",
    "DriverKit",
    "FaultUnsupportedError",
    "Key",
    "KitGateway",
    "Target",
    "assert_contract",
    "check_backfill_after_link_drop",
    "check_clean_shutdown",
    "check_corrupt_packet_survived",
    "check_device_clock_ahead_1h",
    "check_device_clock_at_epoch",
    "check_device_clock_behind_7_months",
    "check_duplicated_and_out_of_order",
    "check_large_backfill",
    "check_link_drop_mid_report",
    "check_memory_reset",
    "check_name",
    "check_readings_arrive",
    "check_records_damaged_in_memory",
    "check_refused_bond_parks",
    "run_gateway",
]

Key = tuple[str, int]
#: Device clock faults `DriverKit.set_device_clock` takes ("right": the clock is set right).
CLOCK_FAULTS = ("ahead_1h", "behind_7_months", "epoch", "right")
#: How far a reading's `time` may be from the device's truth.
CLOCK_TOLERANCE = timedelta(seconds=60)
#: Records of `check_large_backfill`.
LARGE_BACKFILL = 3000


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


class _Recording:
    """A session wrapper that records what the driver yields and whether it was closed."""

    def __init__(self, inner: DriverSession, gateway: KitGateway) -> None:
        self._inner, self._gateway = inner, gateway
        self.identity = inner.identity
        gateway.changed(attempted=1)

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        self.identity = self._inner.identity
        self._gateway.changed(opened=1)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            return await self._inner.__aexit__(kind, exc, tb)
        finally:
            self._gateway.changed(closed=1)

    async def readings(self) -> AsyncIterator[Reading]:
        async for reading in self._inner.readings():
            self._gateway.yielded.append(reading)
            yield reading


class KitGateway:
    """The running gateway of a check: what was yielded and stored, and ways to wait for it."""

    def __init__(self, device: Device, supervisor: Supervisor, store: Store) -> None:
        self.device, self.supervisor, self.store = device, supervisor, store
        self.stored: list[Reading] = []
        self.yielded: list[Reading] = []
        #: Connection attempts (sessions created), sessions opened and closed.
        self.attempts = self.opened = self.closed = 0
        #: Every device status the supervisor reported, in order (attempts, backoff, parking).
        self.statuses: list[DeviceStatus] = []
        self._changed = asyncio.Event()

    def changed(self, *, attempted: int = 0, opened: int = 0, closed: int = 0) -> None:
        """Count sessions and wake the waiter (called by the session wrapper)."""
        self.attempts += attempted
        self.opened += opened
        self.closed += closed
        self._changed.set()

    def on_stored(self, reading: Reading) -> None:
        """The supervisor's listener: a reading newly stored."""
        self.stored.append(reading)
        self._changed.set()

    async def wait_until(self, condition: Callable[[], bool], what: str, timeout: float) -> None:  # noqa: ASYNC109
        """Wait (woken by every stored reading, session and status change) until `condition()`
        holds."""
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    self._changed.clear()
                    if not condition():
                        await self._changed.wait()
        except TimeoutError:
            state = self.device.status.state if self.device.status else None
            dropped = dict(self.device.dropped)
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}: {len(self.stored)} stored, "
                f"{self.opened} sessions opened, device {state}, dropped {dropped}"
            ) from None

    async def wait_for(
        self,
        count: int,
        timeout: float = 20.0,  # noqa: ASYNC109
        *,
        live: bool = False,
    ) -> None:
        """Wait until at least `count` readings (live ones only: `live`) are stored."""
        what = f"{count} {'live ' if live else ''}readings"
        await self.wait_until(lambda: self.count(live=live) >= count, what, timeout)

    def count(self, *, live: bool = False) -> int:
        """Readings stored (live ones only: `live`)."""
        return sum(not r.backfilled for r in self.stored) if live else len(self.stored)

    async def wait_for_session(self, after: int, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        """Wait until more than `after` sessions were opened (a reconnect)."""
        await self.wait_until(lambda: self.opened > after, f"session {after + 1}", timeout)

    def keys(self) -> list[Key]:
        """(session, seq) of the stored readings, in storing order."""
        return [(r.session, r.seq) for r in self.stored]


@contextlib.asynccontextmanager
async def run_gateway(
    plugin: DriverPlugin[Any],
    target: Target,
    *,
    device_id: str = "kit-device",
    store_path: Path | None = None,
    mqtt: MqttConfig | None = None,
    backoff: tuple[float, float] = (0.05, 0.5),
) -> AsyncIterator[KitGateway]:
    """Supervisor + Store (+ Publisher when `mqtt` is given) running `plugin` against `target`."""
    reader = OptionReader(dict(target.options), "driverkit", "devices[0]")
    options = plugin.parse_options(reader)
    reader.finish()
    with contextlib.ExitStack() as stack:
        if store_path is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="driverkit-"))
            store_path = Path(folder) / "gatewayd.db"
        store = Store(store_path, synchronous="normal")
        stack.callback(store.close)
        holder: list[KitGateway] = []
        publisher = _Publisher(mqtt or MqttConfig(), "driverkit-hub", store, holder)
        recording = replace(plugin, open=lambda ctx: _Recording(_open(plugin, ctx), holder[0]))
        device = Device(device_id, recording, options)
        config = SupervisorConfig(backoff_min=backoff[0], backoff_max=backoff[1])
        clock = target.clock or (lambda: datetime.now(UTC))
        supervisor = Supervisor([device], store, publisher, config, clock=clock, ble=target.ble)
        gateway = KitGateway(device, supervisor, store)
        holder.append(gateway)
        supervisor.listeners.append(gateway.on_stored)
        async with _radio(target):
            tasks = [asyncio.create_task(supervisor.run(), name="driverkit-supervisor")]
            if mqtt is not None:
                tasks.append(asyncio.create_task(publisher.run(), name="driverkit-publisher"))
            try:
                yield gateway
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                supervisor.mark_stopped()


class _Publisher(Publisher):
    """Wakes the checks on every device status change (connecting, backoff, parked...)."""

    def __init__(
        self, config: MqttConfig, hub: str, store: Store, gateway: list[KitGateway]
    ) -> None:
        super().__init__(config, hub, store)
        self._gateway = gateway

    def set_status(self, status: DeviceStatus) -> None:
        super().set_status(status)
        if self._gateway:
            self._gateway[0].statuses.append(status)
            self._gateway[0].changed()


def _open(plugin: DriverPlugin[Any], ctx: DeviceContext[Any]) -> DriverSession:
    return plugin.open(ctx)


def _radio(target: Target) -> contextlib.AbstractAsyncContextManager[Any]:
    if target.radio is not None:
        return target.radio()
    if target.ble is not None:
        from gatewayd.transport.ble import ble_session

        return ble_session(target.ble)
    return contextlib.nullcontext()


# -- checks ----------------------------------------------------------------------------------------


def _expect(condition: bool, message: str) -> None:
    """`assert` that survives `python -O` (the kit is library code)."""
    if not condition:
        raise AssertionError(message)


def assert_contract(kit: DriverKit, gateway: KitGateway, plugin: DriverPlugin[Any]) -> None:
    """What must hold of everything stored: well formed, complete, no duplicates, in order
    (complete: every key of `kit.expected_sequence`)."""
    stored = gateway.stored
    _expect(bool(stored), "nothing was stored")
    for r in stored:
        _expect(r.device == gateway.device.id, f"reading for {r.device!r}")
        _expect(r.driver == plugin.name, f"reading of driver {r.driver!r}")
        _expect(r.id == reading_id(r.driver, r.serial, r.session, r.seq), f"id of {r}")
        _expect(r.time <= r.received, f"dated after it was received: {r}")
    keys = gateway.keys()
    twice = [key for key, n in Counter(keys).items() if n > 1]
    _expect(not twice, f"(session, seq) stored under two ids: {twice[:10]}")
    missing = sorted(set(kit.expected_sequence(stored)) - set(keys))
    _expect(not missing, f"{len(missing)} sequences missing, first {missing[:10]}")
    for session in {s for s, _ in keys}:
        seqs = [seq for s, seq in keys if s == session]
        _expect(seqs == sorted(seqs), f"session {session} stored out of order")
    if not kit.redelivers:
        again = [rid for rid, n in Counter(r.id for r in gateway.yielded).items() if n > 1]
        _expect(not again, f"{len(again)} readings yielded twice")


@contextlib.asynccontextmanager
async def _warm_gateway(
    kit: DriverKit, plugin: DriverPlugin[Any], target: Target
) -> AsyncIterator[KitGateway]:
    """A gateway on the running emulator, once `readings_before` readings are stored."""
    async with run_gateway(plugin, target, device_id=kit.device_id) as gateway:
        await kit.make_readings(kit.readings_before)
        await gateway.wait_for(kit.readings_before, kit.timeout, live=kit.live)
        yield gateway


async def _more_readings(kit: DriverKit, gateway: KitGateway) -> None:
    """Have the device make `readings_after` more readings and wait until they are stored."""
    await kit.make_readings(kit.readings_after)
    after = gateway.count(live=kit.live) + kit.readings_after
    await gateway.wait_for(after, kit.timeout, live=kit.live)


async def check_readings_arrive(kit: DriverKit) -> None:
    """Readings flow into the store, complete and well formed."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with _warm_gateway(kit, plugin, target) as gateway:
            state = gateway.device.status.state if gateway.device.status else None
            _expect(state == LinkState.CONNECTED, f"device {state}, not connected")
        assert_contract(kit, gateway, plugin)


async def check_backfill_after_link_drop(kit: DriverKit) -> None:
    """Forced link drops: the driver reconnects and the gap is backfilled."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with _warm_gateway(kit, plugin, target) as gateway:
            first_drop = len(gateway.stored)
            for _ in range(kit.drops):
                opened = gateway.opened
                await kit.force_link_drop()
                await gateway.wait_for_session(opened, kit.timeout)
                await _more_readings(kit, gateway)
        assert_contract(kit, gateway, plugin)
        if kit.backfills_after_drop:
            _expect(any(r.backfilled for r in gateway.stored[first_drop:]), "nothing backfilled")


async def check_corrupt_packet_survived(kit: DriverKit) -> None:
    """A damaged packet is dropped and counted; the session goes on; nothing is missing."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with _warm_gateway(kit, plugin, target) as gateway:
            dropped = gateway.device.dropped
            before = sum(dropped.values())
            await kit.corrupt_next()
            await kit.make_readings(kit.readings_after)
            await gateway.wait_until(
                lambda: sum(dropped.values()) > before, "the damaged packet", kit.timeout
            )
            after = gateway.count(live=kit.live) + kit.readings_after
            await gateway.wait_for(after, kit.timeout, live=kit.live)
        assert_contract(kit, gateway, plugin)


async def check_clean_shutdown(kit: DriverKit) -> None:
    """Stopping the gateway closes every session and the device's link."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with _warm_gateway(kit, plugin, target) as gateway:
            pass  # the gateway stops here, with readings stored
        _expect(gateway.opened >= 1, "no session was opened")
        _expect(gateway.closed == gateway.opened, "a session was not closed")
        state = gateway.device.status.state if gateway.device.status else None
        _expect(state == LinkState.STOPPED, f"device {state}, not stopped")
        if target.idle is not None:
            await target.idle()
        assert_contract(kit, gateway, plugin)


async def check_refused_bond_parks(kit: DriverKit) -> None:
    """A device that refuses to bond is parked with an actionable reason, after one attempt."""
    plugin = kit.make_plugin()
    kit.refuse_bonding()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with run_gateway(plugin, target, device_id=kit.device_id) as gateway:

            def parked() -> bool:
                status = gateway.device.status
                return status is not None and status.state == LinkState.PARKED

            # half the check's time: a device that keeps being retried fails here, with the count
            await gateway.wait_until(parked, "the device parked", kit.timeout / 2)
            attempts = gateway.attempts
            if target.idle is not None:
                await target.idle()  # the link is closed, and stays so
            status = gateway.device.status
            reason = (status.reason if status is not None else None) or ""
        _expect("bond" in reason.lower(), f"the parking reason does not name the bond: {reason!r}")
        _expect(attempts == 1, f"{attempts} connection attempts before parking, not 1")
        # parked for good: no attempt between parking and the gateway's stop
        _expect(gateway.attempts == attempts, f"retried after parking: {gateway.attempts}")
        _expect(not gateway.stored, f"{len(gateway.stored)} readings stored from a refused device")
        _expect(gateway.closed == gateway.opened, "a session was not closed")


CHECKS: tuple[Callable[[DriverKit], Awaitable[None]], ...] = (
    check_readings_arrive,
    check_backfill_after_link_drop,
    check_corrupt_packet_survived,
    check_clean_shutdown,
)


#: Opt-in checks for a BLE driver whose kit implements `refuse_bonding()`.
BOND_CHECKS: tuple[Callable[[DriverKit], Awaitable[None]], ...] = (check_refused_bond_parks,)
# -- fault checks (opt-in through the fault hooks) -------------------------------------------------


async def _hook(kit: DriverKit, hook: str, *args: Any) -> Any:
    """Call a fault hook; skip the check when the kit does not support it."""
    try:
        return await getattr(kit, hook)(*args)
    except FaultUnsupportedError as exc:
        _skip(kit, exc)


def _skip(kit: DriverKit, exc: FaultUnsupportedError) -> NoReturn:
    import pytest  # only checks that skip need it

    pytest.skip(f"{type(kit).__name__} does not support this fault: DriverKit.{exc.hook}")


async def _drop_and_resume(kit: DriverKit, gateway: KitGateway) -> None:
    """Force a link drop, wait for the reconnect and `readings_after` new readings."""
    opened = gateway.opened
    await kit.force_link_drop()
    await gateway.wait_for_session(opened, kit.timeout)
    await _more_readings(kit, gateway)


async def check_records_damaged_in_memory(kit: DriverKit) -> None:
    """Records that stay damaged in memory are passed over and counted; all others arrive."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        damaged = set(await _hook(kit, "damage_in_memory", ("start", "middle", "end")))
        async with run_gateway(plugin, target, device_id=kit.device_id) as gateway:
            findings = gateway.device.findings
            await gateway.wait_until(
                lambda: findings.unreadable >= len(damaged), "the damaged records", kit.timeout
            )
            await _more_readings(kit, gateway)
        assert_contract(kit, gateway, plugin)
        stored = set(gateway.keys())
        _expect(not damaged & stored, f"damaged records stored: {sorted(damaged & stored)}")
        _expect(
            findings.unreadable == len(damaged),
            f"{findings.unreadable} records unreadable, {len(damaged)} damaged",
        )


async def _check_device_clock(kit: DriverKit, fault: str) -> None:
    """The device's calendar is `fault`, then right, then `fault` again (a link drop at each
    jump): times stay true, nothing is re-dated or stored twice, the offset is reported."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        offset = await _hook(kit, "set_device_clock", fault)
        async with _warm_gateway(kit, plugin, target) as gateway:
            await _hook(kit, "set_device_clock", "right")
            await _drop_and_resume(kit, gateway)
            await _hook(kit, "set_device_clock", fault)
            await _drop_and_resume(kit, gateway)
        assert_contract(kit, gateway, plugin)
        try:
            truth = [(r, kit.true_time(r)) for r in gateway.stored]
        except FaultUnsupportedError as exc:
            _skip(kit, exc)
        worst = max(abs(r.time - t) for r, t in truth)
        _expect(worst <= CLOCK_TOLERANCE, f"a reading {worst} away from the device's truth")
        twice = [t for t, n in Counter(t for _, t in truth).items() if n > 1]
        _expect(not twice, f"{len(twice)} true records stored twice, first {twice[:3]}")
        measured = gateway.device.findings.clock_offset_s
        if kit.reports_clock_offset:
            _expect(
                measured is not None and abs(measured - offset) <= 2 * CLOCK_TOLERANCE.seconds,
                f"clock offset {measured} s reported, the device's is {offset:.0f} s",
            )


async def check_device_clock_ahead_1h(kit: DriverKit) -> None:
    """The device's calendar runs one hour ahead."""
    await _check_device_clock(kit, "ahead_1h")


async def check_device_clock_behind_7_months(kit: DriverKit) -> None:
    """The device's calendar is seven months behind."""
    await _check_device_clock(kit, "behind_7_months")


async def check_device_clock_at_epoch(kit: DriverKit) -> None:
    """The device's calendar was reset to its epoch."""
    await _check_device_clock(kit, "epoch")


async def check_memory_reset(kit: DriverKit) -> None:
    """The memory is erased and sequence numbers start again: the new records arrive."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with _warm_gateway(kit, plugin, target) as gateway:
            before = len(gateway.stored)
            # The backfill may still be running: what is stored later of these sessions with a
            # higher seq is the old memory; a new session, or a lower seq, is the new sequence.
            sessions = {r.session for r in gateway.stored}
            top = max(r.seq for r in gateway.stored)
            await _hook(kit, "reset_memory")
            await kit.make_readings(kit.readings_after)
            await gateway.wait_until(
                lambda: (
                    sum(r.session not in sessions or r.seq < top for r in gateway.stored[before:])
                    >= kit.readings_after
                ),
                "readings of the new sequence",
                kit.timeout,
            )
        assert_contract(kit, gateway, plugin)


async def check_duplicated_and_out_of_order(kit: DriverKit) -> None:
    """New records sent twice and out of order are each stored once, in order."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        async with _warm_gateway(kit, plugin, target) as gateway:
            await _hook(kit, "disorder_records")
            await _more_readings(kit, gateway)
        assert_contract(kit, gateway, plugin)


async def check_large_backfill(kit: DriverKit) -> None:
    """A memory of `LARGE_BACKFILL` records on first contact is stored whole, in order."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        await _hook(kit, "fill_memory", LARGE_BACKFILL)
        async with run_gateway(plugin, target, device_id=kit.device_id) as gateway:
            await kit.make_readings(kit.readings_after)
            await gateway.wait_for(LARGE_BACKFILL + kit.readings_after, kit.timeout)
        assert_contract(kit, gateway, plugin)
        backfilled = sum(r.backfilled for r in gateway.stored)
        _expect(backfilled >= LARGE_BACKFILL, f"only {backfilled} readings backfilled")


async def check_link_drop_mid_report(kit: DriverKit) -> None:
    """The link drops in the middle of the first backfill: the next connection completes it."""
    plugin = kit.make_plugin()
    async with asyncio.timeout(kit.timeout), kit.start_emulator() as target:
        await _hook(kit, "drop_in_report")
        async with run_gateway(plugin, target, device_id=kit.device_id) as gateway:
            await gateway.wait_for_session(1, kit.timeout)
            await kit.make_readings(kit.readings_after)
            await gateway.wait_for(kit.readings_after, kit.timeout, live=kit.live)
        assert_contract(kit, gateway, plugin)
        _expect(gateway.opened >= 2, "the link did not drop")


FAULT_CHECKS: tuple[Callable[[DriverKit], Awaitable[None]], ...] = (
    check_records_damaged_in_memory,
    check_device_clock_ahead_1h,
    check_device_clock_behind_7_months,
    check_device_clock_at_epoch,
    check_memory_reset,
    check_duplicated_and_out_of_order,
    check_large_backfill,
    check_link_drop_mid_report,
)


def check_name(check: Callable[[DriverKit], Awaitable[None]]) -> str:
    """A check's name without the `check_` prefix (pytest ids)."""
    return check.__name__.removeprefix("check_")
