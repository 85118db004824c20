"""The broker link as the daemon sees it, for `gatewayd status`: a small JSON file beside the
store (`<store>.broker`), rewritten by the publisher when the link comes up, fails, or stops.

`gatewayd status` is another process and the broker may be what is down, so the daemon leaves
its view on disk: connected to which URL since when, or unavailable since when, why, and when
(and to which URL) the next attempt goes. One small rewrite per connection attempt (at most one
per `[mqtt] backoff_min`), replaced atomically and never fsynced: after a power cut a stale view
is harmless, its `updated` time says how old it is.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from gatewayd.models import isoformat_utc


class BrokerLink(StrEnum):
    """Where the broker link stands."""

    CONNECTED = "connected"
    UNAVAILABLE = "unavailable"  # the last attempt failed; `next_attempt` says when the next is
    STOPPED = "stopped"  # the daemon stopped


@dataclass(frozen=True, slots=True)
class BrokerState:
    """The daemon's view of its broker link."""

    state: BrokerLink
    #: Connected: the broker in use. Unavailable: the broker of the next attempt.
    url: str
    since: datetime
    updated: datetime
    reason: str | None = None
    next_attempt: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The JSON document (also `gatewayd status --format json`'s `broker_link`)."""
        return {
            "state": str(self.state),
            "url": self.url,
            "since": isoformat_utc(self.since),
            "updated": isoformat_utc(self.updated),
            "reason": self.reason,
            "next_attempt": isoformat_utc(self.next_attempt) if self.next_attempt else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BrokerState:
        """Parse `as_json()`'s document (KeyError / ValueError when it is not one)."""
        next_attempt = data.get("next_attempt")
        return cls(
            state=BrokerLink(data["state"]),
            url=str(data["url"]),
            since=datetime.fromisoformat(data["since"]),
            updated=datetime.fromisoformat(data["updated"]),
            reason=data.get("reason"),
            next_attempt=datetime.fromisoformat(next_attempt) if next_attempt else None,
        )


def state_path(store_path: Path) -> Path:
    """Where the daemon using the store at `store_path` leaves its broker state."""
    return store_path.with_name(store_path.name + ".broker")


def write_state(path: Path, state: BrokerState) -> None:
    """Replace the state file atomically; never raises (a full disk must not stop the link)."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps(state.as_json()) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()


def read_state(path: Path) -> BrokerState | None:
    """The state the daemon left, or None (never ran, or an unreadable file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return BrokerState.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None
