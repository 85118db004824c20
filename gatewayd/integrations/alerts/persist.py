"""The engine's state in the store: one JSON row per device in the `alert_state` table."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from gatewayd.integrations.alerts.kinds import Kind
from gatewayd.integrations.alerts.state import Active, DeviceState, Latest
from gatewayd.models import isoformat_utc
from gatewayd.store import Store

DDL = "CREATE TABLE IF NOT EXISTS alert_state (device TEXT PRIMARY KEY, state TEXT NOT NULL);"
_VERSION = 1


def load(store: Store, device: str) -> DeviceState | None:
    """The saved state of `device`, or None when there is none (ValueError if unreadable)."""
    rows = store.query("SELECT state FROM alert_state WHERE device = ?", (device,))
    return decode(rows[0][0]) if rows else None


def save(db: sqlite3.Connection, state: DeviceState) -> None:
    """Write `state` inside the caller's transaction."""
    db.execute(
        "INSERT OR REPLACE INTO alert_state (device, state) VALUES (?, ?)",
        (state.device, encode(state)),
    )


def encode(state: DeviceState) -> str:
    """The stored form of a state (compact JSON)."""
    latest = state.latest
    data = {
        "version": _VERSION,
        "device": state.device,
        "latest": None
        if latest is None
        else {
            "id": latest.id,
            "time": isoformat_utc(latest.time),
            "session": latest.session,
            "glucose_mgdl": latest.glucose_mgdl,
            "out_of_range": latest.out_of_range,
            "rate_mgdl_min": latest.rate_mgdl_min,
        },
        "active": [
            {
                "kind": a.kind.value,
                "id": a.id,
                "raised_at": isoformat_utc(a.raised_at),
                "notified_at": isoformat_utc(a.notified_at),
                "glucose_mgdl": a.glucose_mgdl,
                "out_of_range": a.out_of_range,
                "threshold": a.threshold,
            }
            for a in state.active
        ],
        "watch_since": _time_or_none(state.watch_since),
    }
    return json.dumps(data, separators=(",", ":"))


def decode(text: str) -> DeviceState:
    """A state from its stored form; ValueError when it is not one this version wrote."""
    try:
        data = json.loads(text)
        if data["version"] != _VERSION:
            raise ValueError(f"alert state version {data['version']!r} is not {_VERSION}")
        return DeviceState(
            device=data["device"],
            latest=None if data["latest"] is None else _latest(data["latest"]),
            active=tuple(_active(item) for item in data["active"]),
            watch_since=_parse_or_none(data["watch_since"]),
        )
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable alert state: {exc!r}") from exc


def _latest(d: dict[str, Any]) -> Latest:
    return Latest(
        id=d["id"],
        time=datetime.fromisoformat(d["time"]),
        session=d["session"],
        glucose_mgdl=d["glucose_mgdl"],
        out_of_range=d["out_of_range"],
        rate_mgdl_min=d["rate_mgdl_min"],
    )


def _active(d: dict[str, Any]) -> Active:
    return Active(
        kind=Kind(d["kind"]),
        id=d["id"],
        raised_at=datetime.fromisoformat(d["raised_at"]),
        notified_at=datetime.fromisoformat(d["notified_at"]),
        glucose_mgdl=d["glucose_mgdl"],
        out_of_range=d["out_of_range"],
        threshold=d["threshold"],
    )


def _time_or_none(dt: datetime | None) -> str | None:
    return None if dt is None else isoformat_utc(dt)


def _parse_or_none(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
