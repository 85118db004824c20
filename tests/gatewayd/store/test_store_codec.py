"""gatewayd.store.codec: stored record round trip, published payloads against their schemas."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from tests.gatewayd.test_models import make as make_reading

from gatewayd.device_status import DeviceStatus, LinkState
from gatewayd.models import Direction, Reading, mgdl_to_mmoll
from gatewayd.store.codec import (
    READING_SCHEMA,
    STATUS_SCHEMA,
    decode_record,
    encode_record,
    from_record,
    json_schema,
    reading_payload,
    reading_payload_json,
    to_record,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

_RFC3339 = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)"
    r"(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)


def _format_checker() -> FormatChecker:
    """The draft's format checker, with `date-time` checked even without rfc3339-validator."""
    checker = Draft202012Validator.FORMAT_CHECKER
    if "date-time" in checker.checkers:
        return checker
    checker = FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not _RFC3339.match(value):
            return False
        datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))  # real calendar date
        return True

    return checker


FORMATS = _format_checker()


def validator(name: str) -> Draft202012Validator:
    schema = json_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS)


READING = validator("reading")
STATUS = validator("status")


def errors(v: Draft202012Validator, instance: dict[str, Any]) -> list[str]:
    return [e.message for e in v.iter_errors(instance)]


def make(**overrides: Any) -> Reading:
    """test_models' reading, with every optional field set."""
    fields: dict[str, Any] = {
        "trend_mgdl_min": -1.5,
        "direction": Direction.FORTY_FIVE_DOWN,
        "quality_pct": 98.0,
        "status": ("calibration_recommended",),
    }
    return make_reading(**(fields | overrides))


# --- hypothesis strategies ----------------------------------------------------------------------


