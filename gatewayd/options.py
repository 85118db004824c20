"""Typed reading of one TOML table, failing with the file, the dotted key and the reason.

The daemon's own config and every driver's `[[devices]]` options go through `OptionReader`, so
a wrong type, a bad value or an unknown key always fails at start with the same one-line shape:
``/etc/gatewayd/config.toml: devices[1].interval: must be a number > 0, got 'fast'``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from gatewayd.errors import ConfigError

T = TypeVar("T")
_MISSING: Any = object()


class OptionReader:
    """Reads typed values out of one table and remembers which keys were used."""

    def __init__(self, table: Mapping[str, Any], file: Path | str | None, prefix: str) -> None:
        self._table = table
        self.file = file
        self.prefix = prefix
        self._used: set[str] = set()

    def key(self, name: str) -> str:
        """The dotted key of `name` for messages (`mqtt.url`, `devices[0].speed`)."""
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, reason: str) -> ConfigError:
        """A `ConfigError` pointing at `name` in this table."""
        return ConfigError(self.file, self.key(name), reason)

    def has(self, name: str) -> bool:
        """Whether the table sets `name`."""
        return name in self._table

    def table(self, name: str, *, required: bool = False) -> OptionReader:
        """A reader over the sub-table `name` (an empty one when absent and not required)."""
        value = self.raw(name, _MISSING if required else {})
        if not isinstance(value, Mapping):
            raise self.error(name, f"must be a table ([{self.key(name)}]), got {value!r}")
        return OptionReader(value, self.file, self.key(name))

    def table_value(self) -> Mapping[str, Any]:
        """The table this reader reads (all of it, used or not)."""
        return self._table

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        """The untyped value of `name` (required unless a default is given)."""
        return self._get(name, default)

    def _get(self, name: str, default: Any) -> Any:
        self._used.add(name)
        if name in self._table:
            return self._table[name]
        if default is _MISSING:
            raise self.error(name, "is required")
        return default

    def string(self, name: str, default: str = _MISSING) -> str:
        """A non-empty string."""
        value = self._string(name, default)
        assert value is not None  # noqa: S101 - only None when None was the default
        return value

    def optional_string(self, name: str) -> str | None:
        """A non-empty string, or None when the key is absent."""
        return self._string(name, None)

    def _string(self, name: str, default: str | None) -> str | None:
        value = self._get(name, default)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(name, f"must be a string, got {value!r}")
        if not value:
            raise self.error(name, "must not be empty")
        return value

    def boolean(self, name: str, default: bool = _MISSING) -> bool:
        """`true` or `false`."""
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, got {value!r}")
        return value

    def integer(
        self,
        name: str,
        default: int = _MISSING,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        """A whole number within [minimum, maximum]."""
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be a whole number, got {value!r}")
        self._check_range(name, value, minimum, maximum)
        return value

    def number(
        self,
        name: str,
        default: float = _MISSING,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
    ) -> float:
        """A number (integer or float) within the range."""
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise self.error(name, f"must be a finite number, got {value!r}")
        if exclusive_minimum and minimum is not None and value <= minimum:
            raise self.error(name, f"must be > {minimum}, got {value!r}")
        self._check_range(name, value, minimum, maximum)
        return float(value)

    def choice(self, name: str, choices: tuple[str, ...], default: str = _MISSING) -> str:
        """One of a fixed set of strings."""
        value = self.string(name, default)
        if value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def path(self, name: str, default: Path = _MISSING, *, base: Path | None = None) -> Path:
        """A filesystem path; a relative one is taken relative to `base` (the config's folder)."""
        if not self.has(name) and default is not _MISSING:
            self._used.add(name)
            return default
        path = Path(self.string(name)).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        return path

    def optional_path(self, name: str, *, base: Path | None = None) -> Path | None:
        """A path, or None when the key is absent."""
        if not self.has(name):
            self._used.add(name)
            return None
        return self.path(name, base=base)

    def finish(self) -> None:
        """Fail on the first key nobody asked for (a typo must not be silently ignored)."""
        for name in self._table:
            if name not in self._used:
                raise self.error(name, "unknown key")

    def _check_range(
        self, name: str, value: float, minimum: float | None, maximum: float | None
    ) -> None:
        if minimum is not None and value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"must be <= {maximum}, got {value!r}")
