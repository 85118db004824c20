"""A read-only view of the store for the CLI (`report`, `export`): `gatewayd.store.view`.

It opens the SQLite file with `mode=ro`: it never creates, migrates or writes the store, and
WAL lets it read a consistent snapshot while the daemon writes.
"""

from __future__ import annotations

from gatewayd.store.view import StoreView as ReadOnlyStore

__all__ = ["ReadOnlyStore"]
