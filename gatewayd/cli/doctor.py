"""`gatewayd doctor --config FILE`: run every check, one line each, as they complete."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gatewayd.errors import StoreError, UsageError
from gatewayd.ops.doctor.bluetooth import Probes, check_bluetooth
from gatewayd.ops.doctor.broker import check_broker
from gatewayd.ops.doctor.core import Result, Status, service_identity
from gatewayd.ops.doctor.files import check_config, check_security, check_store
from gatewayd.ops.doctor.system import (
    ClockState,
    check_clock,
    check_disk,
    check_serial,
    probe_clock,
    serial_path,
)

if TYPE_CHECKING:
    from gatewayd.ops.config import Config
    from gatewayd.store.snapshot import StoreSnapshot

#: Exit statuses: every check passed or only warned / one failed / the config is unusable.
EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


@dataclass(frozen=True, slots=True)
class SystemProbes:
    """The machine as the checks see it (tests replace parts of it)."""

    clock: Callable[[], ClockState] = probe_clock
    disk_usage: Callable[[Path], Any] = shutil.disk_usage
    bluetooth: Probes = field(default_factory=Probes)


def run_doctor(
    config_path: Path,
    *,
    fmt: str = "text",
    timeout: float = 5.0,
    user: str | None = None,
    out: TextIO | None = None,
    probes: SystemProbes | None = None,
) -> int:
    """Check everything; 0 when nothing failed, 1 when a check failed, 2 for a bad config."""
    out = out or sys.stdout
    probes = probes or SystemProbes()
    try:
        identity = service_identity(user)
    except KeyError:
        raise UsageError("--user", f"no such user: {user}") from None
    results: list[Result] = []

    def report(result: Result) -> None:
        results.append(result)
        if fmt == "text":
            out.write(result.line() + "\n")
            out.flush()

    config_result, plan = check_config(config_path)
    report(config_result)
    if plan is None:
        return _finish(out, fmt, results, EXIT_CONFIG)
    cfg = plan.config

    snapshot, error = _snapshot(cfg)
    now = datetime.now(UTC)
    report(check_store(cfg.store.path, identity, snapshot, error, now))
    report(check_disk(cfg.store.path, probes.disk_usage))
    for index in range(len(cfg.mqtt.brokers)):  # every node of `[mqtt] url`, one line each
        report(asyncio.run(check_broker(cfg.mqtt.node(index), step_s=timeout)))
    needs_ble = any(plugin.transport == "ble" for _, plugin, _ in plan.devices)
    report(
        check_bluetooth(
            plan.ble, needed=needs_ble, identity=identity, probes=probes.bluetooth, timeout=timeout
        )
    )
    serial = [
        (d.id, path)
        for d in cfg.devices
        if d.enabled and (path := serial_path(d.options)) is not None
    ]
    if not serial:
        report(Result("serial", Status.SKIP, "no serial device configured"))
    for device, path in serial:
        report(check_serial(device, path, identity))
    report(check_clock(probes.clock))
    report(check_security(cfg, snapshot))
    failed = any(r.status == Status.FAIL for r in results)
    return _finish(out, fmt, results, EXIT_FAIL if failed else EXIT_OK)


def _snapshot(cfg: Config) -> tuple[StoreSnapshot | None, str | None]:
    """The store as `gatewayd status` reads it (None and the error when it cannot be read)."""
    from gatewayd.store.snapshot import open_readonly, snapshot

    path = cfg.store.path
    if not path.exists():
        return None, None
    try:
        db = open_readonly(path)
        try:
            configured = [(d.id, d.driver, d.enabled) for d in cfg.devices]
            return snapshot(db, path, configured, datetime.now(UTC)), None
        finally:
            db.close()
    except StoreError as exc:
        return None, str(exc)


def _finish(out: TextIO, fmt: str, results: list[Result], code: int) -> int:
    if fmt == "json":
        document = {"ok": code == EXIT_OK, "exit": code, "checks": [r.as_dict() for r in results]}
        out.write(json.dumps(document, indent=2) + "\n")
    return code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`gatewayd doctor`'s options."""
    parser.add_argument("--config", "-c", type=Path, required=True, help="the TOML config file")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per network step (default 5)"
    )
    parser.add_argument(
        "--user", help="check file permissions for this user (default: gatewayd when run as root)"
    )


def main(args: argparse.Namespace) -> int:
    """Run `gatewayd doctor` with the parsed options."""
    return run_doctor(args.config, fmt=args.format, timeout=args.timeout, user=args.user)
