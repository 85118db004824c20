"""Generic GATT pieces shared by the BLE families (CGMS, Glucose, Dexcom G6); no family code.

* `uuids` - `uuid16`, `normalize_uuid`, Device Information Service UUIDs.
* `session` - `Request` / `RequestKind` (what a sans-I/O session asks its driver to do) and the
  events every session shares: `SessionEvent`, `RecordRejected`, `ProcedureFailed`,
  `UnexpectedData`.
* `collector` - `CollectorBase`, the awaited-request slot of the CGMS and Glucose collectors.
* `racp` - Record Access Control Point (0x2A52), CGMS and GLS flavours.
* `date_time` - GATT Date Time (`DATE_TIME`, `DateTime`, `add_minutes`).
* `sample` - the type / sample-location octet (`SampleType`, `SampleLocation`).

Import each name from the module that defines it; this package re-exports nothing.
"""
