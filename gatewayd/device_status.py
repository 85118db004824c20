"""The link state of each device, as published retained on `<root>/<hub>/<device>/status`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from gatewayd.models import isoformat_utc
from gatewayd.store.codec import STATUS_SCHEMA


class LinkState(StrEnum):
    """Where a device's loop stands."""

    CONNECTING = "connecting"  # looking for the device / opening the link
    CONNECTED = "connected"  # session open, readings flow
    BACKOFF = "backoff"  # the link failed; waiting `retry_in_s` before the next attempt
    PARKED = "parked"  # a non-retryable error; needs a person (reason says what)
    STOPPED = "stopped"  # the daemon stopped cleanly


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One device's state, why it is in it, and since when."""

    device: str
    driver: str
    state: LinkState
    since: datetime
    reason: str | None = None
    retry_in_s: float | None = None
    #: Records passed over because they stayed damaged in the device's memory.
    records_unreadable: int = 0
    #: The device clock minus the hub's clock (s), as last measured; None when unknown.
    clock_offset_s: float | None = None

    def payload(self, hub: str) -> dict[str, Any]:
        """The JSON payload of the `status` topic."""
        return {
            "schema": STATUS_SCHEMA,
            "hub": hub,
            "device": self.device,
            "driver": self.driver,
            "state": str(self.state),
            "reason": self.reason,
            "since": isoformat_utc(self.since),
            "retry_in_s": None if self.retry_in_s is None else round(self.retry_in_s, 3),
            "records_unreadable": self.records_unreadable,
            "clock_offset_s": self.clock_offset_s,
        }
