"""A G5/G6 `Glucose` event as a gatewayd `Reading`, and the reading id scheme.

* id: (driver ``dexcom_g6``, serial = the transmitter id, session = `session_id(start)`, seq =
  the record's transmitter time). The session is the sensor session's start in transmitter
  seconds since activation (from the time message), zero-padded to 10 digits so the ids sort as
  strings; the seq is the record's own timestamp in transmitter seconds. Both are the
  transmitter's own integers: the same measurement read live (0x31/0x4F) and later from the
  backfill stream has the same timestamp, so it has the same id (the wall-clock time the hub
  derives, activation + timestamp, moves by the link latency between connections and is not
  part of the id). Not timestamp // 300: measurements are not exactly 300 s apart (299 in the
  verified capture, protocols.md §2.6), so a division can put two of them on one seq (one
  would be dropped as a duplicate) or skip one. The live message's own sequence counter is not
  in backfill records and is not used.
* glucose: CGMBLEKit's rule (`Glucose.glucose_mgdl`): calibration state 6/7/14 and 40..400
  mg/dL; a reliable value below 40 / above 400 is out_of_range "low" / "high". A record in any
  other state (warm-up, stopped, sensor failed, "???") carries no glucose: it is skipped
  (`Skip`), as xDrip and CGMBLEKit do.
* status: the calibration state's flags (`Glucose.flags`: "needs_calibration",
  "calibration_error", "battery_low", ...), plus "display_only" when the transmitter marks the
  value display-only.
* trend: the transmitter's rate (0.1 mg/dL/min units) and its Nightscout arrow
  (`Direction.from_rate`, xDrip thresholds, protocols.md §2.9); None / NONE when it has none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from gatewayd.plugin import Direction, OutOfRange, Reading
from protocols.dexcom_g6.session import Glucose

DRIVER: Final = "dexcom_g6"
#: The status flag of a value the transmitter marks "display only" (§2.5).
DISPLAY_ONLY: Final = "display_only"
_SESSION = re.compile(r"([0-9]{10})(?:-([0-9]+))?")


def session_id(start: int, epoch: int | None = None) -> str:
    """The `Reading.session` of a sensor session started at transmitter time `start`, in the
    clock epoch `epoch` (None: the first one the hub saw; else the transmitter's activation, in
    Unix seconds, as anchored when its clock was found gone back - see `DexcomG6Session`)."""
    return f"{start:010d}" if epoch is None else f"{start:010d}-{epoch}"


def parse_session(session: str) -> int | None:
    """The session start of one of our session ids, or None when it is not one."""
    match = _SESSION.fullmatch(session)
    return int(match[1]) if match else None


def session_epoch(session: str) -> int | None:
    """The clock epoch of one of our session ids (None: the first, or not one of ours)."""
    match = _SESSION.fullmatch(session)
    return int(match[2]) if match and match[2] else None


@dataclass(frozen=True, slots=True)
class Skip:
    """A glucose record that is deliberately not a reading (`reason`: the state name, e.g.
    "warmup", or "no_time" / "no_session")."""

    reason: str
    transmitter_time: int


def to_reading(
    event: Glucose,
    *,
    device: str,
    serial: str,
    session: int | None,
    received: datetime,
    epoch: int | None = None,
) -> Reading | Skip:
    """The `Reading` of one glucose event of sensor session `session`, or why it is none."""
    ts = event.transmitter_time
    if event.time is None:
        return Skip("no_time", ts)
    if session is None:
        return Skip("no_session", ts)
    mgdl = event.glucose_mgdl
    side = event.out_of_range
    if mgdl is None and side is None:
        return Skip(event.state_name, ts)
    status = event.flags + ((DISPLAY_ONLY,) if event.display_only else ())
    out: OutOfRange | None = "low" if side == "low" else "high" if side == "high" else None
    return Reading(
        device=device,
        driver=DRIVER,
        serial=serial,
        session=session_id(session, epoch),
        seq=ts,
        time=event.time,
        received=received,
        glucose_mgdl=mgdl,  # whole mg/dL, as the transmitter gives them
        out_of_range=out,
        trend_mgdl_min=event.trend,
        direction=Direction.from_rate(event.trend),
        status=status,
        backfilled=event.backfill,
    )
