"""A Glucose Service record (measurement + context) as a gatewayd `Reading`.

* id: (driver ``glucose``, meter serial, session, sequence number). The meter's sequence
  number is its record key; the serial already names the meter, so the session is a constant
  (`SESSION`) until the meter's memory is reset and its sequence numbers start again: then
  ``gls-`` and the hub's time the reset was seen (`era_session`).
* glucose: kg/L x 100 000 or mol/L x 18.0156 x 1000, mg/dL with one decimal.
* out of range: the status bits "result higher / lower than the device can process" (SIG bits
  5 / 6), or a concentration of +INFINITY / -INFINITY, give an `out_of_range` marker, never the
  number the meter may have put beside it.
* status: the measurement's status bits (``device_battery_low``, ``strip_insertion_error``,
  ``result_above_device_range``... as `protocols.cgms.state.status_names` names CGMS bits) and
  the context's meal, tester and health (``meal_preprandial``, ``tester_self``,
  ``health_under_stress``...).
* time: base time + offset read in the meter's zone, anchored to the hub's clock by the session
  (`drivers.glucose.clock`: ``dated``; a record it cannot anchor keeps the meter's calendar and
  gets the status ``device_clock_unverified``); a meter whose clock was never set (an invalid
  date) gives the time the hub received it and the status ``time_unknown``.
* skipped (`Skip`): control solution tests (sample type or location "control solution": not
  the person's glucose) and results without a value (a strip error: the meter shows an error,
  there is no glucose to publish).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from drivers.glucose.clock import UNVERIFIED
from gatewayd.plugin import OutOfRange, Reading
from protocols.gatt.sample import SampleLocation, SampleType
from protocols.glucose.context import GlucoseContext, Health, Meal, Tester
from protocols.glucose.measurement import GlucoseStatus
from protocols.glucose.session import GlucoseReading
from protocols.sfloat import SFloatSpecial

DRIVER = "glucose"
#: The `Reading.session` of a meter's readings until its memory is reset (sequence numbers
#: start again): then `era_session`.
SESSION = "gls"


def era_session(at: datetime) -> str:
    """The session of the records a meter stores after a memory reset seen at hub time `at`."""
    return f"{SESSION}-{at:%Y%m%d%H%M%S}"


def is_gls_session(session: str) -> bool:
    """Whether `session` is one this driver gives readings."""
    return session == SESSION or session.startswith(SESSION + "-")


#: Status flag names of the measurement's Sensor Status Annunciation bits: the members' names in
#: lower case, as `protocols.cgms.state.status_names` names the CGMS bits they share.
STATUS_NAMES: dict[int, str] = {int(flag): str(flag.name).lower() for flag in GlucoseStatus}

_MEAL: dict[int, str] = {
    Meal.PREPRANDIAL: "meal_preprandial",
    Meal.POSTPRANDIAL: "meal_postprandial",
    Meal.FASTING: "meal_fasting",
    Meal.CASUAL: "meal_casual",
    Meal.BEDTIME: "meal_bedtime",
}
_TESTER: dict[int, str] = {
    Tester.SELF: "tester_self",
    Tester.HEALTH_CARE_PROFESSIONAL: "tester_health_care_professional",
    Tester.LAB_TEST: "tester_lab_test",
}
_HEALTH: dict[int, str] = {
    Health.MINOR_HEALTH_ISSUES: "health_minor_issues",
    Health.MAJOR_HEALTH_ISSUES: "health_major_issues",
    Health.DURING_MENSES: "health_during_menses",
    Health.UNDER_STRESS: "health_under_stress",
    Health.NO_HEALTH_ISSUES: "health_no_issues",
}
TIME_UNKNOWN = "time_unknown"


@dataclass(frozen=True, slots=True)
class Skip:
    """A record that is deliberately not a reading (`reason`: ``control_solution``,
    ``no_value``)."""

    reason: str
    sequence_number: int


def _name(table: dict[int, str], value: int | None) -> str:
    return "" if value is None else table.get(value, "")


def status_names(status: int) -> tuple[str, ...]:
    """Names of the set status bits, low bit first ("reserved_bit_12" for reserved ones)."""
    return tuple(
        STATUS_NAMES.get(1 << bit, f"reserved_bit_{bit}") for bit in range(16) if status >> bit & 1
    )


def context_status(context: GlucoseContext | None) -> tuple[str, ...]:
    """The meal, tester and health of a context as status names (reserved values left out)."""
    if context is None:
        return ()
    names = (
        _name(_MEAL, context.meal),
        _name(_TESTER, context.tester),
        _name(_HEALTH, context.health),
    )
    return tuple(n for n in names if n)


def out_of_range(event: GlucoseReading) -> OutOfRange | None:
    """Which side of the meter's range the result is on, or None for an ordinary value."""
    m = event.measurement
    status = m.status or GlucoseStatus(0)
    if status & GlucoseStatus.RESULT_ABOVE_DEVICE_RANGE:
        return "high"
    if status & GlucoseStatus.RESULT_BELOW_DEVICE_RANGE:
        return "low"
    if m.concentration is SFloatSpecial.POSITIVE_INFINITY:
        return "high"
    if m.concentration is SFloatSpecial.NEGATIVE_INFINITY:
        return "low"
    return None


def is_control_solution(event: GlucoseReading) -> bool:
    """A control solution test (sample type or location says so)."""
    m = event.measurement
    return (
        m.sample_type == SampleType.CONTROL_SOLUTION
        or m.sample_location == SampleLocation.CONTROL_SOLUTION
    )


def to_reading(
    event: GlucoseReading,
    *,
    device: str,
    serial: str,
    received: datetime,
    dated: Callable[[datetime, datetime], tuple[datetime, bool]] | None = None,
    session: str = SESSION,
) -> Reading | Skip:
    """The `Reading` of one record, or why it is not one; `dated(time, received)` maps the
    meter's calendar to the hub's clock (and whether it could; default: the calendar as it is,
    unverified)."""
    m = event.measurement
    seq = m.sequence_number
    if is_control_solution(event):
        return Skip("control_solution", seq)
    side = out_of_range(event)
    mgdl = None if side is not None else m.glucose_mgdl
    if side is None and mgdl is None:
        return Skip("no_value", seq)
    status = list(status_names(m.status or 0))
    status.extend(context_status(event.context))
    time = event.time
    if time is None:
        time = received
        status.append(TIME_UNKNOWN)
    else:
        time, anchored = (time, False) if dated is None else dated(time, received)
        if not anchored:
            status.append(UNVERIFIED)
    return Reading(
        device=device,
        driver=DRIVER,
        serial=serial,
        session=session,
        seq=seq,
        time=time,
        received=received,
        glucose_mgdl=None if mgdl is None else round(mgdl, 1),
        out_of_range=side,
        status=tuple(status),
        backfilled=event.backfill,
    )
