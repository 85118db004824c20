"""What never reaches a log line: secrets always; health data and identifiers with `strict`.

The structlog processor `Redactor` runs on every event, after exceptions are rendered to text and
before the renderer, so it sees everything that will be written (bound context, contextvars,
nested dicts and lists, the `event` string itself and tracebacks).

Always (`[log] privacy = "normal"`, the default):

- the value of any key that names a secret (`password`, `token`, `secret`, `api_key`, ...), at
  any depth, becomes ``<redacted>``;
- every registered secret value (the broker password, whatever a service registers with
  `register_secret`) is cut out of every string, wherever it appears: an exception text, a URL;
- credentials in URLs (``scheme://user:pass@host``) and `Authorization:` / `api-secret:` header
  values are cut out of every string.

With `[log] privacy = "strict"` as well:

- identifiers of a sensor (`serial`, `transmitter_id`, BLE `mac`/`ble_address`, ...): the value is
  redacted and remembered, and from then on cut out of every string too (a serial that shows up
  later inside a `reason=` text is still caught);
- glucose values (`glucose`, `glucose_mgdl`, `glucose_mmoll`, `sgv`, `mgdl`, `value`, ...) and
  free-text values with a unit (``142 mg/dL``, ``7.9 mmol/L``);
- raw device bytes (`hex`, `raw`, `payload`, `data`, `frame`, `packet`, `record`, `body`, and any
  `bytes` value): a frame may carry a serial or a glucose value; the `length` stays;
- objects that carry a reading or an identity (anything with a `serial` or `glucose_mgdl`
  attribute) as a whole.

Device and hub ids are the operator's choice and are never redacted (choose ids that name no
person; `gatewayd doctor` warns when an id contains a sensor serial it has seen).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Literal

Privacy = Literal["normal", "strict"]
PRIVACY_LEVELS: tuple[Privacy, ...] = ("normal", "strict")
REDACTED = "<redacted>"

#: A key containing any of these (case-insensitive) is a secret: its value is always replaced.
SECRET_MARKERS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "credential",
    "key_material",
    "private_key",
    "authorization",
    "cookie",
)
#: Strict: keys that identify a sensor (and so, through it, a person). Values are remembered.
IDENTIFIER_KEYS = frozenset(
    {"serial", "sensor_serial", "serial_number", "serialnumber", "sn", "transmitter",
     "transmitter_id", "mac", "bdaddr", "ble_address", "device_address"}
)  # fmt: skip
#: Strict: a key containing any of these holds an identifier as well (`resume_serial`, ...).
IDENTIFIER_MARKERS = ("serial", "transmitter")
#: Strict: keys that hold health data (exact names, case-insensitive).
HEALTH_KEYS = frozenset({"value", "sgv", "bg", "mbg", "glucose", "trend", "trend_mgdl_min"})
#: Strict: a key containing any of these holds health data.
HEALTH_MARKERS = ("glucose", "mgdl", "mmol", "sgv")
#: Strict: keys holding raw device bytes (which may carry a serial or a value).
RAW_KEYS = frozenset(
    {"hex", "raw", "payload", "data", "frame", "packet", "record", "body", "bytes"}
)

#: How many identifier values `strict` remembers (a hub has a handful of sensors a year).
_MAX_LEARNED = 256
#: Learned identifiers shorter than this are not cut out of free text (they would match anywhere).
_MIN_LEARNED_LEN = 4

_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@")
_AUTH_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|api-secret|x-api-key)(\s*[:=]\s*)"
    r"(bearer\s+|basic\s+|token\s+)?[^\s,;\"']+"
)
_WITH_UNIT = re.compile(r"(?i)(?<![\w.])[-+]?\d+(?:[.,]\d+)?\s*(?:mg/dl|mgdl|mmol/l|mmoll)\b")

#: Secret values registered by the process (the broker password, service API secrets).
_registry: set[str] = set()


def register_secret(value: str | None) -> None:
    """Cut `value` out of every log line from now on (no-op for None or an empty string)."""
    if value:
        _registry.add(value)


def register_secrets_of(options: object) -> None:
    """Register the secret-named `str` fields of a dataclass (a service's parsed options:
    `api_secret`, `token`...), so a service need not remember to register its own."""
    if not dataclasses.is_dataclass(options) or isinstance(options, type):
        return
    for item in dataclasses.fields(options):
        value = getattr(options, item.name, None)
        if isinstance(value, str) and is_secret_key(item.name):
            register_secret(value)


def forget_secrets() -> None:
    """Forget every registered secret (for tests)."""
    _registry.clear()


def is_secret_key(key: str) -> bool:
    """Whether a key names a secret (`mqtt_password`, `api_token`, `Authorization`...)."""
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def _is_identifier_key(lowered: str) -> bool:
    return lowered in IDENTIFIER_KEYS or any(m in lowered for m in IDENTIFIER_MARKERS)


def _is_health_key(lowered: str) -> bool:
    return lowered in HEALTH_KEYS or any(m in lowered for m in HEALTH_MARKERS)


class Redactor:
    """The structlog processor: see the module docstring for what it removes."""

    def __init__(
        self, privacy: Privacy | str = "normal", secrets: Iterable[str | None] = ()
    ) -> None:
        if privacy not in PRIVACY_LEVELS:
            raise ValueError(f"privacy must be one of {', '.join(PRIVACY_LEVELS)}, got {privacy!r}")
        self.strict = privacy == "strict"
        self.secrets = {s for s in secrets if s}
        #: Identifier values seen under an identifier key (strict only), most recent last.
        self.learned: dict[str, None] = {}

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Redact `event` in place (and return it, as a structlog processor does)."""
        if self.strict:
            self._learn(event)
        needles = self._needles()
        for key in list(event):
            event[key] = self._value(key, event[key], needles)
        return event

    # -- what to cut out of free text ---------------------------------------------------------

    def _needles(self) -> list[str]:
        """Secret and learned values, longest first (so a longer one is not cut in half)."""
        found = self.secrets | _registry
        if self.strict:
            found |= {v for v in self.learned if len(v) >= _MIN_LEARNED_LEN}
        return sorted(found, key=len, reverse=True)

    def _learn(self, value: Any, key: str = "") -> None:
        """Remember identifier values anywhere in the event before anything is rendered."""
        if isinstance(value, Mapping):
            for k, v in value.items():
                self._learn(v, str(k))
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                self._learn(item, key)
        elif isinstance(value, str) and value and _is_identifier_key(key.lower()):
            self.learned.pop(value, None)
            self.learned[value] = None
            while len(self.learned) > _MAX_LEARNED:
                del self.learned[next(iter(self.learned))]
        elif not isinstance(value, str | bytes | int | float | bool) and value is not None:
            serial = getattr(value, "serial", None)
            if isinstance(serial, str):
                self._learn(serial, "serial")

    # -- one value ----------------------------------------------------------------------------

    def _value(self, key: str, value: Any, needles: list[str]) -> Any:  # noqa: PLR0911
        lowered = key.lower()
        if value is None or isinstance(value, bool):
            return value
        if is_secret_key(lowered):
            return REDACTED
        if self.strict and (
            _is_identifier_key(lowered) or _is_health_key(lowered) or lowered in RAW_KEYS
        ):
            return REDACTED
        if isinstance(value, str):
            return self._text(value, needles)
        if isinstance(value, Mapping):
            return {k: self._value(str(k), v, needles) for k, v in value.items()}
        if isinstance(value, list | tuple):
            items = [self._value(key, item, needles) for item in value]
            return items if isinstance(value, list) else tuple(items)
        if isinstance(value, bytes | bytearray | memoryview):
            return self._bytes(bytes(value), needles)
        if isinstance(value, int | float):
            return value
        if self.strict and (hasattr(value, "serial") or hasattr(value, "glucose_mgdl")):
            return REDACTED
        if needles or self.strict:
            # Rendered as str() by the renderer anyway: scrub that text now.
            text = str(value)
            scrubbed = self._text(text, needles)
            return value if scrubbed == text else scrubbed
        return value

    def _bytes(self, value: bytes, needles: list[str]) -> Any:
        if self.strict:
            return f"{REDACTED} ({len(value)} bytes)"
        if any(n.encode() in value for n in needles):
            return REDACTED
        return value

    def _text(self, text: str, needles: list[str]) -> str:
        for needle in needles:
            if needle in text:
                text = text.replace(needle, REDACTED)
        if "://" in text:
            text = _URL_CREDENTIALS.sub(f"{REDACTED}@", text)
        text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        if self.strict:
            text = _WITH_UNIT.sub(REDACTED, text)
        return text
