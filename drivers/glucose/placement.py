"""Where a report's records go: the glucose session's progress and the order rules.

A RACP report brings records in sequence order, but the meter may send first a result it had
queued when it read the request (`placed`), and a damaged record has a place only by the intact
records around it (`before_damaged`). The session (`drivers.glucose.session`) feeds every event
to `arrived` and takes the records it returns, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.gatt.session import ProcedureFailed, RecordRejected, SessionEvent
from protocols.glucose.measurement import sequence_number_of
from protocols.glucose.session import GlucoseReading, TransferComplete


def rejected_seq(data: bytes) -> int | None:
    """The sequence number a rejected measurement packet seems to carry (bytes 1-2), if any."""
    return sequence_number_of(data)


@dataclass(slots=True)
class Progress:
    """Progress of one glucose session: what is wanted, yielded, asked for and held."""

    floor: int = 0  # the first sequence number wanted
    last: int | None = None  # the highest sequence number yielded (or not wanted)
    awaiting: bool = False  # a RACP answer is due
    complete: bool = False  # the first report ended
    done: bool = False  # every report ended
    skipping: bool = False  # a record of this report was rejected: the rest is asked again
    run: int = 0  # damaged records since the last one yielded (in this report)
    passed: int | None = None  # the sequence number of a damaged record passed over
    asking: bool = False  # records were asked for again: live ones are left to that report
    checking: bool = False  # asked whether the meter still holds the newest stored record
    fell_back: bool = False  # asked for all records after "records >= n" was refused
    end: bool = False  # the session is over
    fresh: bool = True  # nothing of the coming (or running) report has arrived yet
    #: The first record of a report, held until the next arrival shows whether it was in
    #: order (see `placed`); a record that was not: in flight when the meter read the request.
    ahead: GlucoseReading | None = None
    in_flight: GlucoseReading | None = None


def arrived(state: Progress, event: SessionEvent) -> list[GlucoseReading]:
    """The records to take now, in sequence order, as `event` arrives."""
    if isinstance(event, GlucoseReading):
        return placed(state, event)
    if isinstance(event, RecordRejected):
        return before_damaged(state, event)
    if isinstance(event, TransferComplete) or (
        isinstance(event, ProcedureFailed) and event.request.label == "racp_report"
    ):
        return report_end(state)
    return []


def placed(state: Progress, event: GlucoseReading) -> list[GlucoseReading]:
    """The records to take now, in order, as `event` arrives.

    A report's records come in sequence order, but a result the meter had queued when it read
    the request (a live one, the newest) may come first. Yielding it first would put the newest
    reading in the store before older ones (the next connection resumes after it), and it would
    become the place of a damaged record after it. So the first record of a report waits for the
    next arrival: one numbered after it shows it in order; one at or before it shows it was in
    flight, and it waits for the report's end (`report_end`), where the report has brought it
    in its place or it follows the rest. The same record again decides nothing: it is held
    once. A first record that directly follows the last one yielded cannot open a gap: it is
    taken at once."""
    if not event.backfill:
        return [event]
    if state.fresh:
        state.fresh = False
        if next_wanted(state, event.sequence_number):
            return [event]
        state.ahead = event
        return []
    return after_held(state, event)


def after_held(state: Progress, event: GlucoseReading) -> list[GlucoseReading]:
    """The records to take as a report's record arrives after its first one (`placed`)."""
    ahead, state.ahead = state.ahead, None
    if ahead is None:
        return [event]
    if event.sequence_number == ahead.sequence_number:
        # The same record again (notified as it was taken and in flight, say): it shows nothing
        # of where the record belongs; the next arrival still decides. The copy kept is the one
        # with its context, if either has one.
        state.ahead = event if ahead.context is None else ahead
        return []
    if event.sequence_number > ahead.sequence_number:
        return [ahead, event]  # in order
    state.in_flight = ahead
    return [event]


def next_wanted(state: Progress, seq: int) -> bool:
    """Whether `seq` directly follows the last record yielded (or is the first one wanted)."""
    return seq == (state.floor if state.last is None else state.last + 1)


def before_damaged(state: Progress, event: RecordRejected) -> list[GlucoseReading]:
    """The records to take before a damaged record of a report: the held first one unless the
    damaged record's own number shows that it was in flight. Without a number, it is taken as
    in order: the damaged record is then placed after it, as before this rule, and once it is
    passed over the report goes on past both (held, it could never be yielded)."""
    state.fresh = False
    ahead, seq = state.ahead, rejected_seq(event.data)
    if ahead is None:
        return []
    state.ahead = None
    if seq is None or seq > ahead.sequence_number:
        return [ahead]
    state.in_flight = ahead
    return []


def report_end(state: Progress) -> list[GlucoseReading]:
    """What the report held back, at its end: nothing after a hole (the report asked for again
    brings it in its place), else in sequence order (one the report brought again is passed
    over as seen)."""
    held = [r for r in (state.in_flight, state.ahead) if r is not None]
    state.fresh, state.ahead, state.in_flight = True, None, None
    if state.skipping:
        return []
    return sorted(held, key=lambda r: r.sequence_number)
