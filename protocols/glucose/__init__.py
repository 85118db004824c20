"""Bluetooth SIG Glucose Service (GLS 0x1808, fingerstick meters; protocols.md §1.13).

* `uuids` - the service and characteristic UUIDs.
* `measurement` - Glucose Measurement (0x2A18): `GlucoseMeasurement`, `GlucoseStatus`,
  `GlucoseUnit`, `MGDL_PER_MMOLL`.
* `context` - Glucose Measurement Context (0x2A34).
* `feature` - Glucose Feature (0x2A51).
* `clock` - Current Time Service Current Time (0x2A2B): the meter's clock.
* `session` - `GlucoseCollector`, the sans-I/O RACP transfer with measurement/context pairing.

RACP (0x2A52, shared with CGMS) is `protocols.gatt.racp`. Import each name from the module that
defines it; this package re-exports nothing.
"""
