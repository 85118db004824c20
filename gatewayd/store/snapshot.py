"""The store at one moment, read-only: what `gatewayd status` shows and `gatewayd doctor` checks.

`open_readonly` opens the store without ever creating or changing it (a `StoreView`), and
`snapshot` sums it up per device: the newest reading, the last 24 h, what waits for the broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from gatewayd.errors import StoreError
from gatewayd.store.view import StoreView


def open_readonly(path: Path, *, timeout: float = 5.0) -> StoreView:
    """The store, read-only (never created, never written to)."""
    if not path.exists():
        raise StoreError(
            f"store {path} does not exist yet (the daemon creates it when it first starts)"
        )
    return StoreView(path, timeout=timeout)


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    """What the store knows about one device."""

    device: str
    configured: bool
    enabled: bool
    driver: str | None
    last_time: datetime | None = None
    last_received: datetime | None = None
    glucose_mgdl: float | None = None
    out_of_range: str | None = None
    readings_24h: int = 0
    outbox: int = 0
    #: The newest reading's sensor serial: for doctor's privacy check, never printed.
    serial: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """The store at one moment."""

    path: Path
    readings: int
    outbox: int
    messages: int
    oldest_pending: datetime | None
    devices: tuple[DeviceSummary, ...]


def snapshot(
    db: StoreView,
    path: Path,
    configured: Sequence[tuple[str, str, bool]],
    now: datetime,
) -> StoreSnapshot:
    """Per device (configured ones first: (id, driver, enabled), then any other in the store)."""
    try:
        return _snapshot(db, path, configured, now)
    except (KeyError, ValueError) as exc:
        raise StoreError(f"cannot read store {path}: {exc}") from exc


def _snapshot(
    db: StoreView,
    path: Path,
    configured: Sequence[tuple[str, str, bool]],
    now: datetime,
) -> StoreSnapshot:
    since = now - timedelta(hours=24)
    pending = db.waiting_by_device()
    known = {device for device, _, _ in configured}
    rows = [*configured, *((d, None, False) for d in db.devices() if d not in known)]
    devices = []
    for device, driver, enabled in rows:
        newest = db.newest(device)
        devices.append(
            DeviceSummary(
                device=device,
                configured=device in known,
                enabled=enabled,
                driver=driver or (newest.driver if newest else None),
                last_time=newest.time if newest else None,
                last_received=newest.received if newest else None,
                glucose_mgdl=newest.glucose_mgdl if newest else None,
                out_of_range=newest.out_of_range if newest else None,
                readings_24h=db.count_since(device, since),
                outbox=int(pending.get(device, 0)),
                serial=newest.serial if newest else None,
            )
        )
    oldest = db.oldest_waiting()
    return StoreSnapshot(
        path=path,
        readings=db.count(),
        outbox=sum(pending.values()),
        messages=db.message_count(),
        oldest_pending=oldest.received if oldest else None,
        devices=tuple(devices),
    )
