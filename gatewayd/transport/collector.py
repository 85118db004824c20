"""`CollectorLoop`: runs a sans-I/O GATT collector on a `GattLink`, written once for every driver.

A collector (`protocols.cgms.session.CgmsCollector`, `protocols.glucose.session.GlucoseCollector`,
`protocols.dexcom_g6.session.G6Session`, or a third-party one) is pure: it hands out one
`protocols.gatt.session.Request` at a time (`next_request()`), takes what the device sent (its
`receive(...)`, wrapped by the driver as `feed(uuid, data)`) and is told when an awaited answer
did not come (`timeout()`). It returns events; the loop never interprets them. The loop does the
I/O:

* `perform_next()` - the next request, run on the link: a READ's value goes to `feed`; a WRITE
  with `awaits_response` leaves its answer (an indication on the same characteristic) due.
  A request the device refuses with an ATT error (`AttError`) is skipped when
  `skip_refused(request)` says so (the collector is told through `timeout()` when it waited for
  an answer, as if none came) and raised otherwise. Returns the events, or None when the
  collector has nothing to do now.
* `wait()` - the next notification / indication, fed to the collector (through `notified`
  when the driver filters what the device sends by itself, else `feed`). While an answer is due
  the wait is bounded by `response_timeout` and silence becomes `collector.timeout()`; when
  nothing is due it is bounded by `idle_timeout` (None: for ever) and silence returns None
  (the driver decides: a meter that is done, a transmitter that went quiet). `LinkLost` when the
  device drops the link.
* `steps()` - both in a loop, as an async iterator of event lists; it ends on idle silence.

Hooks for what is specific to a device: `before(request)` / `after(request)` run around each
request (e.g. subscribe to a control point before its first write; pair after a bond request).

Example (a driver's `readings()`)::

    loop = CollectorLoop(link, collector, feed=collector.receive, idle_timeout=10.0)
    async for events in loop.steps():
        for reading in self.handle(events):
            yield reading
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from gatewayd.errors import AttError
from gatewayd.transport.gatt import GattLink
from protocols.gatt.session import Request, RequestKind

__all__ = ["Collector", "CollectorLoop"]

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)


class Collector(Protocol[E_co]):
    """What the loop needs of a sans-I/O collector (its `receive` is passed as `feed`)."""

    def next_request(self) -> Request | None:
        """The next GATT operation, or None (waiting for an answer, idle, or done)."""
        ...

    def timeout(self) -> Sequence[E_co]:
        """The awaited answer did not come."""
        ...


def _always(_request: Request) -> bool:
    return True


class CollectorLoop(Generic[E]):
    """Drives `collector` over `link` (see the module docstring)."""

    def __init__(
        self,
        link: GattLink,
        collector: Collector[E],
        feed: Callable[[str, bytes], Sequence[E]],
        *,
        notified: Callable[[str, bytes], Sequence[E]] | None = None,
        idle_timeout: float | None = None,
        response_timeout: float | None = None,
        skip_refused: Callable[[Request], bool] = _always,
        before: Callable[[Request], Awaitable[None]] | None = None,
        after: Callable[[Request], Awaitable[None]] | None = None,
    ) -> None:
        """`feed` takes read values and, unless `notified` is given, what the device sends by
        itself too; `response_timeout` defaults to the link's operation `timeout`."""
        self.link = link
        self.collector = collector
        self.feed = feed
        self.notified = feed if notified is None else notified
        self.idle_timeout = idle_timeout
        self.response_timeout = link.timeout if response_timeout is None else response_timeout
        self.skip_refused = skip_refused
        self.before = before
        self.after = after
        #: The write whose indication is due, if any.
        self.awaiting: Request | None = None

    async def perform_next(self) -> list[E] | None:
        """Run the collector's next request: its events, or None when it has none now."""
        request = self.collector.next_request()
        if request is None:
            return None
        if self.before is not None:
            await self.before(request)
        what = request.label or f"{request.kind} {request.characteristic}"
        uuid = request.characteristic
        events: list[E] = []
        try:
            if request.kind is RequestKind.READ:
                events = list(self.feed(uuid, await self.link.read(uuid, what=what)))
            else:
                await self.link.write(uuid, request.data, what=what)
                if request.awaits_response:
                    self.awaiting = request
        except AttError as exc:
            if not self.skip_refused(request):
                raise
            self.link.log.warning("gatt_request_refused", request=what, att_error=exc.code)
            if request.awaits_response:
                events = list(self.collector.timeout())
        if self.after is not None:
            await self.after(request)
        return events

    async def wait(self) -> list[E] | None:
        """What the device sends next, fed to the collector; on silence the collector's
        `timeout()` when an answer was due, else None."""
        due = self.awaiting
        item = await self.link.receive(self.response_timeout if due else self.idle_timeout)
        if item is None:
            self.awaiting = None
            events = list(self.collector.timeout())
            if due is None and not events:
                return None
            self.link.log.warning("gatt_no_response", request=due.label if due else None)
            return events
        uuid, data = item
        if due is not None and uuid == due.characteristic:
            self.awaiting = None
        return list(self.notified(uuid, data))

    async def steps(self) -> AsyncIterator[list[E]]:
        """The events of each request and each value received; ends on idle silence."""
        while True:
            events = await self.perform_next()
            if events is None:
                events = await self.wait()
                if events is None:
                    return
            yield events
