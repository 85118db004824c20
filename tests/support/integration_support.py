"""Checks shared by the integration tests."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gatewayd.errors import StoreError
from gatewayd.store.view import StoreView
from mosquitto import Mosquitto


def contiguous_gaps(rows: list[tuple[str, str, str, int]]) -> list[tuple[str, str, int]]:
    """(device, session, seq) of every sequence number missing inside a stored session."""
    seqs: dict[tuple[str, str], set[int]] = defaultdict(set)
    for _id, device, session, seq in rows:
        seqs[(device, session)].add(seq)
    return [
        (device, session, seq)
        for (device, session), present in sorted(seqs.items())
        for seq in range(min(present), max(present) + 1)
        if seq not in present
    ]


def duplicate_keys(rows: list[tuple[str, str, str, int]]) -> list[tuple[str, str, int]]:
    """(device, session, seq) stored under more than one id (must never happen)."""
    ids: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for rid, device, session, seq in rows:
        ids[(device, session, seq)].add(rid)
    return [key for key, found in ids.items() if len(found) > 1]


GATEWAYD = str(Path(sys.executable).parent / "gatewayd")


def write_config(
    folder: Path,
    broker: Mosquitto,
    devices: dict[str, str],
    *,
    hub: str | None = None,
    extra: str = "",
) -> Path:
    """A config file for `broker` with one `[[devices]]` table per entry (id -> extra TOML)."""
    # A hub id of its own by default: tests share one broker, and retained topics of another
    # test's hub (its `offline`, its states) must never be mistaken for this one's.
    hub = hub or f"hub-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "mqtt-password"
    secret.write_text(broker.password + "\n")
    secret.chmod(0o600)
    # No sensor warm-up unless a test asks: sessions are aligned to wall time, and a 2 h
    # warm-up window without readings would make a test depend on the day it runs.
    tables = "".join(
        f'\n[[devices]]\ndriver = "simulator"\nid = "{device_id}"\n{options}\n'
        + ("" if "warmup" in options else "warmup = 0\n")
        for device_id, options in devices.items()
    )
    config = folder / "config.toml"
    config.write_text(
        f'[hub]\nid = "{hub}"\n\n[store]\npath = "store/gatewayd.db"\n\n'
        f'[mqtt]\nurl = "{broker.url()}"\nusername = "{broker.username}"\n'
        f'password_file = "mqtt-password"\n\n[log]\nformat = "json"\nlevel = "info"\n\n'
        f"[supervisor]\nbackoff_min = 0.2\nbackoff_max = 1.0\n{extra}\n{tables}"
    )
    return config


@dataclass
class DaemonProcess:
    """One `gatewayd run` process; its JSON log lines land in `log_path`."""

    config: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    runs: int = field(default=0)

    @property
    def store_path(self) -> Path:
        return self.config.parent / "store" / "gatewayd.db"

    def start(self) -> None:
        self.runs += 1
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [GATEWAYD, "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)

    def stored(self) -> list[tuple[str, str, str, int]]:
        """(id, device, session, seq) of every stored reading, read with a separate connection."""
        if not self.store_path.exists():
            return []
        db = sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("SELECT id, device, record FROM readings ORDER BY rowid").fetchall()
        except sqlite3.OperationalError:  # the daemon is creating the store: no tables yet
            return []
        finally:
            db.close()
        out = []
        for rid, device, record in rows:
            data = json.loads(record)
            out.append((rid, device, data["session"], data["seq"]))
        return out

    def outbox_depth(self) -> int:
        """Readings waiting for the broker as the store file says (the published mark is
        written lazily: about a second behind the daemon's own count)."""
        try:
            view = StoreView(self.store_path, timeout=10)
        except StoreError:  # the daemon is creating it: its tables are not there yet
            return -1
        with view:
            return sum(view.waiting_by_device().values())

    def outbox_drained(self) -> Callable[[], bool]:
        """A check for `wait_until`: every reading stored by now has left the outbox, as the
        store file says. (While readings keep coming, the file's published mark, written at
        most once a second, is rarely past the newest one: `outbox_depth() == 0` may never be
        seen.)"""
        with StoreView(self.store_path, timeout=10) as view:
            target = view.newest_rowid()

        def drained() -> bool:
            with StoreView(self.store_path, timeout=10) as view:
                return not view.waiting_by_device(stored_up_to=target)

        return drained
