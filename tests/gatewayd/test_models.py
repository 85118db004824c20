"""gatewayd.models: deterministic ids, UTC everywhere, mmol/L at the edge, trend arrows."""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.models import (
    MGDL_PER_MMOLL,
    DeviceIdentity,
    Direction,
    Reading,
    isoformat_utc,
    mgdl_to_mmoll,
    reading_id,
    utc,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def make(**overrides: Any) -> Reading:
    fields: dict[str, Any] = {
        "device": "cgm1",
        "driver": "simulator",
        "serial": "SN123",
        "session": "s1",
        "seq": 7,
        "time": T0,
        "received": T0 + timedelta(seconds=2),
        "glucose_mgdl": 120.0,
    }
    fields.update(overrides)
    return Reading(**fields)


# --- reading_id ---------------------------------------------------------------------------------


def test_reading_id_is_32_lowercase_hex() -> None:
    rid = reading_id("simulator", "SN1", "s1", 0)
    assert re.fullmatch(r"[0-9a-f]{32}", rid)


def test_reading_id_is_deterministic() -> None:
    assert reading_id("d", "s", "x", 5) == reading_id("d", "s", "x", 5)
    # Pinned: changing the hashing would re-identify every stored and published reading.
    assert reading_id("simulator", "SN1", "s1", 0) == "db773ba4e9428013313a3a6b54a8bb67"


@pytest.mark.parametrize(
    "changed",
    [
        ("other", "SN1", "s1", 1),
        ("simulator", "SN2", "s1", 1),
        ("simulator", "SN1", "s2", 1),
        ("simulator", "SN1", "s1", 2),
    ],
)
def test_reading_id_depends_on_each_component(changed: tuple[str, str, str, int]) -> None:
    assert reading_id(*changed) != reading_id("simulator", "SN1", "s1", 1)


def test_reading_id_components_do_not_run_together() -> None:
    assert reading_id("ab", "c", "s", 1) != reading_id("a", "bc", "s", 1)
    assert reading_id("d", "s", "1", 23) != reading_id("d", "s", "12", 3)


@given(st.text(max_size=8), st.text(max_size=8), st.text(max_size=8), st.integers(0, 2**40))
def test_reading_id_pure_function(driver: str, serial: str, session: str, seq: int) -> None:
    rid = reading_id(driver, serial, session, seq)
    assert rid == reading_id(driver, serial, session, seq)
    assert len(rid) == 32


def test_reading_gets_its_id_from_identity_fields() -> None:
    r = make()
    assert r.id == reading_id("simulator", "SN123", "s1", 7)


@pytest.mark.parametrize(
    "change",
    [
        {"driver": "other"},
        {"serial": "SN999"},
        {"session": "s2"},
        {"seq": 8},
    ],
)
def test_reading_id_sensitive(change: dict[str, Any]) -> None:
    assert make(**change).id != make().id


@pytest.mark.parametrize(
    "change",
    [
        {"device": "renamed"},
        {"received": T0 + timedelta(hours=3)},
        {"time": T0 + timedelta(minutes=1)},
        {"glucose_mgdl": 250.0},
        {"glucose_mgdl": None, "out_of_range": "high"},
        {"trend_mgdl_min": 2.0, "direction": Direction.FORTY_FIVE_UP},
        {"quality_pct": 50.0},
        {"status": ("calibration_recommended",)},
        {"backfilled": True},
    ],
)
def test_reading_id_insensitive(change: dict[str, Any]) -> None:
    assert make(**change).id == make().id


def test_explicit_id_is_kept_and_not_compared() -> None:
    r = make(id="f" * 32)
    assert r.id == "f" * 32
    assert r == make()  # id is compare=False


# --- timestamps ---------------------------------------------------------------------------------


def test_naive_datetime_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        make(time=datetime(2024, 3, 1, 12, 0))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="naive"):
        make(received=datetime(2024, 3, 1, 12, 0))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="naive"):
        utc(datetime(2024, 3, 1))  # noqa: DTZ001 - the point of the test


