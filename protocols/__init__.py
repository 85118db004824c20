"""Pure packet codecs and sans-I/O device sessions: bytes in, events out; no I/O, no clock.

Modules (each module docstring documents its public API and the spec facts behind it):

* `errors` - `ProtocolError` (a ValueError, `.data` = offending bytes), `CrcError`,
  `ControlPointError` (`.response_code` for servers/emulators).
* `sfloat` - IEEE 11073 16-bit SFLOAT (`SFloat`, `SFloatSpecial`); `crc` - CRC-16/MCRF4XX
  (CGMS E2E-CRC) and CRC-16/XMODEM (Dexcom).
* `gatt` - UUID helpers, Device Information UUIDs, `Request`/`RequestKind` (what a session
  asks its driver to do), shared session events, Date Time, sample type/location.
* `racp` - Record Access Control Point (0x2A52), CGMS and GLS flavours.
* `cgms` - Continuous Glucose Monitoring Service (0x181F): measurement records, plus the state
  characteristics (`cgms_state`) and the Specific Ops Control Point (`cgms_socp`) re-exported.
* `glucose` - Glucose Service (0x1808): measurement, feature, context (`glucose_context`).
* `cgms_session` / `glucose_session` - the collector procedures as sans-I/O state machines
  (`receive()` -> events, `next_request()` -> `Request`, `timeout()`), h11 style.
* `dexcom_g6` - Dexcom G5/G6 transmitter BLE protocol; import from it (its docstring is the API
  reference). It re-exports `dexcom_g6_codec` (UUIDs, opcodes, CRC-16/XMODEM framing),
  `dexcom_g6_glucose` (time, glucose records, calibration states), `dexcom_g6_auth`
  (authentication messages, the AES transmitter-id hash), `dexcom_g6_backfill` (request, frame
  stream, summary) and `dexcom_g6_session` (`G6Session`, the sans-I/O hub side: auth, bond,
  time, glucose, backfill). Used by `drivers.dexcom_g6` (driver and Bumble emulator).
"""
