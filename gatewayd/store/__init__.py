"""The store floor: every reading lands here, durably, before anything else happens to it.

The package is the only code that knows the SQLite schema of the core tables (`readings`,
`outbox` state, `messages`, `clock_hold`, `meta`); everything else calls its methods.

- `store` — `Store`, the daemon's read-write store (the live path, the services, pruning).
- `schema` — the DDL of the current schema version and the ordered migrations to it.
- `mark` — the published mark: how far the broker acknowledged the outbox.
- `writer` — the writer thread that commits the live path's writes in groups.
- `feed` — the rows just committed, handed to the publisher without a query.
- `history` — the history reads `Store` has (newest reading, ranges, cursors, counts).
- `messages` — the messages outbox `Store` has (alerts, summaries, discovery configs).
- `view` — `StoreView`, the read-only view (`gatewayd status`, reports, exports).
- `codec` — readings as JSON: the stored record and the published payload.
- `file` — the store's file: identity (replaced under the daemon), corruption, disk space.
- `full_disk` — what the daemon does when the disk is full (`Intake`).
"""

from gatewayd.errors import StoreFull  # (re-exported: the store raises it)
from gatewayd.store.messages import PendingMessage
from gatewayd.store.store import (
    WAL_CHECKPOINT_BYTES,
    WAL_SIZE_LIMIT,
    Hold,
    PendingRow,
    Store,
)

__all__ = [
    "WAL_CHECKPOINT_BYTES",
    "WAL_SIZE_LIMIT",
    "Hold",
    "PendingMessage",
    "PendingRow",
    "Store",
    "StoreFull",
]
