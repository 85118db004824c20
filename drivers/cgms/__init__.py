"""Bluetooth CGM sensors with the standard Continuous Glucose Monitoring Service (CGMS 0x181F).

Supported: sensors that expose the Bluetooth SIG CGM Service and Profile with a Record Access
Control Point, e.g. the Roche Accu-Chek SmartGuide (the one CGM on the market known to use it,
protocols.md §5.2), reference designs (Nordic nRF5 / nRF Connect `peripheral_cgm`, the
ehealthinnovation BLECgmSim) and this project's emulator. Not supported here (proprietary
protocols): Dexcom, FreeStyle Libre, CareSens Air, Medtrum, Medtronic. Transport: BLE through
bleak, on BlueZ or on the hub's Bumble stack (`[ble]`).

The driver stays connected: it finds the sensor (advertised service 0x181F, or `address` /
`name`), connects, bonds when the sensor demands it, reads Device Information (manufacturer,
model, serial, firmware), enables notifications and indications, reads CGM Feature (E2E-CRC,
trend, quality), Session Start Time, CGM Status and Session Run Time, backfills with RACP
everything after the newest stored reading of this sensor session (all of the sensor's memory on
the first connection or after a sensor session change), then publishes live records. A jump in
the time offsets larger than the interval is backfilled at once; a new sensor session (a start
that moved, offsets going back, SOCP start) is detected and backfilled in full. Records whose
E2E-CRC fails are counted, logged with their hex and dropped, then fetched again from the
sensor's memory; one that is still damaged after 2 renewed reads is passed over (counted in
`records_unreadable`, logged once) and the records around it are published. Nothing that the
sensor holds intact is lost across link drops.

Readings: id = (serial from Device Information, else the Bluetooth address; session = the sensor
session's start time "YYYY-MM-DDTHH:MM:SSZ", so a new session gives new ids; seq = the record's
time offset in minutes). The time is session start + offset. -INF / +INF (and NRes / NaN with a
"below / above" status bit) are published as out_of_range "low" / "high", never as numbers; the
Sensor Status Annunciation becomes status flags ("session_stopped", "device_battery_low",
"calibration_recommended", "result_below_hypo" ... see protocols.cgms).
The session start is derived from the hub's clock (now - CGM Status offset) unless the sensor's
Session Start Time agrees with it within 2 minutes; the difference (the sensor's calendar minus
the hub's) is reported as `clock_offset_s`. Keep the hub's clock synchronised (NTP), as a
Raspberry Pi has no RTC.

Options (all optional; without address and name the first sensor advertising 0x181F is used):

  address             the sensor's Bluetooth address, AA:BB:CC:DD:EE:FF
  name                the advertised name, or its beginning
  interval            minutes between records, 1-254 (default: asked from the sensor through
                      SOCP, else learnt from the backfill, else 5); gaps longer than this are
                      backfilled at once
  status_octet_order  "sig" (default) or "nordic": how flag bits 5-7 map to the annunciation
                      octets (devices disagree, protocols.md §1.3)
  start_session       true: start a stopped sensor session (SOCP) on connect (default false)
  scan_timeout        seconds to wait for the sensor to advertise per attempt, > 0 (default 60)
  bond                "auto" (default: bond when the sensor answers "insufficient
                      authentication / encryption"), "always" (bond on every connection) or
                      "never" (a sensor that requires a bond is refused and parked); a sensor
                      that refuses the bond is parked too (docs/ble.md, "Bonding"). A sensor
                      that asks for a PIN must be paired once beforehand (bluetoothctl on BlueZ).

Example::

    [[devices]]
    id = "smartguide"
    driver = "cgms"
    name = "SmartGuide"

Emulator for tests and ``gatewayd simulate --device cgms``: `drivers.cgms.emulator` (docs/ble.md).
"""

from __future__ import annotations

from drivers.cgms.options import CgmsOptions, expected_interval, parse_options
from drivers.cgms.session import CgmsSession
from gatewayd.plugin import DeviceMatch, DriverPlugin, Emulator
from protocols.cgms.uuids import CGMS_SERVICE

__all__ = ["CgmsOptions", "CgmsSession", "plugin"]

plugin: DriverPlugin[CgmsOptions] = DriverPlugin(
    name="cgms",
    transport="ble",
    help=__doc__ or "cgms",
    parse_options=parse_options,
    open=CgmsSession,
    match=DeviceMatch(ble_service_uuids=(CGMS_SERVICE,)),
    emulator=Emulator("cgms", "drivers.cgms.emulator:simulate"),
    expected_interval=expected_interval,
)
