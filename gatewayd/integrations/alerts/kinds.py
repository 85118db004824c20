"""The vocabulary of alerts: kinds, events, severities, and which status flags raise which."""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """What an alert is about (the `kind` field of the payload)."""

    URGENT_LOW = "urgent_low"
    LOW = "low"
    HIGH = "high"
    VERY_HIGH = "very_high"
    RAPID_FALL = "rapid_fall"
    RAPID_RISE = "rapid_rise"
    PREDICTED_LOW = "predicted_low"
    SIGNAL_LOSS = "signal_loss"
    SENSOR_ENDING = "sensor_ending"
    SENSOR_ENDED = "sensor_ended"
    BATTERY_LOW = "battery_low"


class Event(StrEnum):
    """What happened to an alert: an episode is raised once, reminded about, cleared once."""

    RAISED = "raised"
    REMINDER = "reminder"
    CLEARED = "cleared"


class Severity(StrEnum):
    """How loudly a consumer should tell a person."""

    URGENT = "urgent"
    WARNING = "warning"
    INFO = "info"


SEVERITY: dict[Kind, Severity] = {
    Kind.URGENT_LOW: Severity.URGENT,
    Kind.LOW: Severity.WARNING,
    Kind.HIGH: Severity.WARNING,
    Kind.VERY_HIGH: Severity.URGENT,
    Kind.RAPID_FALL: Severity.WARNING,
    Kind.RAPID_RISE: Severity.WARNING,
    Kind.PREDICTED_LOW: Severity.WARNING,
    Kind.SIGNAL_LOSS: Severity.WARNING,
    Kind.SENSOR_ENDING: Severity.INFO,
    Kind.SENSOR_ENDED: Severity.WARNING,
    Kind.BATTERY_LOW: Severity.INFO,
}

#: Reading status flags that raise a flag-driven alert. The CGMS Sensor Status Annunciation names
#: (protocols.md §1.3, snake_case) come first; the others are the names drivers of devices that
#: announce an expiry (Dexcom, Libre) are expected to use.
FLAGS: dict[Kind, frozenset[str]] = {
    Kind.SENSOR_ENDING: frozenset({"session_ending", "sensor_ending", "sensor_expiring"}),
    Kind.SENSOR_ENDED: frozenset(
        {"session_stopped", "session_ended", "sensor_ended", "sensor_expired"}
    ),
    Kind.BATTERY_LOW: frozenset({"device_battery_low", "battery_low"}),
}

#: Alerts that belong to one sensor session: a reading of a new session clears them.
SESSION_KINDS = frozenset({Kind.SENSOR_ENDING, Kind.SENSOR_ENDED})