_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
times = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    timezones=_ZONES,
).map(lambda dt: dt.replace(microsecond=dt.microsecond // 1000 * 1000))
names = st.text(min_size=1, max_size=16)
values = st.one_of(
    st.tuples(st.floats(min_value=0, max_value=1000, allow_nan=False), st.none()),
    st.tuples(st.integers(min_value=0, max_value=600), st.none()),
    st.tuples(st.none(), st.sampled_from(["low", "high"])),
)
trends = st.none() | st.floats(min_value=-50, max_value=50, allow_nan=False)
qualities = st.none() | st.floats(min_value=0, max_value=100, allow_nan=False)
statuses = st.lists(st.text(max_size=24), max_size=4).map(tuple)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    glucose, out_of_range = draw(values)
    return Reading(
        device=draw(names),
        driver=draw(names),
        serial=draw(st.text(max_size=16)),
        session=draw(st.text(max_size=16)),
        seq=draw(st.integers(min_value=0, max_value=2**53)),
        time=draw(times),
        received=draw(times),
        glucose_mgdl=glucose,
        out_of_range=out_of_range,
        trend_mgdl_min=draw(trends),
        direction=draw(st.sampled_from(Direction)),
        quality_pct=draw(qualities),
        status=draw(statuses),
        backfilled=draw(st.booleans()),
    )


# --- round trip ---------------------------------------------------------------------------------


@given(readings())
def test_record_round_trip(reading: Reading) -> None:
    back = from_record(to_record(reading))
    assert back == reading
    assert back.id == reading.id
    assert back.time.tzinfo is not None
    assert back.time == reading.time


@given(readings())
def test_encoded_record_round_trip(reading: Reading) -> None:
    text = encode_record(reading)
    assert "\n" not in text
    assert "serial" not in json.loads(text)  # a column of its own
    back = decode_record(text, reading.serial)
    assert back == reading
    assert back.id == reading.id


def test_record_fields_and_values() -> None:
    r = make()
    record = to_record(r)
    assert record == {
        "id": r.id,
        "device": "cgm1",
        "driver": "simulator",
        "serial": "SN123",
        "session": "s1",
        "seq": 7,
        "time": "2024-03-01T12:00:00.000Z",
        "received": "2024-03-01T12:00:02.000Z",
        "glucose_mgdl": 120.0,
        "glucose_mmoll": 6.7,
        "out_of_range": None,
        "trend_mgdl_min": -1.5,
        "direction": "FortyFiveDown",
        "quality_pct": 98.0,
        "status": ["calibration_recommended"],
        "backfilled": False,
    }
    json.dumps(record, allow_nan=False)  # strict JSON


def test_record_keeps_an_explicit_id() -> None:
    r = make(id="0123456789abcdef0123456789abcdef")
    assert from_record(to_record(r)).id == "0123456789abcdef0123456789abcdef"


def test_record_time_truncated_to_milliseconds() -> None:
    r = make(time=datetime(2024, 3, 1, 12, 0, 0, 123999, tzinfo=UTC))
    assert to_record(r)["time"] == "2024-03-01T12:00:00.123Z"
    assert from_record(to_record(r)).time == datetime(2024, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


def test_record_in_other_zone_becomes_utc() -> None:
    r = make(time=datetime(2024, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))))
    assert to_record(r)["time"] == "2024-03-01T12:00:00.000Z"


# --- the reading payload against its schema -----------------------------------------------------


@given(readings(), names, st.booleans())
def test_payload_validates(reading: Reading, hub: str, include_serial: bool) -> None:
    payload = reading_payload(to_record(reading), hub, include_serial=include_serial)
    assert errors(READING, payload) == []
    assert payload["schema"] == READING_SCHEMA
    assert payload["hub"] == hub
    assert ("serial" in payload) is include_serial
    # Through real JSON text, as a subscriber sees it.
    assert errors(READING, json.loads(json.dumps(payload, allow_nan=False))) == []


def test_payload_serial_absent_by_default() -> None:
    record = to_record(make())
    payload = reading_payload(record, "hub1")
    assert "serial" not in payload
    assert "SN123" not in json.dumps(payload)
    assert errors(READING, payload) == []
    assert record["serial"] == "SN123"  # the record itself is untouched


def test_payload_with_serial() -> None:
    payload = reading_payload(to_record(make()), "hub1", include_serial=True)
    assert payload["serial"] == "SN123"
    assert errors(READING, payload) == []


def test_payload_is_the_record_plus_schema_and_hub() -> None:
    record = to_record(make())
    payload = reading_payload(record, "hub1", include_serial=True)
    assert payload == {"schema": "gatewayd/reading/1", "hub": "hub1", **record}


def test_payload_id_does_not_depend_on_hub() -> None:
    record = to_record(make())
    assert reading_payload(record, "a")["id"] == reading_payload(record, "b")["id"]


@pytest.mark.parametrize("side", ["low", "high"])
def test_out_of_range_payload_validates(side: str) -> None:
    payload = reading_payload(to_record(make(glucose_mgdl=None, out_of_range=side)), "hub1")
    assert payload["glucose_mgdl"] is None
    assert payload["glucose_mmoll"] is None
    assert payload["out_of_range"] == side
    assert errors(READING, payload) == []


def test_payload_mmol_matches_mgdl() -> None:
    payload = reading_payload(to_record(make(glucose_mgdl=100.0)), "hub1")
    assert payload["glucose_mmoll"] == 5.6 == mgdl_to_mmoll(100.0)


def _valid_payload() -> dict[str, Any]:
    return reading_payload(to_record(make()), "hub1")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"out_of_range": "low"}, id="glucose-and-out-of-range"),
        pytest.param(
            {"glucose_mgdl": None, "glucose_mmoll": None, "out_of_range": None}, id="neither"
        ),
        pytest.param({"glucose_mgdl": None, "out_of_range": "high"}, id="mmol-left-over"),
        pytest.param({"out_of_range": "middle"}, id="bad-side"),
        pytest.param({"schema": "gatewayd/reading/2"}, id="schema-version"),
        pytest.param({"id": "not-hex"}, id="id"),
        pytest.param({"id": "A" * 32}, id="id-uppercase"),
        pytest.param({"hub": ""}, id="empty-hub"),
        pytest.param({"device": ""}, id="empty-device"),
        pytest.param({"seq": -1}, id="negative-seq"),
        pytest.param({"seq": 1.5}, id="fractional-seq"),
        pytest.param({"time": "2024-03-01T12:00:00.000+01:00"}, id="time-not-z"),
        pytest.param({"time": "2024-13-45T12:00:00.000Z"}, id="time-not-a-date"),
        pytest.param({"received": "yesterday Z"}, id="received-not-a-date"),
        pytest.param({"glucose_mgdl": -1.0}, id="negative-glucose"),
        pytest.param({"glucose_mgdl": "120"}, id="glucose-string"),
        pytest.param({"direction": "Up"}, id="direction"),
        pytest.param({"quality_pct": 101}, id="quality"),
        pytest.param({"status": "ok"}, id="status-not-array"),
        pytest.param({"status": [1]}, id="status-item"),
        pytest.param({"backfilled": 0}, id="backfilled"),
        pytest.param({"serial": 123}, id="serial-type"),
    ],
)
def test_schema_rejects(change: dict[str, Any]) -> None:
    payload = _valid_payload()
    assert errors(READING, payload) == []
    payload.update(change)
    assert errors(READING, payload) != []


