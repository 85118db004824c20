"""A deterministic glucose model: one person wearing a sequence of CGM sensors.

Everything here is a pure function of the seed, the sensor session index and the time (Unix
seconds, UTC), so a value computed again — after a reconnect, in a restarted process — is the
same value. Three layers:

* `true_glucose(seed, t)`: the person's smooth plasma glucose. A baseline (~110 mg/dL), a slow
  multi-day drift, the dawn phenomenon (a rise around 04:00-08:00 UTC) and, per day, three meals
  at jittered times with carb-dependent gamma-shaped rises, each covered by an insulin bolus whose
  dose and timing are a little off: post-meal highs of 180-250 mg/dL, and lows below 70 (sometimes
  below 54) when a bolus was too big or an afternoon walk adds to it.
* `sensor_glucose(seed, session, t)`: what one sensor reads without noise: each sensor has its
  own small gain and offset error.
* `sample(seed, session, seq, t)`: one record as the sensor stores it: the sensor value plus
  AR(1)-like noise that is deterministic per seq, rounded to whole mg/dL, below 40 or above 400
  reported as out of range, with the sensor's own rate (over 15 minutes of its smooth signal) and
  a quality estimate.
"""

from __future__ import annotations

import hashlib
import math
import operator
import random
from dataclasses import dataclass
from functools import lru_cache

from gatewayd.plugin import OutOfRange

#: The sensor's measurable range (mg/dL); outside it a CGM reports LOW / HIGH instead of a value.
LOW_LIMIT = 40
HIGH_LIMIT = 400

_DAY = 86_400.0
_MIN = 60.0
_BASELINE = 110.0
#: mg/dL of unopposed rise per gram of carbohydrate (a typical type-1 carb factor).
_MGDL_PER_GRAM = 3.6
#: Time scales (minutes) of carb absorption and rapid-acting insulin action (gamma, shape 2):
#: absorption peaks after 30 min, insulin after 70 min, so every meal first rises then returns.
_CARB_SCALE = 30.0
_INSULIN_SCALE = 70.0
#: A dosing error does not last forever (corrections, counter-regulation): a meal's net effect
#: fades with 1 / (1 + (t / _FADE)^4), half gone after 5.5 h.
_FADE = 330.0
#: Events older than this (seconds) no longer matter (< 3 % of a dosing error is left).
_HORIZON = 14 * 3600.0
#: Sensor noise: stationary standard deviation (mg/dL), AR(1) coefficient, terms kept.
_NOISE_SD = 3.0
_NOISE_PHI = 0.7
_NOISE_TERMS = 24
#: The weight of the innovation `k` records back in a record's noise: `_NOISE_PHI**k`.
_NOISE_WEIGHTS = tuple(_NOISE_PHI**k for k in range(_NOISE_TERMS))
#: An innovation's standard deviation (the noise's is then `_NOISE_SD`), and its clip at 3 sd.
_INNOVATION_SD = _NOISE_SD * math.sqrt(1.0 - _NOISE_PHI**2)
_INNOVATION_LIMIT = 3.0 * _INNOVATION_SD
#: How many (seed, session) streams `noise` keeps the latest innovations of.
_NOISE_STREAMS = 64
#: The sensor's trend is its own smooth signal differenced over this window (seconds).
_TREND_WINDOW = 15 * _MIN
_TWO_PI = 2 * math.pi
#: Periods (seconds) of the two sines of the slow multi-day drift.
_DRIFT_PERIOD_1 = 2.7 * _DAY
_DRIFT_PERIOD_2 = 6.1 * _DAY


@dataclass(frozen=True, slots=True)
class Event:
    """Something that moves glucose: a meal with its bolus, or exercise (no carbs, a dip)."""

    meal_time: float
    carbs_g: float
    bolus_time: float
    #: Insulin as a fraction of what would exactly cover the meal (1.0 = perfect).
    dose_ratio: float
    exercise_mgdl: float = 0.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One sensor record's payload."""

    glucose_mgdl: int | None
    out_of_range: OutOfRange | None
    trend_mgdl_min: float
    quality_pct: float


