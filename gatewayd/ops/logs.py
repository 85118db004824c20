"""structlog set-up: JSON lines under systemd (stdout not a TTY), a readable console on a TTY.

Events are snake_case names with bound context (`driver=`, `device=`). A redaction processor
(`gatewayd.ops.privacy.Redactor`) removes anything that looks like a secret, whatever the caller
passed, and with `[log] privacy = "strict"` serials, glucose values and raw device bytes too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from datetime import datetime
from typing import Any, TextIO

import structlog

from gatewayd.ops.privacy import SECRET_MARKERS, Privacy, Redactor

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
#: A key containing any of these (case-insensitive) has its value replaced before rendering.
_SECRET_MARKERS = SECRET_MARKERS


def _json_default(value: object) -> str:
    """JSON for values the encoder does not know: datetimes as ISO-8601, the rest as str."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the value of any secret-named key with a fixed marker."""
    for key in event:
        lowered = key.lower()
        if any(marker in lowered for marker in _SECRET_MARKERS):
            event[key] = "<redacted>"
    return event


def configure(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    *,
    privacy: Privacy | str = "normal",
    secrets: Iterable[str | None] = (),
) -> None:
    """Configure structlog for the process (idempotent; call again to change).

    `secrets` (e.g. the broker password) are cut out of every string of every event; `privacy`
    "strict" also redacts serials, glucose values and raw device bytes (see gatewayd.ops.privacy).
    """
    out = stream if stream is not None else sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer(default=_json_default)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks become text first, so the redactor sees them too.
            structlog.processors.format_exc_info,
            Redactor(privacy, secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger with `context` bound."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind(**context)
    return logger
