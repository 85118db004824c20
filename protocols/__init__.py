"""Pure packet codecs and sans-I/O device sessions: bytes in, events out; no I/O, no clock.

Layout (each module docstring documents its public API and the spec facts behind it; packages
re-export nothing, so every name is importable from exactly one module):

* `errors` - `ProtocolError` (a ValueError, `.data` = offending bytes), `CrcError`,
  `ControlPointError` (`.response_code` for servers/emulators).
* `codec` - the construct boundary: `parse_construct` / `build_construct` (and the compiled
  hot-path variant) turn every construct error into `ProtocolError`; `enum_or_int`.
* `crc` - CRC-16/MCRF4XX (CGMS E2E-CRC) and CRC-16/XMODEM (Dexcom), one append / split helper
  pair per algorithm.
* `sfloat` - IEEE 11073 16-bit SFLOAT (`SFloat`, `SFloatSpecial`).
* `gatt/` - what the BLE families share: UUID helpers, `Request` / session events, the
  collector base, RACP, Date Time, sample type / location.
* `cgms/` - Continuous Glucose Monitoring Service (0x181F): measurement, state, SOCP, the
  collector session and the release rule.
* `glucose/` - Glucose Service (0x1808): measurement, context, feature, the meter clock (CTS),
  the collector session.
* `dexcom_g6/` - Dexcom G5/G6 transmitter BLE protocol: framing, glucose, auth, backfill,
  control, `G6Session`.
* `dexcom_receiver/` - Dexcom G4/G5/G6 receiver USB protocol: frames, commands, records.

Families import the shared layer (`errors`, `codec`, `crc`, `sfloat`, `gatt`), never each
other (import-linter contract in pyproject.toml).
"""
