"""Bluetooth glucose meters (fingerstick) with the standard Glucose Service (GLS 0x1808).

Supported: meters that expose the Bluetooth SIG Glucose Service with a Record Access Control
Point, e.g. i-SENS CareSens BLE meters (CareSens N Premier BLE, CareSens Dual) and Roche
Accu-Chek Guide / Instant / Aviva Connect. Transport: BLE through bleak, on BlueZ or on the
hub's Bumble stack (`[ble]`).

A meter is not connected all the time: it advertises for a while after a measurement (or when
its Bluetooth button is pressed). The driver waits for it to advertise (`scan_timeout`),
connects, asks for the records with a sequence number after the newest one already stored (all
of them on the first connection), publishes them, and ends once the meter closes the link; the
supervisor then scans again after its backoff. Nothing is lost while the hub is away: the
meter's memory is read from where the store stops.

Each reading's id is made of the meter's serial number (Device Information; the Bluetooth
address when the meter has none) and the record's sequence number; its `session` is the
constant "gls". Meal, tester and health from the meter's Measurement Context, and the meter's
status bits, become status flags (meal_preprandial, tester_self, health_under_stress,
device_battery_low, ...). A result the meter marks "higher / lower than the device can process" is
published as out_of_range "high" / "low", never as a number. Control solution tests and
results without a value (strip errors) are not published. Meters keep local time without a
zone: each time is read in `tz`.

Options (all optional; without address and name the first meter advertising the Glucose
Service is used):

  address       the meter's Bluetooth address, AA:BB:CC:DD:EE:FF
  name          the advertised name, or its beginning (e.g. "meter+" for Accu-Chek Guide)
  scan_timeout  seconds to wait for the meter to advertise per attempt, > 0 (default 600)
  bond          "auto" (default: bond when the meter answers "insufficient authentication"),
                "always" (bond on every connection) or "never" (a meter that requires a bond
                is then refused and parked); a meter that refuses the bond is parked too
                (docs/ble.md, "Bonding"). Meters that ask for a PIN must be paired once
                beforehand (bluetoothctl on BlueZ): the hub has no display or keyboard.
  tz            the zone of the meter's clock: "local" (default: the hub's zone, from TZ or
                /etc/localtime), an IANA name ("Europe/Berlin", "UTC") or an offset ("+01:00")
  linger        seconds to stay connected after the transfer for a new result if the meter
                does not close the link itself, >= 0 (default 10)

Example::

    [[devices]]
    id = "meter"
    driver = "glucose"
    address = "C0:26:DA:01:02:03"
    tz = "Europe/Berlin"

Limits: sequence numbers are 16 bits (65 536 results, decades of fingersticks); a meter whose
memory is reset and numbered again from 1 repeats ids already stored (those results would be
dropped as duplicates: give the device a new id).
Emulator for tests and `gatewayd simulate`: `drivers.glucose.emulator`.
"""

from __future__ import annotations

from drivers.glucose.options import GlucoseOptions, parse_options
from drivers.glucose.session import GlucoseSession
from gatewayd.plugin import DeviceMatch, DriverPlugin, Emulator
from protocols.glucose.uuids import GLUCOSE_SERVICE

__all__ = ["GlucoseOptions", "GlucoseSession", "plugin"]

plugin: DriverPlugin[GlucoseOptions] = DriverPlugin(
    name="glucose",
    transport="ble",
    help=__doc__ or "",
    parse_options=parse_options,
    open=GlucoseSession,
    # Accu-Chek meters advertise "meter+" and their serial number (the `name` option's example).
    match=DeviceMatch(ble_service_uuids=(GLUCOSE_SERVICE,), ble_name_prefixes=("meter+",)),
    emulator=Emulator("glucose", "drivers.glucose.serve:simulate"),
    time_base="device",  # times come from the device's own clock, not the hub's
)
