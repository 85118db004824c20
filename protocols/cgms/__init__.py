"""Bluetooth SIG Continuous Glucose Monitoring Service (CGMS 0x181F; protocols.md §1).

* `uuids` - the service and characteristic UUIDs.
* `measurement` - CGM Measurement records (0x2AA7): `CgmMeasurement`, `parse_measurements`,
  `decode_records`, `build_measurements`, the `StatusOctetOrder` quirk.
* `state` - `SensorStatus`, CGM Feature / Status, Session Start / Run Time.
* `socp` - CGM Specific Ops Control Point (0x2AAC).
* `session` - `CgmsCollector`, the sans-I/O CGMP collector (h11 style) and its events.
* `release` - `ReleaseRule`: which records of a session may go to the store (only a gap-free
  prefix), and when to ask the sensor again for a gap; pure, no I/O, no clock.

RACP (0x2A52, shared with GLS) is `protocols.gatt.racp`. Import each name from the module that
defines it; this package re-exports nothing.
"""
