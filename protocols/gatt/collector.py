"""Request bookkeeping shared by the sans-I/O GATT collectors (`cgms.session`, `glucose.session`).

Both collectors hand out one `Request` at a time and hold it in `_awaiting` until its answer
(a read value or an indication) or `timeout()` comes; this base keeps that slot and the
`ready` flag. Pure: no I/O, no clock.
"""

from __future__ import annotations

from protocols.gatt.session import Request, SessionEvent, UnexpectedData

__all__ = ["CollectorBase"]


class CollectorBase:
    """The awaited-request slot and the `ready` flag of a collector session."""

    def __init__(self) -> None:
        self._awaiting: Request | None = None
        self._ready = False

    @property
    def ready(self) -> bool:
        """Whether setup is done (`Ready` was emitted)."""
        return self._ready

    def _take(self, label: str) -> Request | None:
        """The awaited request if it has this label (it is no longer awaited), else None."""
        request = self._awaiting
        if request is None or request.label != label:
            return None
        self._awaiting = None
        return request

    def _take_timed_out(self) -> Request | None:
        """The awaited request, which is no longer awaited (None when nothing was)."""
        request, self._awaiting = self._awaiting, None
        return request

    def _take_indication(
        self, characteristic: str, data: bytes, events: list[SessionEvent]
    ) -> Request | None:
        """The awaited request an indication on `characteristic` answers, or None (then the
        indication was unasked for and `UnexpectedData` is appended to `events`).
        """
        request = self._awaiting
        if request is None or request.characteristic != characteristic:
            events.append(UnexpectedData(characteristic, data))
            return None
        self._awaiting = None
        return request