@pytest.mark.parametrize("field", json_schema("reading")["required"])
def test_schema_requires(field: str) -> None:
    payload = _valid_payload()
    del payload[field]
    assert errors(READING, payload) != []


def test_schema_ignores_unknown_fields() -> None:
    payload = _valid_payload()
    payload["added_later"] = 1
    assert errors(READING, payload) == []


def test_schema_ids() -> None:
    assert json_schema("reading")["$id"] == READING_SCHEMA
    assert json_schema("status")["$id"] == STATUS_SCHEMA
    assert json_schema("reading")["properties"]["schema"]["const"] == READING_SCHEMA
    assert json_schema("status")["properties"]["schema"]["const"] == STATUS_SCHEMA


def test_json_schema_unknown_name() -> None:
    with pytest.raises(FileNotFoundError):
        json_schema("nope")


# --- the status payload -------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(LinkState))
def test_status_payload_validates(state: LinkState) -> None:
    status = DeviceStatus(
        device="cgm1",
        driver="simulator",
        state=state,
        since=datetime(2024, 3, 1, 14, 0, 0, 250000, tzinfo=timezone(timedelta(hours=2))),
        reason=None if state is LinkState.CONNECTED else "link lost",
        retry_in_s=12.34567 if state is LinkState.BACKOFF else None,
    )
    payload = status.payload("hub1")
    assert errors(STATUS, payload) == []
    assert errors(STATUS, json.loads(json.dumps(payload, allow_nan=False))) == []
    assert payload["schema"] == STATUS_SCHEMA
    assert payload["state"] == str(state)
    assert payload["since"] == "2024-03-01T12:00:00.250Z"
    assert payload["hub"] == "hub1"
    if state is LinkState.BACKOFF:
        assert payload["retry_in_s"] == 12.346
    else:
        assert payload["retry_in_s"] is None


@pytest.mark.parametrize(
    "change",
    [
        {"state": "sleeping"},
        {"since": "2024-03-01T12:00:00+00:00"},
        {"retry_in_s": -1},
        {"reason": 5},
        {"schema": "gatewayd/status/2"},
    ],
)
def test_status_schema_rejects(change: dict[str, Any]) -> None:
    payload = DeviceStatus("d", "simulator", LinkState.CONNECTING, T0).payload("hub1")
    assert errors(STATUS, payload) == []
    payload.update(change)
    assert errors(STATUS, payload) != []


def _v1_splice(record: str, hub: str, *, include_serial: bool) -> bytes:
    """The payload as schema v1 made it (kept verbatim): a cut at the stored record's last key,
    `serial`. The wire bytes must not change."""
    body = record[1:]
    if not include_serial:
        cut = body.rfind(',"serial":')
        body = body[:cut] + "}"
    head = f'{{"schema":"{READING_SCHEMA}","hub":{json.dumps(hub)},'
    return (head + body).encode()


@given(reading=readings())
def test_assembled_payload_equals_the_parsed_one_byte_for_byte(reading: Reading) -> None:
    stored = encode_record(reading)
    v1_record = json.dumps(to_record(reading), separators=(",", ":"))
    for include_serial in (False, True):
        made = reading_payload_json(stored, reading.serial, "hub-1", include_serial=include_serial)
        parsed = reading_payload(to_record(reading), "hub-1", include_serial=include_serial)
        assert made == json.dumps(parsed, separators=(",", ":")).encode()
        assert made == _v1_splice(v1_record, "hub-1", include_serial=include_serial)
        assert list(json.loads(made)) == list(parsed)


def test_assembled_payload_does_not_depend_on_the_stored_key_order() -> None:
    reading = make()
    fields = json.loads(encode_record(reading))
    shuffled = json.dumps(dict(reversed(fields.items())), separators=(",", ":"))
    for include_serial in (False, True):
        made = json.loads(
            reading_payload_json(shuffled, reading.serial, "h", include_serial=include_serial)
        )
        assert made == reading_payload(to_record(reading), "h", include_serial=include_serial)
        assert list(made)[:2] == ["schema", "hub"]
        assert ("serial" in made) is include_serial


def test_assembling_a_payload_refuses_what_is_not_a_stored_record() -> None:
    with pytest.raises(ValueError, match="not a stored record"):
        reading_payload_json('"text"', "SN", "h")