def test_aware_datetimes_converted_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    minus_five_thirty = timezone(-timedelta(hours=5, minutes=30))
    r = make(
        time=datetime(2024, 3, 1, 14, 0, tzinfo=plus_two),
        received=datetime(2024, 3, 1, 6, 31, tzinfo=minus_five_thirty),
    )
    assert r.time == T0
    assert r.time.tzinfo is UTC
    assert (r.time.hour, r.time.minute) == (12, 0)
    assert r.received.tzinfo is UTC
    assert (r.received.hour, r.received.minute) == (12, 1)


def test_utc_keeps_the_instant() -> None:
    dt = datetime(2024, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    converted = utc(dt)
    assert converted == dt
    assert converted.tzinfo is UTC
    assert converted.day == 31
    assert converted.month == 12


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (datetime(2024, 3, 1, 12, 0, tzinfo=UTC), "2024-03-01T12:00:00.000Z"),
        (datetime(2024, 3, 1, 12, 0, 5, 123456, tzinfo=UTC), "2024-03-01T12:00:05.123Z"),
        (datetime(2024, 3, 1, 12, 0, 5, 999999, tzinfo=UTC), "2024-03-01T12:00:05.999Z"),
        (
            datetime(2024, 3, 1, 14, 0, 0, 1000, tzinfo=timezone(timedelta(hours=2))),
            "2024-03-01T12:00:00.001Z",
        ),
        (
            datetime(2023, 12, 31, 23, 0, tzinfo=timezone(-timedelta(hours=3))),
            "2024-01-01T02:00:00.000Z",
        ),
    ],
)
def test_isoformat_utc(dt: datetime, text: str) -> None:
    assert isoformat_utc(dt) == text


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2200, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=9)), timezone(-timedelta(hours=11, minutes=15))]
        ),
    )
)
def test_isoformat_utc_shape(dt: datetime) -> None:
    text = isoformat_utc(dt)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text), text
    back = datetime.fromisoformat(text)
    assert back.tzinfo is not None
    assert abs(back - dt) < timedelta(milliseconds=1)
    assert back <= dt


def test_isoformat_utc_refuses_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        isoformat_utc(datetime(2024, 1, 1))  # noqa: DTZ001 - the point of the test


# --- glucose / out of range ---------------------------------------------------------------------


def test_glucose_and_out_of_range_are_exclusive() -> None:
    with pytest.raises(ValueError, match="either"):
        make(glucose_mgdl=39.0, out_of_range="low")
    with pytest.raises(ValueError, match="either"):
        make(glucose_mgdl=None, out_of_range=None)


@pytest.mark.parametrize("side", ["low", "high"])
def test_out_of_range_reading(side: str) -> None:
    r = make(glucose_mgdl=None, out_of_range=side)
    assert r.out_of_range == side
    assert r.glucose_mgdl is None
    assert r.glucose_mmoll is None


def test_zero_glucose_is_a_value_not_missing() -> None:
    r = make(glucose_mgdl=0.0)
    assert r.glucose_mmoll == 0.0


@pytest.mark.parametrize(
    ("mgdl", "mmoll"),
    [
        (100, 5.6),
        (180, 10.0),
        (54, 3.0),
        (70, 3.9),
        (40, 2.2),
        (400, 22.2),
        (250, 13.9),
        (0, 0.0),
        (18.0156, 1.0),
    ],
)
def test_mmol_conversion(mgdl: float, mmoll: float) -> None:
    assert mgdl_to_mmoll(mgdl) == mmoll
    assert make(glucose_mgdl=float(mgdl)).glucose_mmoll == mmoll


def test_conversion_factor() -> None:
    assert pytest.approx(18.0156) == MGDL_PER_MMOLL


