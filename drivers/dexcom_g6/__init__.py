"""Dexcom G5 and G6 transmitters, read directly over Bluetooth LE (no phone, no receiver).

Supported: Dexcom G5 and G6 transmitters (G6 firmware 1.6.5.x and the factory-calibrated
"rev2/Firefly" 2.x, G6+; the Dexcom ONE transmitter uses the same protocol but is untested).
Not supported: G7, ONE+ and Stelo (their J-PAKE authentication is another protocol). Transport:
BLE through bleak, on BlueZ or on the hub's Bumble stack (`[ble]`).

The transmitter wakes every 5 minutes, measures, and advertises as ``Dexcom`` + the last two
characters of its id for a few seconds. Each wake-up is one session: the driver scans for it
(`scan_timeout`), connects, authenticates with the transmitter id (AES hash of a random token),
bonds when the transmitter asks (Just Works pairing: no PIN), reads the transmitter's clock (to
place readings on the wall clock), the current glucose, and backfills from the transmitter's
memory everything after the newest stored reading, then disconnects; the supervisor scans again
for the next wake-up. The live value is published only once the time before it is backfilled, so
a missed wake-up, an outage of the hub or a dropped link leaves no gap (within the transmitter's
memory). A transmitter that fails authentication (wrong transmitter_id) is parked, not retried.

Readings: id = (transmitter id, sensor session start in transmitter seconds, the record's
transmitter timestamp): a value read live and again from the backfill is one reading. Time =
the hub's now - (transmitter now - record timestamp). A transmitter clock that went back (a
reset) starts a new clock epoch: session ids after it end in "-<activation, Unix s>", so no id
collides and nothing stored is re-dated; a jump is shown as the device's clock_offset_s. A record
damaged in the transmitter's memory is asked again twice, then passed over (records_unreadable).
mg/dL as the transmitter gives them; values only in calibration states OK / needs calibration
(CGMBLEKit); below 40 / above 400 they are out_of_range "low" / "high". Records in any other state
(warm-up, stopped, calibration error, sensor failed, "???", expired) carry no value: they are
not published, and logged as record_skipped with the state. Status flags: "needs_calibration",
"battery_low", and "display_only" for values the transmitter marks display-only. Trend: the
transmitter's rate (mg/dL/min) with the Nightscout arrow.

Options:

  transmitter_id  required: the 6 letters/digits printed on the transmitter (e.g. 8G1234)
  alternate       true: authenticate in the transmitter's "alternate" slot (end byte 0x01), so
                  the hub can stay connected next to the official phone app (default false)
  bond            "auto" (default, or true: bond when the transmitter asks for it, by its
                  bond request or an "insufficient authentication" answer), "always" (also
                  bond right after connecting) or "never" (or false: no bond request; a
                  transmitter that requires a bond is refused and parked). A transmitter that
                  refuses the bond is parked too (docs/ble.md, "Bonding").
  g6_glucose      ask glucose with the G6 opcode 0x4E instead of 0x30 (default false; some
                  firmwares may only answer one of them)
  scan_timeout    seconds to wait for a wake-up per attempt, > 0 (default 330: one 5-minute
                  interval and a margin)
  history         seconds of the transmitter's memory fetched on the first connection, when
                  nothing of this transmitter is stored yet, >= 0 (default 86400; 0: live only)
  address         optional Bluetooth address AA:BB:CC:DD:EE:FF, when two transmitters ending in
                  the same two characters are in range (else the first one heard is used, and
                  a wrong one fails authentication and parks the device)

Example (with supervisor backoff kept short, so that a failed attempt never makes the hub miss
more than one wake-up)::

    [supervisor]
    backoff_min = 1
    backoff_max = 60

    [[devices]]
    id = "cgm"
    driver = "dexcom_g6"
    transmitter_id = "8G1234"
    alternate = true

What is verified and what is assumed (protocols.md §2 confidence marks): VERIFIED against
published vectors: the authentication hash, the CRC framing, the time, glucose (incl.
display-only) and backfill messages and the backfill length/CRC check. [H] (several open
implementations agree): UUIDs, advertising name and service, opcodes, the auth/bond sequence,
calibration state values. [M]: what the alternate end byte does to the official app's slot,
Just Works pairing, 0x4E/0x4F on a given firmware. Ours [L]: which calibration states become
which status flags; that a backfill record carries the same timestamp as the live message of the
same measurement (true for the transmitter's stored record; if a firmware differed, a value
would be published twice under two ids, never lost); that a backfill of 255 frames may be cut.
Untested on hardware here: every test runs against the emulator (`drivers.dexcom_g6.emulator`,
`gatewayd simulate --device dexcom-g6`).
"""

from __future__ import annotations

from drivers.dexcom_g6.options import G6Options, expected_interval, parse_options
from drivers.dexcom_g6.session import DexcomG6Session
from gatewayd.plugin import DeviceMatch, DriverPlugin, Emulator
from protocols.dexcom_g6.framing import ADVERTISED_SERVICE

__all__ = ["DexcomG6Session", "G6Options", "plugin"]

plugin: DriverPlugin[G6Options] = DriverPlugin(
    name="dexcom_g6",
    transport="ble",
    help=__doc__ or "",
    parse_options=parse_options,
    open=DexcomG6Session,
    match=DeviceMatch(
        ble_service_uuids=(ADVERTISED_SERVICE,),
        ble_name_pattern=r"Dexcom[0-9A-Z]{2}",
        # The advertised name holds only the id's last two characters.
        required_options=(("transmitter_id", "the 6 characters printed on the transmitter"),),
    ),
    emulator=Emulator("dexcom-g6", "drivers.dexcom_g6.serve:simulate"),
    expected_interval=expected_interval,
)
