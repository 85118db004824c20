"""`gatewayd status`: per device, the newest reading and its age, the last 24 h, the outbox.

It reads the store read-only (an SQLite `mode=ro` connection, which works beside the running
daemon in WAL mode and never creates or changes anything), and with `--broker` also the
daemon's retained hub and device statuses from the broker. Glucose values are left out when
`[log] privacy = "strict"`; sensor serials are never shown.

    $ gatewayd status -c /etc/gatewayd/config.toml
    hub hub-livingroom  store /var/lib/gatewayd/gatewayd.db  25920 readings
    outbox: 0 readings, 0 messages
    DEVICE  LAST READING (UTC)    AGE    GLUCOSE    24H  OUTBOX
    cgm-1   2026-11-22 15:40:00Z  2 min  142 mg/dL  288  0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gatewayd.models import isoformat_utc, mgdl_to_mmoll
from gatewayd.mqtt.broker_state import BrokerLink, BrokerState, read_state, state_path
from gatewayd.store.snapshot import DeviceSummary, StoreSnapshot, open_readonly, snapshot

if TYPE_CHECKING:
    from gatewayd.ops.config import Config

#: Seconds `--broker` waits for the retained statuses after subscribing.
_RETAINED_WAIT = 1.0


def age_text(seconds: float) -> str:
    """`45 s`, `3 min`, `2 h 5 min`, `3 d 4 h`."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


# -- the broker's retained statuses ----------------------------------------------------------


@dataclass(slots=True)
class BrokerView:
    """The hub's and devices' retained statuses, or why they could not be read."""

    url: str
    hub: str | None = None
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None


async def read_broker(cfg: Config, expected: Sequence[str], *, step_s: float = 5.0) -> BrokerView:
    """Subscribe to `<root>/<hub>/status` and `<root>/<hub>/+/status` and collect the retained
    messages (until every expected device answered, or briefly after the subscription)."""
    import aiomqtt

    from gatewayd.mqtt.topics import Topics
    from gatewayd.ops.doctor.broker import check_broker, doctor_client
    from gatewayd.ops.doctor.core import Status

    topics = Topics(cfg.mqtt.topic_root, cfg.hub.id)
    view = BrokerView(cfg.mqtt.url)
    hub_filter, device_filter = topics.hub_status, topics.status("+")
    try:
        async with asyncio.timeout(step_s + 2.0):
            async with doctor_client(cfg.mqtt, timeout=step_s, suffix="status") as client:
                await client.subscribe([(hub_filter, 1), (device_filter, 1)])
                with contextlib.suppress(TimeoutError):  # retained ones come at once
                    async with asyncio.timeout(_RETAINED_WAIT):
                        async for message in client.messages:
                            _collect(view, message, hub_filter, device_filter)
                            if view.hub is not None and set(expected) <= set(view.devices):
                                break
    except (aiomqtt.MqttError, TimeoutError) as exc:
        result = await check_broker(cfg.mqtt, step_s=step_s)  # says which step failed
        if result.status == Status.OK:
            view.error = f"{cfg.mqtt.url}: {exc or type(exc).__name__}"
        else:
            view.error = result.message + (f" — {result.hint}" if result.hint else "")
    return view


def _collect(view: BrokerView, message: Any, hub_filter: str, device_filter: str) -> None:
    payload = message.payload if isinstance(message.payload, bytes) else b""
    if message.topic.matches(hub_filter):
        view.hub = payload.decode(errors="replace")
    elif message.topic.matches(device_filter):
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if isinstance(data, dict) and isinstance(data.get("device"), str):
            view.devices[data["device"]] = data


# -- the command ---------------------------------------------------------------------------------


