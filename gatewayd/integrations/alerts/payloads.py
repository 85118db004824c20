"""The MQTT payloads: one `alert` event, and the retained list of a device's active alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gatewayd.integrations.alerts.kinds import Event, Kind
from gatewayd.integrations.alerts.state import Active, AlertEvent
from gatewayd.models import OutOfRange, isoformat_utc, mgdl_to_mmoll

#: Version of the `alert` payload (fields are only ever added within a version).
ALERT_SCHEMA = "gatewayd/alert/1"
#: Version of the retained `alerts` payload (the active list).
ALERTS_SCHEMA = "gatewayd/alerts/1"

_TITLES: dict[Kind, str] = {
    Kind.URGENT_LOW: "Urgent low",
    Kind.LOW: "Low",
    Kind.HIGH: "High",
    Kind.VERY_HIGH: "Very high",
    Kind.RAPID_FALL: "Falling fast",
    Kind.RAPID_RISE: "Rising fast",
    Kind.PREDICTED_LOW: "Low soon",
    Kind.SIGNAL_LOSS: "No readings",
    Kind.SENSOR_ENDING: "Sensor session ending soon",
    Kind.SENSOR_ENDED: "Sensor session ended",
    Kind.BATTERY_LOW: "Device battery low",
}
_RATE_KINDS = frozenset({Kind.RAPID_FALL, Kind.RAPID_RISE})
_LEVEL_SIDE: dict[Kind, str] = {
    Kind.URGENT_LOW: "below",
    Kind.LOW: "below",
    Kind.HIGH: "above",
    Kind.VERY_HIGH: "above",
    Kind.PREDICTED_LOW: "below",
}


def threshold_unit(kind: Kind) -> str | None:
    """The unit of an alert's `threshold` (None for flag-driven kinds, which have none)."""
    if kind in _RATE_KINDS:
        return "mg/dL/min"
    if kind is Kind.SIGNAL_LOSS:
        return "min"
    if kind in {Kind.SENSOR_ENDING, Kind.SENSOR_ENDED, Kind.BATTERY_LOW}:
        return None
    return "mg/dL"


def alert_payload(event: AlertEvent, hub: str) -> dict[str, Any]:
    """The JSON payload of one event on `<root>/<hub>/<device>/alert`."""
    return {
        "schema": ALERT_SCHEMA,
        "hub": hub,
        "device": event.device,
        "id": event.id,
        "kind": event.kind.value,
        "event": event.event.value,
        "severity": event.severity.value,
        "time": isoformat_utc(event.time),
        "raised_at": isoformat_utc(event.raised_at),
        "glucose_mgdl": event.glucose_mgdl,
        "glucose_mmoll": None if event.glucose_mgdl is None else mgdl_to_mmoll(event.glucose_mgdl),
        "out_of_range": event.out_of_range,
        "trend_mgdl_min": event.trend_mgdl_min,
        "predicted_mgdl": event.predicted_mgdl,
        "threshold": event.threshold,
        "threshold_unit": threshold_unit(event.kind),
        "reading_id": event.reading_id,
        "reason": event.reason,
        "message": message(
            event.kind,
            event.event,
            glucose_mgdl=event.glucose_mgdl,
            out_of_range=event.out_of_range,
            trend_mgdl_min=event.trend_mgdl_min,
            threshold=event.threshold,
            predicted_mgdl=event.predicted_mgdl,
            reason=event.reason,
        ),
    }


def active_payload(
    device: str, hub: str, active: tuple[Active, ...], updated: datetime
) -> dict[str, Any]:
    """The retained JSON payload of `<root>/<hub>/<device>/alerts` (an empty list when none)."""
    return {
        "schema": ALERTS_SCHEMA,
        "hub": hub,
        "device": device,
        "updated": isoformat_utc(updated),
        "active": [
            {
                "id": alert.id,
                "kind": alert.kind.value,
                "severity": alert.severity.value,
                "raised_at": isoformat_utc(alert.raised_at),
                "glucose_mgdl": alert.glucose_mgdl,
                "out_of_range": alert.out_of_range,
                "threshold": alert.threshold,
                "threshold_unit": threshold_unit(alert.kind),
                "message": message(
                    alert.kind,
                    Event.RAISED,
                    glucose_mgdl=alert.glucose_mgdl,
                    out_of_range=alert.out_of_range,
                    threshold=alert.threshold,
                ),
            }
            for alert in active
        ],
    }


def message(
    kind: Kind,
    event: Event,
    *,
    glucose_mgdl: float | None = None,
    out_of_range: OutOfRange | None = None,
    trend_mgdl_min: float | None = None,
    threshold: float | None = None,
    predicted_mgdl: float | None = None,
    reason: str | None = None,
) -> str:
    """A short text for people: `Low: 65 mg/dL (below 70 mg/dL)`, `Low cleared: 80 mg/dL`."""
    title = _TITLES[kind]
    value = _glucose(glucose_mgdl, out_of_range)
    if event is Event.CLEARED:
        detail = f" ({reason})" if reason is not None else f": {value}" if value else ""
        return f"{title} cleared{detail}"
    head = title if event is Event.RAISED else f"{title} (still on)"
    if kind in _RATE_KINDS and trend_mgdl_min is not None and threshold is not None:
        return f"{head}: {trend_mgdl_min:+g} mg/dL/min (limit {threshold:g})"
    if kind is Kind.SIGNAL_LOSS and threshold is not None:
        return f"{head}: none for {threshold:g} min"
    if kind is Kind.PREDICTED_LOW and predicted_mgdl is not None and threshold is not None:
        return f"{head}: {value}, {predicted_mgdl:g} predicted (below {threshold:g} mg/dL)"
    if kind in _LEVEL_SIDE and threshold is not None and value is not None:
        return f"{head}: {value} ({_LEVEL_SIDE[kind]} {threshold:g} mg/dL)"
    return head


def _glucose(glucose: float | None, out_of_range: OutOfRange | None) -> str | None:
    if glucose is not None:
        return f"{glucose:g} mg/dL"
    if out_of_range is not None:
        return f"{out_of_range.upper()} (out of the sensor's range)"
    return None
