"""One member of the backend consumer group of `bench/fleet.py` (its own process).

A paho-mqtt MQTT 5 client on `$share/<group>/gatewayd/+/+/reading`, QoS 1: network loop in its
own thread, reconnecting by itself (0.1-0.5 s), subscribing again after every connect; with
`--session-expiry` a persistent session, which it ends on `quit` (DISCONNECT with session expiry
0: a member leaving for good must not keep receiving its share). For each reading it notes the
id and the end-to-end latency: its arrival (wall clock) minus the reading's `received` (wall
clock of the hub that made it; same machine, so the same clock). `received` has millisecond
resolution (truncated), so latencies read up to 1 ms high. Readings are bucketed by phase (the
bench puts the phase in the reading's `session`). The JSON is not parsed: three fields are cut
out of the bytes, which keeps a member far below the rate of the hubs it consumes.

Commands arrive as JSON lines on stdin; answers go to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from _common import cpu_seconds
from _fleet_common import (
    PASS_ENV,
    READINGS_FILTER,
    USER_ENV,
    memory_mib,
    payload_field,
    reply,
)


@dataclass
class Bucket:
    """What one member received of one phase."""

    ids: set[str] = field(default_factory=set)
    count: int = 0
    duplicates: int = 0
    latencies: list[float] = field(default_factory=list)
    first: float = math.inf
    last: float = 0.0


class Member:
    """The paho client and its buckets (filled from paho's thread, read from the main one)."""

    def __init__(self, port: int, name: str, group: str, session_expiry: int) -> None:
        self.name = name
        self.filter = f"$share/{group}/{READINGS_FILTER}"
        self.lock = threading.Lock()
        self.buckets: dict[str, Bucket] = {}
        self.subscribed = threading.Event()
        self.connects = 0
        self.disconnects = 0
        self.malformed = 0
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
        client.username_pw_set(os.environ[USER_ENV], os.environ[PASS_ENV])
        # A backend service comes back fast (paho takes float seconds; its stub says int).
        client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.subscribed_at = 0.0
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        self.port = port
        self.session_expiry = session_expiry

    def start(self) -> None:
        properties = None
        if self.session_expiry:  # a session the broker keeps (and queues for) across a blip
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.session_expiry
        self.client.connect(
            "127.0.0.1",
            self.port,
            keepalive=30,
            clean_start=not self.session_expiry,
            properties=properties,
        )
        self.client.loop_start()

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: Any,
        _flags: paho.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            return
        self.connects += 1
        client.subscribe(self.filter, qos=1)  # clean start: subscribe again on every connect

    def _on_subscribe(
        self,
        _client: paho.Client,
        _userdata: Any,
        _mid: int,
        _reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        self.subscribed_at = time.time()
        self.subscribed.set()

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: paho.DisconnectFlags,
        _reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self.disconnects += 1
        self.subscribed.clear()

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.time()
        payload = msg.payload
        try:
            phase = payload_field(payload, b"session")
            rid = payload_field(payload, b"id")[:16]
            received = datetime.fromisoformat(payload_field(payload, b"received")).timestamp()
        except ValueError:
            self.malformed += 1
            return
        with self.lock:
            bucket = self.buckets.get(phase)
            if bucket is None:
                bucket = self.buckets[phase] = Bucket()
            bucket.count += 1
            if rid in bucket.ids:
                bucket.duplicates += 1
            else:
                bucket.ids.add(rid)
                bucket.latencies.append((now - received) * 1000)
            bucket.first = min(bucket.first, now)
            bucket.last = now

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        match cmd["cmd"]:
            case "ready":
                return {"subscribed": self.subscribed.wait(cmd["timeout"])}
            case "count":
                with self.lock:
                    bucket = self.buckets.get(cmd["phase"], Bucket())
                    return {"unique": len(bucket.ids), "count": bucket.count}
            case "report":
                with self.lock:
                    bucket = self.buckets.pop(cmd["phase"], Bucket())
                return {
                    "ids": sorted(bucket.ids),
                    "count": bucket.count,
                    "duplicates": bucket.duplicates,
                    "latencies": [round(x, 2) for x in bucket.latencies],
                    "first": bucket.first if bucket.count else None,
                    "last": bucket.last if bucket.count else None,
                }
            case "status" | "quit":
                answer = {
                    "cpu_s": cpu_seconds(os.getpid()),
                    "memory": memory_mib(os.getpid()),
                    "connects": self.connects,
                    "disconnects": self.disconnects,
                    "subscribed": self.subscribed.is_set(),
                    "subscribed_at": self.subscribed_at,
                    "malformed": self.malformed,
                }
                if cmd["cmd"] == "quit":
                    # Leaving for good: end the session now (MQTT 5), or the broker would keep
                    # routing this member's share of the group to it until the session expires.
                    properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
                    properties.SessionExpiryInterval = 0
                    self.client.disconnect(properties=properties)
                    self.client.loop_stop()
                return answer
        raise ValueError(f"unknown command {cmd}")


def main() -> int:
    """Entry point (spawned by bench/fleet.py)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--group", default="backend")
    parser.add_argument("--session-expiry", type=int, default=0, help="0: clean start")
    args = parser.parse_args()
    member = Member(args.port, args.name, args.group, args.session_expiry)
    member.start()
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            reply(member.handle(cmd))
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})
        if cmd["cmd"] == "quit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
