"""Readings as JSON: the stored record and the published MQTT `reading` payload.

One mapping serves both: the store keeps `to_record(reading)` without the sensor serial, which
has a column of its own (`encode_record`); the publisher sends `reading_payload(...)`, which is
that record plus the contract's `schema` and `hub`, and the serial only if the config asks for
it. The JSON Schema in `gatewayd/schemas/` documents
the payload; tests validate every published reading against it.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from gatewayd.models import DeviceIdentity, Direction, Reading, isoformat_utc

#: Version of the `reading` payload; bumped on any incompatible change (fields only get added).
READING_SCHEMA = "gatewayd/reading/1"
STATUS_SCHEMA = "gatewayd/status/1"


def to_record(reading: Reading) -> dict[str, Any]:
    """Every field of a reading, JSON-ready, in the contract's names."""
    return {
        "id": reading.id,
        "device": reading.device,
        "driver": reading.driver,
        "session": reading.session,
        "seq": reading.seq,
        "time": isoformat_utc(reading.time),
        "received": isoformat_utc(reading.received),
        "glucose_mgdl": reading.glucose_mgdl,
        "glucose_mmoll": reading.glucose_mmoll,
        "out_of_range": reading.out_of_range,
        "trend_mgdl_min": reading.trend_mgdl_min,
        "direction": str(reading.direction),
        "quality_pct": reading.quality_pct,
        "status": list(reading.status),
        "backfilled": reading.backfilled,
        "serial": reading.serial,
    }


def from_record(record: dict[str, Any]) -> Reading:
    """The reading a `to_record` mapping was made from."""
    return Reading(
        id=record["id"],
        device=record["device"],
        driver=record["driver"],
        serial=record["serial"],
        session=record["session"],
        seq=record["seq"],
        time=datetime.fromisoformat(record["time"]),
        received=datetime.fromisoformat(record["received"]),
        glucose_mgdl=record["glucose_mgdl"],
        out_of_range=record["out_of_range"],
        trend_mgdl_min=record["trend_mgdl_min"],
        direction=Direction(record["direction"]),
        quality_pct=record["quality_pct"],
        status=tuple(record["status"]),
        backfilled=record["backfilled"],
    )


def encode_record(reading: Reading) -> str:
    """The stored form of a reading: compact JSON of `to_record` without the serial (the
    store keeps it in a column of its own)."""
    record = to_record(reading)
    del record["serial"]
    return json.dumps(record, separators=(",", ":"))


def decode_record(text: str, serial: str) -> Reading:
    """A reading from its stored form and its serial."""
    record = json.loads(text)
    record["serial"] = serial
    return from_record(record)


def identity_key(device: str) -> str:
    """The store's `meta` key under which a device's identity is kept."""
    return f"identity/{device}"


def encode_identity(identity: DeviceIdentity) -> str:
    """The stored form of what a device said about itself (compact JSON)."""
    fields = ("manufacturer", "model", "serial", "firmware")
    return json.dumps({f: getattr(identity, f) for f in fields}, separators=(",", ":"))


def decode_identity(text: str) -> DeviceIdentity:
    """The identity an `encode_identity` text was made from."""
    return DeviceIdentity(**json.loads(text))


def reading_payload(
    record: dict[str, Any], hub: str, *, include_serial: bool = False
) -> dict[str, Any]:
    """The MQTT `reading`/`state` payload for a stored record."""
    payload = {"schema": READING_SCHEMA, "hub": hub, **record}
    if not include_serial:
        del payload["serial"]
    return payload


def reading_payload_json(
    record: str, serial: str, hub: str, *, include_serial: bool = False
) -> bytes:
    """`reading_payload` of a stored record (`encode_record`) as JSON bytes, without a parse.

    The outbox replays thousands of rows a second; parsing and re-encoding each one cost a
    quarter of the publisher's CPU. The stored record is a compact JSON object of its own; its
    members go between the contract's head (`schema`, `hub`) and the serial, which is kept
    apart. Nothing depends on the order of the record's keys; the bytes are those of
    `json.dumps(reading_payload(...), separators=(",", ":"))`.
    """
    if not record.startswith("{") or not record.endswith("}"):
        raise ValueError(f"not a stored record: {record[:40]!r}")
    members = record[1:-1]
    tail = f',"serial":{json.dumps(serial)}}}' if include_serial else "}"
    head = f'{{"schema":"{READING_SCHEMA}","hub":{json.dumps(hub)}'
    return (head + ("," + members if members else "") + tail).encode()


@cache
def json_schema(name: str) -> dict[str, Any]:
    """A payload's JSON Schema as shipped in the package (`reading` or `status`)."""
    path = resources.files("gatewayd").joinpath(f"schemas/{name}.schema.json")
    schema: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return schema
