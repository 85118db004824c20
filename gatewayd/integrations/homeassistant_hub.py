"""The hub's own state, retained on `<root>/<hub>/outbox`, for Home Assistant's hub device.

    {"schema": "gatewayd/outbox/1", "hub": "kitchen", "readings_waiting": 0,
     "last_delivery": "2026-11-22T15:40:01.212Z"}

`readings_waiting` is the outbox depth (readings stored but not yet acknowledged by the broker);
`last_delivery` when the broker last acknowledged a reading, as seen by this service (to within
`CHECK_S`; null until the first since the daemon started). Checked every `CHECK_S` seconds and
queued only when it changed, replacing a copy still waiting, so it costs one small write per
change. Runs whenever `[homeassistant]` is enabled (its hub device shows these).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gatewayd.integrations import homeassistant
from gatewayd.models import Reading, isoformat_utc
from gatewayd.ops.config import Config
from gatewayd.services import ServiceContext, ServiceSpec

SCHEMA = "gatewayd/outbox/1"
#: Seconds between two looks at the outbox.
CHECK_S = 10.0


@dataclass(frozen=True, slots=True)
class HubStateOptions:
    """When to look (there is nothing to configure; tests look more often)."""

    check_s: float = CHECK_S


def parse(config: Config) -> HubStateOptions | None:
    """On with an enabled `[homeassistant]` (whose table that service validates)."""
    options = homeassistant.parse(config)
    return HubStateOptions() if options is not None and options.enabled else None


class HubState:
    """Publishes `<root>/<hub>/outbox` (retained) when it changes."""

    def __init__(self, options: HubStateOptions, context: ServiceContext) -> None:
        self.options = options
        self.context = context
        self.last_delivery: datetime | None = None
        self._delivered = context.publisher.delivered
        self._sent: dict[str, Any] | None = None

    async def run(self) -> None:
        """Look now and every `check_s` seconds, until cancelled."""
        while True:
            self.check()
            await asyncio.sleep(self.options.check_s)

    def on_reading(self, reading: Reading) -> None:
        """Nothing to do: the outbox is looked at on a schedule."""

    def check(self) -> bool:
        """Queue the state if it changed since the last one queued; whether it did."""
        ctx = self.context
        if ctx.publisher.delivered != self._delivered:
            self._delivered = ctx.publisher.delivered
            self.last_delivery = datetime.now(UTC)
        payload = {
            "schema": SCHEMA,
            "hub": ctx.topics.hub,
            "readings_waiting": ctx.store.outbox_depth(),
            "last_delivery": isoformat_utc(self.last_delivery) if self.last_delivery else None,
        }
        if payload == self._sent:
            return False
        body = json.dumps(payload, separators=(",", ":")).encode()
        ctx.store.replace_retained(ctx.topics.hub_outbox, body)
        ctx.publisher.notify()
        self._sent = payload
        return True


def _create(options: HubStateOptions, context: ServiceContext) -> HubState:
    return HubState(options, context)


SPEC: ServiceSpec[HubStateOptions] = ServiceSpec("hubstate", parse, _create)