@given(st.floats(min_value=0, max_value=1000, allow_nan=False))
def test_mmol_is_one_decimal_and_close(mgdl: float) -> None:
    mmoll = mgdl_to_mmoll(mgdl)
    assert round(mmoll, 1) == mmoll
    assert abs(mmoll - mgdl / MGDL_PER_MMOLL) <= 0.05 + 1e-9


# --- Direction.from_rate ------------------------------------------------------------------------


D = Direction


@pytest.mark.parametrize(
    ("rate", "arrow"),
    [
        (None, D.NONE),
        (-40.0, D.DOUBLE_DOWN),
        (-10.0, D.DOUBLE_DOWN),
        (-3.51, D.DOUBLE_DOWN),
        (-3.5, D.DOUBLE_DOWN),
        (-3.49, D.SINGLE_DOWN),
        (-2.01, D.SINGLE_DOWN),
        (-2.0, D.SINGLE_DOWN),
        (-1.99, D.FORTY_FIVE_DOWN),
        (-1.01, D.FORTY_FIVE_DOWN),
        (-1.0, D.FORTY_FIVE_DOWN),
        (-0.99, D.FLAT),
        (0.0, D.FLAT),
        (-0.0, D.FLAT),
        (0.99, D.FLAT),
        (1.0, D.FLAT),
        (1.01, D.FORTY_FIVE_UP),
        (1.99, D.FORTY_FIVE_UP),
        (2.0, D.FORTY_FIVE_UP),
        (2.01, D.SINGLE_UP),
        (3.49, D.SINGLE_UP),
        (3.5, D.SINGLE_UP),
        (3.51, D.DOUBLE_UP),
        (10.0, D.DOUBLE_UP),
        (40.0, D.DOUBLE_UP),
        (40.01, D.RATE_OUT_OF_RANGE),
        (-40.01, D.RATE_OUT_OF_RANGE),
        (1000.0, D.RATE_OUT_OF_RANGE),
        (math.inf, D.RATE_OUT_OF_RANGE),
        (-math.inf, D.RATE_OUT_OF_RANGE),
        (1, D.FLAT),
        (-4, D.DOUBLE_DOWN),
    ],
)
def test_direction_from_rate(rate: float | None, arrow: Direction) -> None:
    assert Direction.from_rate(rate) is arrow


@given(st.floats(min_value=-40, max_value=40, allow_nan=False))
def test_direction_monotonic(rate: float) -> None:
    order = [D.DOUBLE_DOWN, D.SINGLE_DOWN, D.FORTY_FIVE_DOWN, D.FLAT, D.FORTY_FIVE_UP]
    order += [D.SINGLE_UP, D.DOUBLE_UP]
    here = order.index(Direction.from_rate(rate))
    assert here <= order.index(Direction.from_rate(min(rate + 0.5, 40.0)))
    assert here >= order.index(Direction.from_rate(max(rate - 0.5, -40.0)))


def test_direction_from_nan_is_not_computable() -> None:
    assert Direction.from_rate(math.nan) is D.NOT_COMPUTABLE


def test_direction_strings_are_nightscout_vocabulary() -> None:
    assert {str(d) for d in Direction} == {
        "DoubleUp",
        "SingleUp",
        "FortyFiveUp",
        "Flat",
        "FortyFiveDown",
        "SingleDown",
        "DoubleDown",
        "NOT COMPUTABLE",
        "RATE OUT OF RANGE",
        "NONE",
    }


# --- frozen value objects -----------------------------------------------------------------------


def test_reading_is_frozen_and_defaults() -> None:
    r = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.seq = 9  # type: ignore[misc]
    assert r.direction is Direction.NONE
    assert r.status == ()
    assert r.backfilled is False
    assert r.out_of_range is None
    assert r.trend_mgdl_min is None
    assert r.quality_pct is None


def test_device_identity() -> None:
    ident = DeviceIdentity("Acme", "G7", "SN1")
    assert ident.firmware is None
    assert ident == DeviceIdentity(manufacturer="Acme", model="G7", serial="SN1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ident.serial = "x"  # type: ignore[misc]
