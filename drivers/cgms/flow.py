"""The CGMS release rule wired to one connection: collector, device context, readings.

The rule itself (only a gap-free prefix goes to the store; damaged records asked again, then
passed over) is `protocols.cgms.release.ReleaseRule`, pure logic over the collector's events.
`RecordFlow` connects it to the driver's world:

* every batch of collector events goes to the rule with the collector's communication interval
  in force (`interval_min`), and the reports the rule asks for again go to the collector
  (`request_backfill`);
* the rule's readings are gatewayd `Reading`s (`convert`), damaged records are judged by the
  `DeviceContext` (`record_damaged`, `record_recovered`, `drop_packet`);
* the sensor's calendar offset is reported to the context once the status was read
  (`set_clock_offset`; None: unknown on this connection, not the value of an earlier one).

`ready` holds the readings that may go out; `failure` says why the connection should end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from drivers.cgms.convert import session_key
from gatewayd.plugin import DeviceContext, Reading
from protocols.cgms.events import CgmsEvent, Measurement
from protocols.cgms.release import ReleaseRule
from protocols.cgms.session import CgmsCollector

__all__ = ["RecordFlow"]


class RecordFlow:
    """Readings of one connection in a safe order; `ready` holds what may go out."""

    def __init__(
        self,
        collector: CgmsCollector,
        convert: Callable[[Measurement], Reading | None],
        ctx: DeviceContext[Any],
        *,
        released: tuple[str, int] | None = None,
    ) -> None:
        """`convert` makes a record's reading (None: not publishable); `ctx` takes damaged
        records and the sensor's clock offset; `released` is the (session, seq) of the newest
        reading already stored for this sensor."""
        self._collector = collector
        self._ctx = ctx
        self._rule: ReleaseRule[Reading] = ReleaseRule(convert, session_key, ctx, released=released)
        self._clock: timedelta | None = None
        self._clock_told = False  # set_clock_offset called on this connection

    @property
    def ready(self) -> deque[Reading]:
        """Readings that may go to the store now, oldest first."""
        return self._rule.ready

    @property
    def failure(self) -> str | None:
        """Why the connection should end (a report that timed out), else None."""
        return self._rule.failure

    def events(self, events: Sequence[CgmsEvent]) -> None:
        """Take what one `receive()` / `timeout()` returned."""
        rule = self._rule
        rule.events(events, interval_min=self._collector.interval_min)
        while rule.asks:
            self._collector.request_backfill(*rule.asks.popleft())
        self._measure_clock()

    def idle(self) -> None:
        """Nothing is pending or queued: release what is held."""
        self._rule.idle()

    def _measure_clock(self) -> None:
        """Report the sensor's calendar offset once the status was read."""
        if self._collector.status is None:
            return
        offset = self._collector.clock_offset
        if offset != self._clock or not self._clock_told:
            self._clock, self._clock_told = offset, True
            self._ctx.set_clock_offset(None if offset is None else offset.total_seconds())
