"""A full store volume under a real `gatewayd run` at a high reading rate (issue 10.3).

The store lives on its own 4 MiB tmpfs; two simulated CGMs replay their history at ~40 readings
per second in all. A filler file takes every byte left (twice: the first time the daemon gives
back its reserve), the daemon is killed with SIGKILL while the disk is full and started again on
the full disk, then the filler goes. Before the fix the WAL had grown to the whole volume: it
never reached SQLite's default checkpoint size (4 MiB), no checkpoint could then grow the
database to empty it, and freed space went straight back to the WAL, so the daemon never
recovered (or was full again two seconds later). Now the recovery must be logged once and hold,
and the sensors' backfill must leave no gap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from res_support import fill, mounted_tmpfs

from gatewayd.store import WAL_SIZE_LIMIT
from mosquitto import Mosquitto
from polling import wait_until

from integration_support import DaemonProcess, contiguous_gaps, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

#: Two CGMs replaying 30 days at 1200x: ~20 readings per second each, nothing missed.
FAST = "interval = 60\nhistory = 2592000\nspeed = 1200\nmissed_rate = 0\ndropout_rate = 0\n"


def events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    """Every JSON log line of the daemon's runs so far, in order."""
    found = []
    for line in daemon.log_path.read_text().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def names(daemon: DaemonProcess, *, run: int) -> list[str]:
    """Event names of one run (1-based) of the daemon."""
    runs: list[list[str]] = []
    for event in events(daemon):
        if event["event"] == "gateway_starting":
            runs.append([])
        if runs:
            runs[-1].append(event["event"])
    return runs[run - 1] if len(runs) >= run else []


def wal_bytes(daemon: DaemonProcess) -> int:
    return Path(f"{daemon.store_path}-wal").stat().st_size


async def test_full_store_volume_recovers_stably_after_a_kill_while_full(
    broker: Mosquitto, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "hub", broker, {"cgm-a": FAST, "cgm-b": FAST})
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    with mounted_tmpfs(config.parent / "store", 4 << 20) as volume:
        try:
            daemon.start()
            await wait_until(lambda: len(daemon.stored()) >= 100, 30, "readings stored")
            fillers = [fill(volume, "filler-1")]
            await wait_until(
                lambda: (
                    "store_space_reclaimed" in names(daemon, run=1)
                    or "store_full" in names(daemon, run=1)
                ),
                30,
                "the reserve given back",
            )
            fillers.append(fill(volume, "filler-2"))  # and then what the reserve gave back
            await wait_until(lambda: "store_full" in names(daemon, run=1), 30, "store_full")

            daemon.kill()  # SIGKILL while full: what waited in memory is gone
            daemon.start()  # on the full disk
            await wait_until(lambda: "store_full" in names(daemon, run=2), 30, "full at restart")

            for filler in fillers:
                filler.unlink()
            freed = time.monotonic()
            await wait_until(
                lambda: "store_full_recovered" in names(daemon, run=2), 30, "the recovery"
            )
            recovered_s = time.monotonic() - freed
            # Stable: the daemon keeps storing at full rate and the disk does not fill again.
            after = len(daemon.stored())
            await wait_until(lambda: len(daemon.stored()) >= after + 400, 30, "more readings")
            wal = wal_bytes(daemon)
            assert daemon.terminate() == 0
        finally:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.process.kill()
                daemon.process.wait(timeout=10)
        second = names(daemon, run=2)
        rows = daemon.stored()
    print(  # the closing note: the disk-full sequence after the fix
        "disk-full sequence, run 1: "
        + " -> ".join(e for e in names(daemon, run=1) if e.startswith("store_"))
        + " -> SIGKILL; run 2: "
        + " -> ".join(e for e in second if e.startswith("store_"))
        + f"; recovered {recovered_s:.1f} s after the filler went, WAL {wal} bytes, "
        f"{len(rows)} readings stored"
    )
    assert second.count("store_full") == 1
    assert second.count("store_full_recovered") == 1
    assert second.index("store_full_recovered") > second.index("store_full")
    assert "store_full_lost" not in second  # the clean stop after the recovery lost nothing
    assert wal <= 2 * WAL_SIZE_LIMIT
    assert contiguous_gaps(rows) == []  # what the kill lost was backfilled by the sensors