def stable_int(*parts: object) -> int:
    """A 64-bit integer from the parts, stable across processes (unlike `hash`)."""
    text = "\x1f".join(map(str, parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _rng(*parts: object) -> random.Random:
    return random.Random(stable_int(*parts))


def _absorbed(t_min: float, scale: float) -> float:
    """Fraction absorbed / acted after `t_min` minutes: the CDF of a shape-2 gamma."""
    if t_min <= 0:
        return 0.0
    x = t_min / scale
    return 1.0 - math.exp(-x) * (1.0 + x)


def _bump(t_min: float, peak_min: float) -> float:
    """Peak-normalised bump: 0 at 0, 1 at `peak_min`, then fading."""
    if t_min <= 0:
        return 0.0
    x = t_min / peak_min
    return x * math.exp(1.0 - x)


@lru_cache(maxsize=256)
def day_events(seed: int, day: int) -> tuple[Event, ...]:
    """The meals, boluses and exercise of one UTC day (day = Unix seconds // 86400)."""
    rng = _rng(seed, "day", day)
    start = day * _DAY
    events: list[Event] = []
    # (mean hour, jitter sd in hours, carbs range in g)
    for hour, jitter, (low, high) in (
        (7.5, 0.6, (25, 60)),
        (12.75, 0.7, (35, 80)),
        (19.0, 0.8, (40, 100)),
    ):
        meal = start + (hour + rng.gauss(0.0, jitter)) * 3600.0
        carbs = rng.uniform(low, high)
        # Mostly pre-bolused or on time, sometimes late (a higher peak follows).
        bolus = meal + rng.choice((-15.0, -5.0, 0.0, 0.0, 10.0, 25.0)) * _MIN
        # Usually a bit under-dosed (highs), occasionally over-dosed (lows).
        ratio = rng.choice((0.7, 0.85, 0.95, 1.0, 1.05, 1.2, 1.45)) + rng.gauss(0.0, 0.05)
        events.append(Event(meal, carbs, bolus, max(ratio, 0.0)))
    if rng.random() < 0.35:  # an unbolused snack in the afternoon
        snack = start + rng.uniform(15.0, 17.0) * 3600.0
        events.append(Event(snack, rng.uniform(10.0, 25.0), snack, 0.0))
    if rng.random() < 0.4:  # an afternoon walk: a slow dip
        walk = start + rng.uniform(16.0, 18.5) * 3600.0
        events.append(Event(walk, 0.0, walk, 0.0, exercise_mgdl=rng.uniform(25.0, 60.0)))
    return tuple(events)


@lru_cache(maxsize=256)
def _acting(seed: int, day: int) -> tuple[tuple[float, float, float, float, float, float], ...]:
    """The events that can act during UTC day `day` (those of the day before and of the day,
    in that order), each as (start, meal time, bolus time, rise, dose ratio, exercise): start
    is the earlier of the meal and the bolus, rise the meal's carbs in mg/dL."""
    return tuple(
        (
            min(event.meal_time, event.bolus_time),
            event.meal_time,
            event.bolus_time,
            event.carbs_g * _MGDL_PER_GRAM,
            event.dose_ratio,
            event.exercise_mgdl,
        )
        for d in (day - 1, day)
        for event in day_events(seed, d)
    )


@lru_cache(maxsize=64)
def _person(seed: int) -> tuple[float, float, float, float, float]:
    """Per-person constants: baseline, dawn amplitude, drift amplitude, two drift phases."""
    rng = _rng(seed, "person")
    return (
        _BASELINE + rng.uniform(-8.0, 8.0),
        rng.uniform(15.0, 35.0),
        rng.uniform(8.0, 18.0),
        rng.uniform(0.0, 2 * math.pi),
        rng.uniform(0.0, 2 * math.pi),
    )


def _dawn(t: float, amplitude: float) -> float:
    """Raised-cosine bump from 03:30 to 09:00 UTC, highest around 06:15."""
    hour = (t % _DAY) / 3600.0
    if not 3.5 < hour < 9.0:
        return 0.0
    return amplitude * 0.5 * (1.0 - math.cos(_TWO_PI * (hour - 3.5) / 5.5))


def _counter_regulation(g: float) -> float:
    """Below 70 mg/dL the body fights back: the fall is softened, so lows stay rare."""
    return g if g >= 70.0 else 70.0 - (70.0 - g) * 0.6


def true_glucose(seed: int, t: float) -> float:
    """The person's smooth glucose (mg/dL) at Unix time `t`."""
    baseline, dawn, drift, phase1, phase2 = _person(seed)
    g = baseline + _dawn(t, dawn)
    g += drift * (
        0.6 * math.sin(_TWO_PI * t / _DRIFT_PERIOD_1 + phase1)
        + 0.4 * math.sin(_TWO_PI * t / _DRIFT_PERIOD_2 + phase2)
    )
    for start, meal, bolus, rise, ratio, exercise in _acting(seed, math.floor(t / _DAY)):
        if 0.0 < t - start < _HORIZON:
            # What the event adds at `t` (negative for insulin excess and exercise).
            since = (t - start) / _MIN
            effect = rise * (
                _absorbed((t - meal) / _MIN, _CARB_SCALE)
                - ratio * _absorbed((t - bolus) / _MIN, _INSULIN_SCALE)
            )
            effect /= 1.0 + (since / _FADE) ** 4
            if exercise:
                effect -= exercise * _bump(since, 60.0)
            g += effect
    return _counter_regulation(g)


@lru_cache(maxsize=64)
def _calibration(seed: int, session: int) -> tuple[float, float]:
    """One sensor's gain and offset error."""
    rng = _rng(seed, "sensor", session)
    return rng.uniform(0.94, 1.06), rng.uniform(-6.0, 6.0)


def sensor_glucose(seed: int, session: int, t: float) -> float:
    """What sensor `session` reads at `t` before noise (mg/dL)."""
    gain, offset = _calibration(seed, session)
    return true_glucose(seed, t) * gain + offset


@lru_cache(maxsize=64)
def _noise_hash(seed: int, session: int) -> hashlib.blake2b:
    """The hash of `stable_int(seed, "noise", session, seq)` fed all but the seq."""
    prefix = "\x1f".join(map(str, (seed, "noise", session, "")))
    return hashlib.blake2b(prefix.encode(), digest_size=8)


@lru_cache(maxsize=4096)
def _innovation(seed: int, session: int, seq: int) -> float:
    """The noise innovation of one record, clipped to 3 sd so a single spike stays plausible.

    Drawn from `_rng(seed, "noise", session, seq)`: the same seed, hashed from `_noise_hash`.
    """
    digest = _noise_hash(seed, session).copy()
    digest.update(str(seq).encode())
    rng = random.Random(int.from_bytes(digest.digest(), "big"))
    return max(-_INNOVATION_LIMIT, min(_INNOVATION_LIMIT, rng.gauss(0.0, _INNOVATION_SD)))


#: Per (seed, session): the seq whose innovations `_innovations` returned last, and those. Only
#: a shortcut: what it returns never depends on what is kept here.
_latest: dict[tuple[int, int], tuple[int, tuple[float, ...]]] = {}


def _innovations(seed: int, session: int, seq: int) -> tuple[float, ...]:
    """The innovations of records `seq`, `seq - 1`, ... (`_NOISE_TERMS` of them).

    A sensor asks for its records in order, so the previous record's are usually at hand:
    then only record `seq`'s is new.
    """
    stream = (seed, session)
    latest = _latest.get(stream)
    if latest is not None and latest[0] == seq - 1:
        found = (_innovation(seed, session, seq), *latest[1][:-1])
    else:
        found = tuple(_innovation(seed, session, seq - k) for k in range(_NOISE_TERMS))
        if latest is None and len(_latest) >= _NOISE_STREAMS:
            _latest.pop(next(iter(_latest)), None)  # the stream that started first
    _latest[stream] = (seq, found)
    return found


def noise(seed: int, session: int, seq: int) -> float:
    """AR(1)-like sensor noise of record `seq` (a truncated sum, so it can be recomputed)."""
    # Newest term first: the order of a float sum is part of its value.
    total: float = sum(map(operator.mul, _NOISE_WEIGHTS, _innovations(seed, session, seq)))
    return total


def sample(seed: int, session: int, seq: int, t: float) -> Sample:
    """The record sensor `session` stores as number `seq`, measured at `t`."""
    gain, offset = _calibration(seed, session)  # `sensor_glucose`, at t and a trend window back
    smooth = true_glucose(seed, t) * gain + offset
    before = true_glucose(seed, t - _TREND_WINDOW) * gain + offset
    err = noise(seed, session, seq)
    value = round(smooth + err)
    trend = round((smooth - before) / 15.0, 1)
    quality = float(max(60, min(100, round(100 - 4 * abs(err)))))
    if value < LOW_LIMIT:
        return Sample(None, "low", trend, quality)
    if value > HIGH_LIMIT:
        return Sample(None, "high", trend, quality)
    return Sample(value, None, trend, quality)
