"""Checks of what the daemon owns: the config, the store, and what both leak (or do not)."""

from __future__ import annotations

import ipaddress
import sqlite3
import stat
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from gatewayd.errors import ConfigError, PluginError, StoreError
from gatewayd.ops.doctor.core import Identity, Result, Status, fail, ok
from gatewayd.ops.doctor.system import existing_parent

if TYPE_CHECKING:
    from gatewayd.daemon import Plan
    from gatewayd.ops.config import Config
    from gatewayd.store.snapshot import StoreSnapshot

#: Undelivered readings older than this mean the broker link is not doing its job.
STALE_OUTBOX = timedelta(minutes=15)


@dataclass(slots=True)
class _Findings:
    """Several observations folded into one line: the worst status, the first hint at it."""

    check: str
    status: Status = Status.OK
    parts: list[str] = field(default_factory=list)
    hint: str | None = None

    def add(self, text: str, status: Status = Status.OK, hint: str | None = None) -> None:
        rank = (Status.OK, Status.WARN, Status.FAIL)
        self.parts.append(text)
        if rank.index(status) > rank.index(self.status):
            self.status, self.hint = status, hint

    def result(self, lead: str) -> Result:
        return Result(self.check, self.status, f"{lead}: {', '.join(self.parts)}", self.hint)


def check_config(path: Path) -> tuple[Result, Plan | None]:
    """The config loads and validates completely (drivers, their options, services)."""
    from gatewayd.daemon import plan
    from gatewayd.ops import config as config_module

    try:
        validated = plan(config_module.load(path))
    except ConfigError as exc:
        return fail(
            "config", str(exc), "fix that key (README: configuration reference) and run again"
        ), None
    except PluginError as exc:
        return fail("config", str(exc), "`gatewayd drivers` lists the installed drivers"), None
    cfg = validated.config
    drivers = sorted({plugin.name for _, plugin, _ in validated.devices})
    count = len(validated.devices)
    text = f"hub {cfg.hub.id}, {count} device{'s' if count != 1 else ''}"
    if drivers:
        text += f" ({', '.join(drivers)})"
    services = [spec.name for spec, _ in validated.services]
    if services:
        text += f", services: {', '.join(services)}"
    mode = path.stat().st_mode
    if mode & stat.S_IWOTH:
        return fail(
            "config",
            f"{path}: writable by every user (mode {stat.S_IMODE(mode):04o})",
            f"chmod o-w {path}: anyone could point the hub at their own broker",
        ), validated
    return ok("config", f"{path}: {text}"), validated


def check_store(
    path: Path, identity: Identity, snapshot: StoreSnapshot | None, error: str | None, now: datetime
) -> Result:
    """The store: private file modes, writable by the daemon's user, intact, in WAL mode, and an
    outbox that drains. `snapshot` is what `gatewayd.cli.status.snapshot` read (None on error)."""
    if not path.exists():
        parent = existing_parent(path.parent)
        st = parent.stat()
        # The daemon creates the missing folders too (0700): the nearest existing one decides.
        if identity.may(st, write=True):
            return Result(
                "store",
                Status.WARN,
                f"{path}: not created yet (the daemon creates it, 0600, when it first starts)",
            )
        return fail(
            "store",
            f"{path}: user {identity.name} cannot create it in {parent}",
            f"sudo install -d -o {identity.name} -m 700 {path.parent} (systemd's StateDirectory= "
            "does this)",
        )
    found = _Findings("store")
    _modes(found, path, identity)
    if error is not None or snapshot is None:
        found.add(error or "unreadable", Status.FAIL, "see the error; restore from a backup")
        return found.result(str(path))
    _integrity(found, path)
    found.add(f"{snapshot.readings} readings")
    found.add(f"outbox {snapshot.outbox}")
    if snapshot.oldest_pending is not None and now - snapshot.oldest_pending > STALE_OUTBOX:
        hours = (now - snapshot.oldest_pending).total_seconds() / 3600
        found.add(
            f"the oldest undelivered reading is {hours:.1f} h old",
            Status.WARN,
            "the broker link is down or refusing: see the broker check and "
            "`journalctl -u gatewayd`",
        )
    return found.result(str(path))


def _modes(found: _Findings, path: Path, identity: Identity) -> None:
    st = path.stat()
    found.add(f"{stat.S_IMODE(st.st_mode):04o}")
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = file.stat().st_mode
        except FileNotFoundError:
            continue
        if mode & stat.S_IROTH:
            found.add(
                f"{file.name} readable by every user (mode {stat.S_IMODE(mode):04o})",
                Status.FAIL,
                f"health data: chmod 600 {path}*",
            )
        elif mode & stat.S_IRGRP:
            found.add(
                f"{file.name} readable by its group (mode {stat.S_IMODE(mode):04o})",
                Status.WARN,
                f"health data: chmod 600 {path}*",
            )
    if not identity.may(st, read=True, write=True):
        found.add(
            f"user {identity.name} cannot write it",
            Status.FAIL,
            f"sudo chown {identity.name}: {path}*",
        )


def _integrity(found: _Findings, path: Path) -> None:
    from gatewayd.store.snapshot import open_readonly

    try:
        with open_readonly(path) as db:
            journal, check = db.integrity()
    except (StoreError, sqlite3.Error) as exc:
        found.add(f"integrity not checked: {exc}", Status.FAIL, "restore the store from a backup")
        return
    if str(journal).lower() != "wal":
        found.add(f"journal {journal}, not WAL", Status.WARN, "the daemon sets WAL when it starts")
    else:
        found.add("WAL")
    if check != "ok":
        found.add(
            f"quick_check: {check}",
            Status.FAIL,
            "stop the daemon, back the store up, then `sqlite3 <store> .recover`",
        )
    else:
        found.add("quick_check ok")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_security(cfg: Config, snapshot: StoreSnapshot | None) -> Result:
    """Transport security and what the topic tree and the logs reveal."""
    found = _Findings("security")
    mqtt = cfg.mqtt
    if mqtt.tls:
        ca = f"CA {mqtt.ca_file}" if mqtt.ca_file else "system CAs"
        cert = ", client certificate" if mqtt.cert_file else ""
        found.add(f"TLS with certificate verification ({ca}{cert})")
    elif _loopback(mqtt.host):
        found.add("plain MQTT on loopback")
    else:
        found.add(
            f"plain mqtt:// to {mqtt.host}: password and readings cross the network in clear",
            Status.WARN,
            "use mqtts:// (certificate verification is always on; ca_file for a private CA)",
        )
    leaks = []
    for device in snapshot.devices if snapshot else ():
        serial = (device.serial or "").lower()
        if len(serial) >= 4 and any(
            serial in name.lower() for name in (device.device, cfg.hub.id, mqtt.topic_root)
        ):
            leaks.append(device.device)
    if leaks:
        found.add(
            f"topic names contain a sensor serial (device {', '.join(leaks)})",
            Status.WARN,
            "choose ids that name no person or sensor (e.g. cgm-1), then update subscribers",
        )
    else:
        found.add("no sensor serial in topic names")
    found.add("serials published" if mqtt.include_serial else "serials not published")
    found.add(f"log privacy {cfg.log.privacy}")
    return Result(found.check, found.status, ", ".join(found.parts), found.hint)
