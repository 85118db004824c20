"""CGM Measurement records as gatewayd `Reading`s: ids, values, out-of-range markers, flags.

* id parts: serial (Device Information, else the Bluetooth address), session = the sensor
  session's start as ``YYYY-MM-DDTHH:MM:SSZ`` (`session_key`; a new sensor session gives new
  ids), seq = the record's time offset in minutes;
* glucose: an SFLOAT number is mg/dL; -INFINITY / +INFINITY (or the "result lower / higher than
  the device can process" bits) are `out_of_range` "low" / "high", never a number; NaN and NRes
  take the side the record's status bits give (device range, hypo / hyper, patient low / high)
  and are not published without one;
* trend: (mg/dL)/min and its Nightscout arrow; ±INFINITY -> "RATE OUT OF RANGE", NaN / NRes ->
  "NOT COMPUTABLE"; quality in %;
* status: the Sensor Status Annunciation as names (`protocols.cgms.state.status_names`:
  "session_stopped", "device_battery_low", "calibration_recommended", ...);
* time: session start + offset, never after the time it was received.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from gatewayd.plugin import Direction, OutOfRange, Reading
from protocols.cgms.events import Measurement
from protocols.cgms.measurement import CgmMeasurement
from protocols.cgms.state import SensorStatus, status_names
from protocols.sfloat import SFloat, SFloatSpecial, SFloatValue

__all__ = [
    "DRIVER",
    "Skip",
    "glucose_of",
    "parse_session_key",
    "session_key",
    "to_reading",
    "trend_of",
]

DRIVER = "cgms"
_S = SensorStatus
_LOW = _S.RESULT_BELOW_DEVICE_RANGE | _S.RESULT_BELOW_HYPO | _S.RESULT_BELOW_PATIENT_LOW
_HIGH = _S.RESULT_ABOVE_DEVICE_RANGE | _S.RESULT_ABOVE_HYPER | _S.RESULT_ABOVE_PATIENT_HIGH


def session_key(start: datetime) -> str:
    """The `session` of a sensor session's readings: its start, UTC, whole seconds."""
    return start.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def parse_session_key(session: str) -> datetime | None:
    """The start a `session_key` names (None for any other string)."""
    if not session.endswith("Z"):
        return None
    try:
        start = datetime.fromisoformat(session[:-1]).replace(tzinfo=UTC)
    except ValueError:
        return None
    return start if session_key(start) == session else None


def glucose_of(record: CgmMeasurement) -> tuple[float | None, OutOfRange | None] | None:
    """(mg/dL, None) or (None, "low"/"high"); None when the record has neither."""
    side = record.out_of_range
    if side is not None:
        return None, side
    value = record.glucose_mgdl
    if value is not None:
        return value, None
    if record.status & _LOW:  # NaN / NRes: the status bits may say which side
        return None, "low"
    if record.status & _HIGH:
        return None, "high"
    return None


def trend_of(value: SFloatValue | None) -> tuple[float | None, Direction]:
    """The rate and its arrow."""
    if value is None:
        return None, Direction.NONE
    if isinstance(value, SFloat):
        rate = value.value
        return rate, Direction.from_rate(rate)
    infinite = (SFloatSpecial.POSITIVE_INFINITY, SFloatSpecial.NEGATIVE_INFINITY)
    return None, Direction.RATE_OUT_OF_RANGE if value in infinite else Direction.NOT_COMPUTABLE


@dataclass(frozen=True, slots=True)
class Skip:
    """A record that is not a reading (`reason`: "session_unknown" - its session start is not
    settled yet, it comes again; "glucose_not_a_number" - neither a value nor a side)."""

    reason: Literal["session_unknown", "glucose_not_a_number"]
    time_offset: int


def to_reading(
    event: Measurement, *, device: str, serial: str, received: datetime
) -> Reading | Skip:
    """The reading of a placed record (session start known), or why it has none."""
    if event.session_start is None or event.time is None:
        return Skip("session_unknown", event.time_offset)
    record = event.record
    glucose = glucose_of(record)
    if glucose is None:
        return Skip("glucose_not_a_number", record.time_offset)
    trend, direction = trend_of(record.trend)
    quality = record.quality.value if isinstance(record.quality, SFloat) else None
    return Reading(
        device=device,
        driver=DRIVER,
        serial=serial,
        session=session_key(event.session_start),
        seq=record.time_offset,
        time=min(event.time, received),
        received=received,
        glucose_mgdl=glucose[0],
        out_of_range=glucose[1],
        trend_mgdl_min=trend,
        direction=direction,
        quality_pct=quality,
        status=status_names(record.status),
        backfilled=event.backfill,
    )
