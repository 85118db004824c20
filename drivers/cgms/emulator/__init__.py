"""An emulated Bluetooth CGMS sensor (0x181F): a Bumble GATT server built from `protocols.cgms`.

Used by the driver's tests (in this process, on a virtual link: `emulated_cgms()`) and by
``gatewayd simulate --device cgms --hci tcp-server:127.0.0.1:PORT`` (its own process: `serve`),
so a gateway reads it with unmodified bleak code over Bumble, as it would a real sensor.

Options (``--set KEY=VALUE``; `SensorConfig` fields in Python):

  serial          Device Information serial number (default "CGMSEMU0001")
  name            advertised name (default "CGMS Emulator")
  interval        minutes between records, 1-254 (default 5)
  age             minutes the sensor session has run at start: its records are in memory and a
                  first connection backfills them (default 1440)
  replay          minutes of `age` whose records are made live, `speed` times faster than real
                  time, before the sensor runs in real time (default 0); no record is ever dated
                  after the wall clock, and CGM Status always reports the true "now"
  speed           replay acceleration, >= 1 (default 1)
  seed            the simulated person (glucose trace of drivers.emulation.physiology; default 1)
  e2e_crc         E2E-CRC on every value (default true); trend / quality: records carry them
                  (default true)
  annunciation    status names set on every record and in CGM Status, e.g.
                  ["calibration_recommended"] (default none; out-of-range records add
                  result_below/above_device_range themselves)
  order           status-octet flag mapping, "sig" or "nordic" (default "sig")
  pack            records per notification at most (default 4; never over ATT_MTU - 3)
  capacity        records the memory keeps (default 20000)
  stopped         the session starts stopped: SOCP "start the session" begins one (default false)
  bonding         values need an encrypted link: the collector has to pair (default false)
  refuse_bonding  refuse every pairing request (default false; with bonding the gateway parks
                  the sensor: "bonding refused by the sensor")
  ranges          RACP "within range" supported (default true; false answers "operator not
                  supported", as some devices do)
  away            seconds a SIGUSR1 link drop keeps the sensor out of range, not advertising,
                  so records pile up for the backfill (default 0: back at once)
  restart_age / restart_replay
                  age and replayed minutes of a session begun by SOCP start or SIGHUP (default 0)

Faults (for the driver kit's fault checks, gatewayd.plugin.kit.FAULT_CHECKS):

  damaged         records that stay damaged in memory, every time they are read: offsets, or
                  "start" / "middle" / "end" of the memory at start, e.g. ["start", 300]
                  (a wrong E2E-CRC; without E2E-CRC flags that promise absent fields)
  clock_skew      seconds the sensor's calendar is off: its Session Start Time only, e.g. 3600
                  or -18403200 (default 0)
  clock_epoch     the calendar was reset to its epoch, 2000-01-01, at start (default false)
  disorder        times two new live records go out newest first, the older one twice
                  (default 0)
  drop_in_report  the link drops after this many records of the first RACP report (default
                  none)
  in_flight       times a RACP report begins with the newest record, as a live notification
                  the sensor had queued when it read the request (default 0)
  A memory reset (offsets start again) is a new sensor session: SIGHUP, or SOCP start.

Hooks of the `gatewayd simulate` process: SIGUSR1 drops the link, SIGUSR2 damages the next
notified record (CRC mismatch, or a broken Size byte without E2E-CRC), SIGHUP starts a new
sensor session. In-process: the `CgmsPeripheral` methods `drop_link(away)`, `drop_after(n)`,
`drop_in_report(n)`, `corrupt_next()`, `disorder_next(n)`, `in_flight_next(n)`,
`restart_session()`, `stop_session()`, and its sensor's `damage(...)`, `clock_skew`,
`reset_clock()`.
"""

from drivers.cgms.emulator.peripheral import CgmsPeripheral
from drivers.cgms.emulator.sensor import CgmsSensor, SensorConfig
from drivers.cgms.emulator.serve import emulated_cgms, parse_emulator_options, simulate

__all__ = [
    "CgmsPeripheral",
    "CgmsSensor",
    "SensorConfig",
    "emulated_cgms",
    "parse_emulator_options",
    "simulate",
]
