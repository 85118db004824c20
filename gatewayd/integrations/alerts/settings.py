"""Alert thresholds: defaults, the `[alerts]` table, per-device `[devices.alerts]` overrides.

Every key of `[alerts]` is a default for every device; a device's `[devices.alerts]` table
overrides any of them for that device alone. Unknown keys, wrong types and thresholds in the
wrong order fail at start with the file, the dotted key and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gatewayd.integrations.alerts.kinds import Kind
from gatewayd.ops.config import Config
from gatewayd.options import OptionReader


@dataclass(frozen=True, slots=True)
class Thresholds:
    """One device's alert rules (glucose in mg/dL, rates in mg/dL/min, times in minutes)."""

    urgent_low: float = 54.0
    low: float = 70.0
    high: float = 180.0
    very_high: float = 250.0
    #: A level alert clears only this far back on the safe side of its threshold.
    hysteresis_mgdl: float = 5.0
    rapid_fall_rate: float = 3.0
    rapid_rise_rate: float = 3.0
    #: A rate alert clears only once the rate is this much below its threshold.
    rate_hysteresis: float = 1.0
    #: `predicted_low`: glucose + trend x this many minutes is below `low`.
    predicted_low_minutes: float = 20.0
    signal_loss_minutes: float = 20.0
    #: A reading measured longer ago than this never raises an alert (it may clear one).
    stale_minutes: float = 10.0
    #: Remind about a still-active urgent/warning alert this often; 0 = never.
    realert_minutes: float = 30.0
    disabled: frozenset[Kind] = field(default_factory=frozenset)

    def enabled(self, kind: Kind) -> bool:
        """Whether alerts of `kind` are raised for this device."""
        return kind not in self.disabled


@dataclass(frozen=True, slots=True)
class AlertsOptions:
    """The validated `[alerts]` configuration: thresholds of every device with alerts on."""

    devices: Mapping[str, Thresholds]


#: (key, minimum, maximum, minimum is exclusive) of every numeric key.
_NUMBERS: tuple[tuple[str, float, float, bool], ...] = (
    ("urgent_low", 0, 600, True),
    ("low", 0, 600, True),
    ("high", 0, 600, True),
    ("very_high", 0, 600, True),
    ("hysteresis_mgdl", 0, 40, False),
    ("rapid_fall_rate", 0, 40, True),
    ("rapid_rise_rate", 0, 40, True),
    ("rate_hysteresis", 0, 40, False),
    ("predicted_low_minutes", 0, 120, True),
    ("signal_loss_minutes", 0, 1440, True),
    ("stale_minutes", 0, 1440, True),
    ("realert_minutes", 0, 1440, False),
)
_KIND_NAMES = frozenset(kind.value for kind in Kind)
#: Pairs that must be strictly increasing.
_ORDER = (("urgent_low", "low"), ("low", "high"), ("high", "very_high"))
_RATE_PAIRS = (("rate_hysteresis", "rapid_fall_rate"), ("rate_hysteresis", "rapid_rise_rate"))


def parse(config: Config) -> AlertsOptions | None:
    """Validate `[alerts]` and every `[devices.alerts]`; None when alerts are not configured
    (no such table) or turned off for every device."""
    top = config.section("alerts")
    tables = {device.id: config.device_section(device, "alerts") for device in config.devices}
    if top is None and all(table is None for table in tables.values()):
        return None
    # Without `[alerts]`, only the devices with their own table have alerts.
    default_on, defaults = False, Thresholds()
    if top is not None:
        default_on, defaults = read_thresholds(top, defaults, enabled=True)
        top.finish()
    devices: dict[str, Thresholds] = {}
    for device in config.devices:
        reader = tables[device.id]
        on, thresholds = default_on, defaults
        if reader is not None:
            on, thresholds = read_thresholds(reader, defaults, enabled=top is None or default_on)
            reader.finish()
        if on:
            devices[device.id] = thresholds
    return AlertsOptions(devices) if devices else None


def read_thresholds(r: OptionReader, base: Thresholds, *, enabled: bool) -> tuple[bool, Thresholds]:
    """`enabled` and the thresholds of one table, each key defaulting to `base`'s value."""
    on = r.boolean("enabled", enabled)
    values: dict[str, Any] = {
        name: r.number(
            name, getattr(base, name), minimum=low, maximum=high, exclusive_minimum=exclusive
        )
        for name, low, high, exclusive in _NUMBERS
    }
    values["disabled"] = _kinds(r, "disabled", base.disabled)
    thresholds = replace(base, **values)
    for lower, upper in (*_ORDER, *_RATE_PAIRS):
        _check_order(r, thresholds, lower, upper)
    return on, thresholds


def _kinds(r: OptionReader, name: str, default: frozenset[Kind]) -> frozenset[Kind]:
    value = r.raw(name, None)
    if value is None:
        return default
    known = ", ".join(kind.value for kind in Kind)
    if not isinstance(value, list):
        raise r.error(name, f"must be a list of alert kinds ({known}), got {value!r}")
    kinds: set[Kind] = set()
    for item in value:
        if not isinstance(item, str) or item not in _KIND_NAMES:
            raise r.error(name, f"unknown alert kind {item!r}; known: {known}")
        kinds.add(Kind(item))
    return frozenset(kinds)


def _check_order(r: OptionReader, t: Thresholds, lower: str, upper: str) -> None:
    low, high = getattr(t, lower), getattr(t, upper)
    if low < high:
        return
    if r.has(upper) or not r.has(lower):
        raise r.error(upper, f"must be above {lower} ({low:g}), got {high:g}")
    raise r.error(lower, f"must be below {upper} ({high:g}), got {low:g}")
