"""gatewayd.ops.logs: structlog as JSON lines or console text, with secrets redacted."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from gatewayd.ops import logs

SECRET = "hunter2-very-secret"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    return [json.loads(line) for line in lines]


# --- JSON ---------------------------------------------------------------------------------------


def test_json_lines_have_event_level_timestamp() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    log = logs.get_logger(component="test", device="cgm1")
    log.info("reading_stored", glucose=120, seq=4)
    log.warning("link_lost", reason="timeout")
    first, second = json_lines(stream)
    assert first["event"] == "reading_stored"
    assert first["level"] == "info"
    assert (first["component"], first["device"], first["glucose"], first["seq"]) == (
        "test",
        "cgm1",
        120,
        4,
    )
    assert second["event"] == "link_lost"
    assert second["level"] == "warning"
    for line in (first, second):
        assert line["timestamp"].endswith("Z")
        assert datetime.fromisoformat(line["timestamp"]).utcoffset() is not None


def test_auto_format_is_json_when_not_a_terminal() -> None:
    stream = io.StringIO()
    logs.configure("info", "auto", stream=stream)
    logs.get_logger().info("started")
    (line,) = json_lines(stream)
    assert line["event"] == "started"


def test_exception_is_rendered_in_json() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    try:
        raise RuntimeError("kaputt")
    except RuntimeError:
        logs.get_logger().exception("failed")
    (line,) = json_lines(stream)
    assert line["event"] == "failed"
    assert line["level"] == "error"
    assert "RuntimeError: kaputt" in line["exception"]


def test_json_renders_datetimes_and_other_objects() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    logs.get_logger().info("resume", at=datetime(2024, 3, 1, 12, 0, tzinfo=UTC), db=Path("/a/b"))
    (line,) = json_lines(stream)
    assert line["at"] == "2024-03-01T12:00:00+00:00"
    assert line["db"] == "/a/b"


# --- console ------------------------------------------------------------------------------------


def test_console_format() -> None:
    stream = io.StringIO()
    logs.configure("info", "console", stream=stream)
    logs.get_logger(device="cgm1").info("reading_stored", glucose=120)
    text = stream.getvalue()
    assert "reading_stored" in text
    assert "device" in text
    assert "cgm1" in text
    assert "glucose" in text
    assert "\x1b[" not in text  # no colours when the stream is not a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


# --- redaction ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize(
    "key", ["password", "passwd", "secret", "api_secret", "token", "key_material"]
)
def test_secrets_redacted(fmt: str, key: str) -> None:
    stream = io.StringIO()
    logs.configure("debug", fmt, stream=stream)
    logs.get_logger().info("connecting", **{key: SECRET}, host="broker")
    text = stream.getvalue()
    assert SECRET not in text
    assert "<redacted>" in text
    assert "broker" in text
    if fmt == "json":
        (line,) = json_lines(stream)
        assert line[key] == "<redacted>"
        assert line["host"] == "broker"


def test_bound_and_context_secrets_redacted() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    structlog.contextvars.bind_contextvars(token=SECRET, request="r1")
    logs.get_logger(password=SECRET).info("hello")
    (line,) = json_lines(stream)
    assert SECRET not in stream.getvalue()
    assert line["token"] == "<redacted>"
    assert line["password"] == "<redacted>"
    assert line["request"] == "r1"


def test_redact_secrets_processor() -> None:
    event = {"event": "x", "password": "p", "token": "t", "user": "u"}
    out = logs.redact_secrets(None, "info", event)
    assert out == {"event": "x", "password": "<redacted>", "token": "<redacted>", "user": "u"}


# --- levels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("debug", ["d", "i", "w", "e"]),
        ("info", ["i", "w", "e"]),
        ("warning", ["w", "e"]),
        ("error", ["e"]),
    ],
)
def test_level_filtering(level: str, expected: list[str]) -> None:
    stream = io.StringIO()
    logs.configure(level, "json", stream=stream)
    log = logs.get_logger()
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [line["event"] for line in json_lines(stream)] == expected


def test_unknown_level_refused() -> None:
    with pytest.raises(KeyError):
        logs.configure("verbose", "json", stream=io.StringIO())


def test_configure_again_switches_stream_and_level() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("info", "json", stream=first)
    logs.get_logger().info("one")
    logs.configure("error", "json", stream=second)
    log = logs.get_logger()
    log.info("two")
    log.error("three")
    assert [line["event"] for line in json_lines(first)] == ["one"]
    assert [line["event"] for line in json_lines(second)] == ["three"]
