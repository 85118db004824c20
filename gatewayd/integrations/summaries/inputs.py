"""What `gatewayd report` and `gatewayd export` share: the config, the device, times and zones."""

from __future__ import annotations

import os
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gatewayd.errors import UsageError
from gatewayd.ops import config as config_module
from gatewayd.ops.config import Config
from gatewayd.store.view import StoreView

_LOCALTIME = Path("/etc/localtime")


OptionError = UsageError  # a command-line option with a value that cannot be used


def open_device(config_path: Path, device: str) -> tuple[Config, StoreView]:
    """The config and a read-only store, once `device` is known to either of them."""
    cfg = config_module.load(config_path)
    store = StoreView(cfg.store.path)
    configured = [d.id for d in cfg.devices]
    if device not in configured and device not in store.devices():
        known = ", ".join(configured) or "none"
        store.close()
        raise OptionError("--device", f"no device {device!r} in {config_path} (devices: {known})")
    return cfg, store


def zone(name: str | None) -> tzinfo:
    """The IANA zone `name`, else the hub's local zone ($TZ, /etc/localtime), else UTC."""
    if name is None:
        name = os.environ.get("TZ", "").removeprefix(":") or None
        if name is None:
            try:
                with _LOCALTIME.open("rb") as file:
                    return ZoneInfo.from_file(file, key="localtime")
            except (OSError, ValueError):
                return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise OptionError("--tz", f"unknown time zone {name!r}") from None


def parse_time(text: str, option: str, tz: tzinfo, *, end: bool = False) -> datetime:
    """An ISO-8601 date or date-time; without an offset it is in `tz`. A bare date is that
    day's midnight, or with `end` the next midnight (so `--to 2026-01-14` includes that day)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=int(end)), time(), tz)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise OptionError(option, f"not an ISO-8601 date or date-time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)
