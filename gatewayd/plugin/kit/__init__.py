"""The driver test kit: a driver package proves the driver contract against its own emulator.

A separate import from `gatewayd.plugin` (``from gatewayd.plugin import kit``): it runs the
daemon's supervisor, store and publisher, which a driver package must not load at run time.

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

    from gatewayd.plugin import BleConfig, kit
    from gatewayd.plugin.emulation import bumble_session

    class MyKit(kit.DriverKit):
        def make_plugin(self):
            return mydriver.plugin

        @contextlib.asynccontextmanager
        async def start_emulator(self):
            async with my_emulator() as (host, emulator):
                self.emulator = emulator
                yield kit.Target(
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

    @pytest.mark.parametrize("check", kit.CHECKS, ids=kit.check_name)
    async def test_my_driver_honours_the_contract(check):
        await check(MyKit())

    async def test_a_refused_bond_parks_my_device():    # when MyKit.refuse_bonding() exists
        await kit.check_refused_bond_parks(MyKit())

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
  `drop_in_report`): the next connection completes it, nothing lost or repeated;
* `check_record_in_flight_before_reports` - each of `IN_FLIGHT_REPORTS` (10) reports begins
  with the newest record, a live one the device had queued when it read the request (hook
  `records_in_flight`), and records stay damaged at the start and the middle of the memory
  (hook `damage_in_memory`): those are passed over, every other record is stored once, in order.

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
    async def records_in_flight(self, reports: int) -> None  # before the first connection

`expected_sequence(readings)` returns every (session, seq) the device held from the oldest to
the newest of `readings` within each session (the keys that must be stored; records damaged
in memory excluded). A serial driver's `Target` has no `ble` and no `radio` (its options name
the emulator's port). `make_readings(n)` may make the device produce readings on demand (a
meter's new measurement); the default does nothing (a CGM produces them by itself).
`run_gateway(plugin, target)` gives the harness to tests of the driver's own (`KitGateway`:
`stored`, `yielded`, `attempts`, `wait_for()`, the supervisor's `device` with its `dropped`
counter and its `findings`).
"""

from gatewayd.plugin.kit.checks import (
    BOND_CHECKS,
    CHECKS,
    assert_contract,
    check_backfill_after_link_drop,
    check_clean_shutdown,
    check_corrupt_packet_survived,
    check_name,
    check_readings_arrive,
    check_refused_bond_parks,
)
from gatewayd.plugin.kit.faults import (
    FAULT_CHECKS,
    check_device_clock_ahead_1h,
    check_device_clock_at_epoch,
    check_device_clock_behind_7_months,
    check_duplicated_and_out_of_order,
    check_large_backfill,
    check_link_drop_mid_report,
    check_memory_reset,
    check_record_in_flight_before_reports,
    check_records_damaged_in_memory,
)
from gatewayd.plugin.kit.gateway import KitGateway, run_gateway
from gatewayd.plugin.kit.kit import (
    CLOCK_FAULTS,
    CLOCK_TOLERANCE,
    IN_FLIGHT_REPORTS,
    LARGE_BACKFILL,
    DriverKit,
    FaultUnsupportedError,
    Key,
    Target,
)

__all__ = [
    "BOND_CHECKS",
    "CHECKS",
    "CLOCK_FAULTS",
    "CLOCK_TOLERANCE",
    "FAULT_CHECKS",
    "IN_FLIGHT_REPORTS",
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
    "check_record_in_flight_before_reports",
    "check_records_damaged_in_memory",
    "check_refused_bond_parks",
    "run_gateway",
]
