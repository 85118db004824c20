"""What a sans-I/O GATT session asks its driver to do, and the events every session shares.

* `Request` / `RequestKind` — what a sans-I/O session asks its driver to do next:
  `Request(kind=READ|WRITE, characteristic=<uuid str>, data=<bytes to write>,
  awaits_response=<bool>, label=<short snake_case name for logs>)`. For a READ the driver feeds
  the value read back through the session's `receive(characteristic, value)`; for a WRITE with
  `awaits_response` the answer is an indication on the same characteristic (enable
  notifications/indications before the first request, protocols.md §1.10 step 4).
* `SessionEvent` — base of all session events; the shared ones: `RecordRejected(reason, data)`,
  `ProcedureFailed(request, reason, code, data)`, `UnexpectedData(characteristic, data)`.

Used by the CGMS, Glucose and Dexcom G6 sessions; `protocols.gatt.collector` keeps the
awaited-request slot of the two SIG collectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RequestKind(StrEnum):
    """What the driver does with a `Request`."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Request:
    """One GATT operation a session wants performed, in order, one at a time."""

    kind: RequestKind
    characteristic: str
    data: bytes = b""
    #: READ: the value must be fed back through `receive()`; WRITE: an indication is expected.
    awaits_response: bool = True
    #: Short snake_case name of the procedure, for logs ("read_feature", "racp_report").
    label: str = ""


class SessionEvent:
    """Base class of every event a sans-I/O session emits (`protocols.cgms.session`,
    `protocols.glucose.session`, `protocols.dexcom_g6.session`)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RecordRejected(SessionEvent):
    """A data record (or the rest of a notification) that could not be accepted.

    `reason`: "crc_mismatch", "missing_crc" (E2E announced, none sent) or "malformed".
    """

    reason: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ProcedureFailed(SessionEvent):
    """A request failed; the session skips that step and goes on.

    `reason`: "timeout", "error_response" (`code` = the device's RACP/SOCP response code),
    "crc_mismatch", "malformed" (`data` = what came back), "unexpected_response".
    """

    request: Request
    reason: str
    code: int | None = None
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class UnexpectedData(SessionEvent):
    """An indication or read value nobody waited for (late after a timeout, unsolicited)."""

    characteristic: str
    data: bytes
