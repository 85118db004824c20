"""The condition of each alert kind on the newest reading, with hysteresis (pure)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gatewayd.integrations.alerts.kinds import FLAGS, Kind
from gatewayd.integrations.alerts.settings import Thresholds
from gatewayd.integrations.alerts.state import Latest

#: A rate is derived from the previous reading only when it is at most this old.
_RATE_WINDOW = timedelta(minutes=15)
#: No physiological glucose moves faster (mg/dL/min): such a rate is a sensor artefact.
_RATE_LIMIT = 40.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """`holds`: True = the condition is on; False = clearly off (past the hysteresis band);
    None = no change (inside the band, or nothing to judge by)."""

    holds: bool | None
    threshold: float | None = None
    predicted: float | None = None


def rate(
    trend: float | None, glucose: float | None, session: str, time: datetime, prev: Latest | None
) -> float | None:
    """The reading's own trend, else the change since the previous reading of the session."""
    if trend is not None:
        return trend if math.isfinite(trend) and abs(trend) <= _RATE_LIMIT else None
    if prev is None or prev.session != session or glucose is None or prev.glucose_mgdl is None:
        return None
    elapsed = time - prev.time
    if not timedelta(0) < elapsed <= _RATE_WINDOW:
        return None
    derived = (glucose - prev.glucose_mgdl) / (elapsed.total_seconds() / 60)
    return round(derived, 2) if abs(derived) <= _RATE_LIMIT else None


def level(latest: Latest) -> float:
    """The glucose to compare: out-of-range low is below every threshold, high above every."""
    if latest.glucose_mgdl is not None:
        return latest.glucose_mgdl
    return -math.inf if latest.out_of_range == "low" else math.inf


@dataclass(frozen=True, slots=True)
class Facts:
    """What a verdict is drawn from: the newest reading and the moment of judging."""

    latest: Latest
    status: tuple[str, ...]
    #: Kinds active right now (earlier kinds of this evaluation already applied).
    active: frozenset[Kind]
    now: datetime


def judge(kind: Kind, facts: Facts, t: Thresholds) -> Verdict:
    """The verdict on `kind` for the newest reading."""
    if kind in FLAGS:
        return Verdict(any(flag in FLAGS[kind] for flag in facts.status))
    return _RULES[kind](facts, t)


def _urgent_low(f: Facts, t: Thresholds) -> Verdict:
    return _below(level(f.latest), t.urgent_low, t.hysteresis_mgdl)


def _low(f: Facts, t: Thresholds) -> Verdict:
    return _below(level(f.latest), t.low, t.hysteresis_mgdl)


def _high(f: Facts, t: Thresholds) -> Verdict:
    return _above(level(f.latest), t.high, t.hysteresis_mgdl)


def _very_high(f: Facts, t: Thresholds) -> Verdict:
    return _above(level(f.latest), t.very_high, t.hysteresis_mgdl)


def _rapid_fall(f: Facts, t: Thresholds) -> Verdict:
    return _rapid(f.latest.rate_mgdl_min, -1, t.rapid_fall_rate, t.rate_hysteresis)


def _rapid_rise(f: Facts, t: Thresholds) -> Verdict:
    return _rapid(f.latest.rate_mgdl_min, 1, t.rapid_rise_rate, t.rate_hysteresis)


def _signal_loss(f: Facts, t: Thresholds) -> Verdict:
    """Raised by the clock (engine `Tick`); any reading younger than the limit ends it."""
    fresh = f.now - f.latest.time < timedelta(minutes=t.signal_loss_minutes)
    return Verdict(False if fresh else None, t.signal_loss_minutes)


def _predicted_low(f: Facts, t: Thresholds) -> Verdict:
    """On while glucose + trend x N min is below `low`; held (neither raised nor cleared) while
    glucose is already low, so a hover around `low` cannot make it flap."""
    latest = f.latest
    if level(latest) < t.low or Kind.LOW in f.active or Kind.URGENT_LOW in f.active:
        return Verdict(None, t.low)
    if latest.glucose_mgdl is None:  # out of range high
        return Verdict(False, t.low)
    if latest.rate_mgdl_min is None:
        return Verdict(None, t.low)
    predicted = round(latest.glucose_mgdl + latest.rate_mgdl_min * t.predicted_low_minutes, 1)
    holds = True if predicted < t.low else False if predicted >= t.low + t.hysteresis_mgdl else None
    return Verdict(holds, t.low, predicted)


def _below(g: float, threshold: float, h: float) -> Verdict:
    holds = True if g < threshold else False if g >= threshold + h else None
    return Verdict(holds, threshold)


def _above(g: float, threshold: float, h: float) -> Verdict:
    holds = True if g > threshold else False if g <= threshold - h else None
    return Verdict(holds, threshold)


def _rapid(value: float | None, sign: int, threshold: float, h: float) -> Verdict:
    if value is None:
        return Verdict(None, threshold)
    speed = value * sign
    holds = True if speed >= threshold else False if speed < threshold - h else None
    return Verdict(holds, threshold)


_RULES: dict[Kind, Callable[[Facts, Thresholds], Verdict]] = {
    Kind.URGENT_LOW: _urgent_low,
    Kind.LOW: _low,
    Kind.HIGH: _high,
    Kind.VERY_HIGH: _very_high,
    Kind.RAPID_FALL: _rapid_fall,
    Kind.RAPID_RISE: _rapid_rise,
    Kind.PREDICTED_LOW: _predicted_low,
    Kind.SIGNAL_LOSS: _signal_loss,
}
