"""ops.privacy through ops.logs: what reaches the rendered log line, JSON and console.

Checked on the real output stream (not structlog.testing.capture_logs, which replaces the
processor chain and so would not see the redactor at all).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from gatewayd.models import Reading
from gatewayd.ops import logs, privacy

PASSWORD = "Tr0ub4dor-and-3-horses"
SERIAL = "SIM0A1B2C3D"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    privacy.forget_secrets()
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def configure(fmt: str = "json", **kwargs: Any) -> io.StringIO:
    stream = io.StringIO()
    logs.configure("debug", fmt, stream=stream, **kwargs)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def reading() -> Reading:
    now = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    return Reading("cgm-1", "simulator", SERIAL, "s1", 7, now, now, 142.0)


# --- secrets: always ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_configured_password_is_cut_out_of_every_string(fmt: str) -> None:
    stream = configure(fmt, secrets=[PASSWORD, None])
    log = logs.get_logger(component="publisher")
    log.warning("broker_unavailable", error=f"auth failed for gateway:{PASSWORD}")
    event = "odd event name " + PASSWORD  # a caller that breaks the snake_case rule
    log.info(event)
    log.info("nested", detail={"args": ["x", PASSWORD], "inner": {"why": PASSWORD}})
    log.info("as_bytes", blob=b"\x00" + PASSWORD.encode())
    text = stream.getvalue()
    assert PASSWORD not in text
    assert text.count(privacy.REDACTED) >= 5
    if fmt == "json":
        first = lines(stream)[0]
        assert first["error"] == "auth failed for gateway:<redacted>"
        assert first["component"] == "publisher"


def test_password_in_a_traceback_is_cut_out() -> None:
    stream = configure(secrets=[PASSWORD])
    try:
        raise ConnectionError(f"login refused with password {PASSWORD}")
    except ConnectionError:
        logs.get_logger().exception("connect_failed")
    (line,) = lines(stream)
    assert "ConnectionError: login refused with password <redacted>" in line["exception"]
    assert PASSWORD not in stream.getvalue()


def test_registered_secret_applies_to_loggers_configured_before() -> None:
    stream = configure()
    privacy.register_secret("api-secret-value-123")
    privacy.register_secret(None)
    privacy.register_secret("")
    logs.get_logger().info("upload_failed", reason="bad key api-secret-value-123 refused")
    assert lines(stream)[0]["reason"] == "bad key <redacted> refused"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://alice:pa55@ns.example.org/api", "https://<redacted>@ns.example.org/api"),
        ("mqtt://u:p@broker:1883", "mqtt://<redacted>@broker:1883"),
        ("Authorization: Bearer abc.def.ghi", "Authorization: <redacted>"),
        ("headers api-secret: 0123abcd, x", "headers api-secret: <redacted>, x"),
        ("no credentials in https://ns.example.org/", "no credentials in https://ns.example.org/"),
    ],
)
def test_url_credentials_and_auth_headers_cut_out(text: str, expected: str) -> None:
    stream = configure()
    logs.get_logger().info("http", detail=text)
    assert lines(stream)[0]["detail"] == expected


@pytest.mark.parametrize(
    "key", ["password", "mqtt_password", "Passphrase", "api_token", "Authorization", "cookie"]
)
def test_secret_keys_redacted_in_normal_mode_at_any_depth(key: str) -> None:
    stream = configure()
    logs.get_logger().info("x", **{key: "v1"}, options={key: "v2", "host": "h"})
    (line,) = lines(stream)
    assert line[key] == privacy.REDACTED
    assert line["options"] == {key: privacy.REDACTED, "host": "h"}


def test_normal_mode_keeps_serials_and_values() -> None:
    stream = configure(privacy="normal")
    logs.get_logger().info("simulator_started", serial=SERIAL, glucose_mgdl=142, hex="0a0b")
    (line,) = lines(stream)
    assert (line["serial"], line["glucose_mgdl"], line["hex"]) == (SERIAL, 142, "0a0b")


# --- strict ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_strict_redacts_serials_values_and_raw_bytes(fmt: str) -> None:
    stream = configure(fmt, privacy="strict")
    log = logs.get_logger(device="cgm-1")
    log.info(
        "reading",
        serial=SERIAL,
        glucose_mgdl=142,
        glucose_mmoll=7.9,
        sgv=142,
        value=142,
        trend_mgdl_min=-1.2,
        hex="deadbeef00",
        length=5,
        payload=b"\x01\x02",
        include_serial=True,
        seq=7,
    )
    text = stream.getvalue()
    assert SERIAL not in text
    assert "deadbeef" not in text
    for key in ("glucose_mgdl", "glucose_mmoll", "sgv", "value", "trend_mgdl_min"):
        assert f"{key}=142" not in text
        assert f'"{key}": 142' not in text
    if fmt == "console":
        assert "glucose_mgdl=<redacted>" in text
    if fmt == "json":
        (line,) = lines(stream)
        for key in ("serial", "glucose_mgdl", "glucose_mmoll", "sgv", "value", "hex", "payload"):
            assert line[key] == privacy.REDACTED, key
        # Not health data, not identifiers: kept.
        assert (line["device"], line["length"], line["seq"], line["include_serial"]) == (
            "cgm-1",
            5,
            7,
            True,
        )


def test_strict_remembers_a_serial_and_cuts_it_out_of_later_text() -> None:
    stream = configure(privacy="strict")
    log = logs.get_logger()
    log.info("simulator_started", serial=SERIAL)
    log.warning("resume_other_sensor", reason=f"stored readings are from {SERIAL}, not SIM9")
    log.info("free_text", note="was 142 mg/dL, now 7.9 mmol/L at 12:30")
    first, second, third = lines(stream)
    assert first["serial"] == privacy.REDACTED
    assert second["reason"] == "stored readings are from <redacted>, not SIM9"
    assert third["note"] == "was <redacted>, now <redacted> at 12:30"


def test_strict_redacts_whole_reading_objects() -> None:
    normal = configure(privacy="normal")
    logs.get_logger().info("odd", reading=reading())
    assert SERIAL in normal.getvalue()  # the control: rendered with str() it would leak
    strict = configure(privacy="strict")
    logs.get_logger().info("odd", reading=reading(), nested=[reading()])
    (line,) = lines(strict)
    assert line["reading"] == privacy.REDACTED
    assert line["nested"] == [privacy.REDACTED]
    assert SERIAL not in strict.getvalue()


def test_strict_covers_bound_and_context_values() -> None:
    stream = configure(privacy="strict", secrets=[PASSWORD])
    structlog.contextvars.bind_contextvars(serial=SERIAL)
    logs.get_logger(sensor_serial=SERIAL).info("x", password=PASSWORD)
    text = stream.getvalue()
    assert SERIAL not in text
    assert PASSWORD not in text


def test_unknown_privacy_level_refused() -> None:
    with pytest.raises(ValueError, match="privacy"):
        privacy.Redactor("paranoid")


def test_service_option_secrets_registered() -> None:
    @dataclass(frozen=True)
    class Options:
        url: str
        api_secret: str
        token: str | None = None

    privacy.register_secrets_of(Options("https://ns.example.org", "9f86d081884c7d659a2f"))
    privacy.register_secrets_of(Options)  # a class, not options: nothing
    privacy.register_secrets_of({"api_secret": "not-a-dataclass"})
    stream = configure()
    logs.get_logger().info("upload", url="https://ns.example.org", sent="api-9f86d081884c7d659a2f")
    logs.get_logger().info("other", text="not-a-dataclass")
    first, second = lines(stream)
    assert first["url"] == "https://ns.example.org"
    assert first["sent"] == "api-<redacted>"
    assert second["text"] == "not-a-dataclass"