def run_status(
    config_path: Path,
    *,
    fmt: str = "text",
    broker: bool = False,
    timeout: float = 5.0,
    out: TextIO | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """`gatewayd status`: 0 when printed, 1 when the broker was asked for and not reached."""
    from gatewayd.ops import config as config_module

    out = out or sys.stdout
    cfg = config_module.load(config_path)
    strict = cfg.log.privacy == "strict"
    configured = [(d.id, d.driver, d.enabled) for d in cfg.devices]
    db = open_readonly(cfg.store.path)
    try:
        at = now()
        snap = snapshot(db, cfg.store.path, configured, at)
    finally:
        db.close()
    link = read_state(state_path(cfg.store.path))
    view = None
    if broker:
        expected = [d.id for d in cfg.devices if d.enabled]
        view = asyncio.run(read_broker(_reached(cfg, link), expected, step_s=timeout))
    if fmt == "json":
        document = _json(cfg.hub.id, snap, view, at, strict=strict)
        document["broker_link"] = link.as_json() if link is not None else None
        out.write(json.dumps(document, indent=2) + "\n")
    else:
        _text(out, cfg.hub.id, snap, view, at, strict=strict, link=link)
    return 1 if view is not None and view.error is not None else 0


def _reached(cfg: Config, link: BrokerState | None) -> Config:
    """`cfg` with the broker node the daemon last connected to first: with several nodes in
    `[mqtt] url` the hub's retained statuses live there (per node on some brokers)."""
    urls = [b.url for b in cfg.mqtt.brokers]
    if link is None or link.state is not BrokerLink.CONNECTED or link.url not in urls:
        return cfg
    return dataclasses.replace(cfg, mqtt=cfg.mqtt.node(urls.index(link.url)))


def _glucose(device: DeviceSummary) -> str:
    if device.out_of_range is not None:
        return device.out_of_range.upper()
    if device.glucose_mgdl is None:
        return "—"
    return f"{device.glucose_mgdl:g} mg/dL"


def _link(data: dict[str, Any] | None) -> str:
    if data is None:
        return "—"
    text = str(data.get("state"))
    if data.get("reason"):
        text += f": {data['reason']}"
    if data.get("retry_in_s") is not None:
        text += f" (retry in {data['retry_in_s']} s)"
    offset = data.get("clock_offset_s")
    if isinstance(offset, int | float):
        text += f"; device clock {offset:+g} s"
    unreadable = data.get("records_unreadable")
    if isinstance(unreadable, int) and unreadable:
        text += f"; {unreadable} record{'s' if unreadable != 1 else ''} unreadable"
    return text


def _link_text(link: BrokerState, now: datetime) -> str:
    """`connected to URL since …`, or `unavailable since …: reason; next attempt … to URL`."""
    stamp = "%Y-%m-%d %H:%M:%SZ"
    if link.state is BrokerLink.CONNECTED:
        text = f"connected to {link.url} since {link.since.strftime(stamp)}"
    elif link.state is BrokerLink.STOPPED:
        text = f"stopped at {link.since.strftime(stamp)} (the daemon is not running)"
    else:
        text = f"unavailable since {link.since.strftime(stamp)}: {link.reason or 'unknown'}"
        if link.next_attempt is not None:
            wait = (link.next_attempt - now).total_seconds()
            when = f"in {age_text(wait)}" if wait >= 0 else f"due {age_text(-wait)} ago"
            text += f"; next attempt {link.next_attempt.strftime(stamp)} ({when}) to {link.url}"
    return text


def _text(
    out: TextIO,
    hub: str,
    snap: StoreSnapshot,
    view: BrokerView | None,
    now: datetime,
    *,
    strict: bool,
    link: BrokerState | None = None,
) -> None:
    out.write(f"hub {hub}  store {snap.path}  {snap.readings} readings\n")
    oldest = (
        f", oldest received {age_text((now - snap.oldest_pending).total_seconds())} ago"
        if snap.oldest_pending is not None
        else ""
    )
    out.write(f"outbox: {snap.outbox} readings, {snap.messages} messages{oldest}\n")
    if view is not None:
        if view.error is not None:
            out.write(f"broker: {view.error}\n")
        else:
            out.write(f"broker {view.url}: hub {view.hub or 'no status retained'}\n")
    if link is not None:
        out.write(f"broker link: {_link_text(link, now)}\n")
    header = ["DEVICE", "LAST READING (UTC)", "AGE", "GLUCOSE", "24H", "OUTBOX"]
    if view is not None and view.error is None:
        header.append("LINK")
    rows = [header]
    for d in snap.devices:
        row = [
            d.device + ("" if d.configured else " (not configured)")
            if d.enabled or not d.configured
            else f"{d.device} (disabled)",
            d.last_time.strftime("%Y-%m-%d %H:%M:%SZ") if d.last_time else "—",
            age_text((now - d.last_time).total_seconds()) if d.last_time else "—",
            "hidden" if strict and d.last_time else _glucose(d),
            str(d.readings_24h),
            str(d.outbox),
        ]
        if len(header) > len(row):
            row.append(_link(view.devices.get(d.device) if view else None))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def _json(
    hub: str,
    snap: StoreSnapshot,
    view: BrokerView | None,
    now: datetime,
    *,
    strict: bool,
) -> dict[str, Any]:
    devices = []
    for d in snap.devices:
        item: dict[str, Any] = {
            "device": d.device,
            "driver": d.driver,
            "configured": d.configured,
            "enabled": d.enabled,
            "last_time": isoformat_utc(d.last_time) if d.last_time else None,
            "last_received": isoformat_utc(d.last_received) if d.last_received else None,
            "age_s": round((now - d.last_time).total_seconds(), 1) if d.last_time else None,
            "readings_24h": d.readings_24h,
            "outbox": d.outbox,
        }
        if not strict:
            item["glucose_mgdl"] = d.glucose_mgdl
            item["glucose_mmoll"] = (
                mgdl_to_mmoll(d.glucose_mgdl) if d.glucose_mgdl is not None else None
            )
            item["out_of_range"] = d.out_of_range
        if view is not None and view.error is None:
            item["link"] = view.devices.get(d.device)
        devices.append(item)
    return {
        "hub": hub,
        "store": str(snap.path),
        "generated": isoformat_utc(now),
        "privacy": "strict" if strict else "normal",
        "readings": snap.readings,
        "outbox": {
            "readings": snap.outbox,
            "messages": snap.messages,
            "oldest_received": (
                isoformat_utc(snap.oldest_pending) if snap.oldest_pending else None
            ),
        },
        "devices": devices,
        "broker": None if view is None else asdict(view),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`gatewayd status`'s options."""
    parser.add_argument("--config", "-c", type=Path, required=True, help="the TOML config file")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--broker", action="store_true", help="also the daemon's retained statuses from the broker"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="broker timeout, seconds")


def main(args: argparse.Namespace) -> int:
    """Run `gatewayd status` with the parsed options."""
    return run_status(args.config, fmt=args.format, broker=args.broker, timeout=args.timeout)
