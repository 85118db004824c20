"""Prometheus: an optional `/metrics` endpoint on the daemon's own event loop.

Every value is read at scrape time from the objects that own it (device loops, publisher,
store), so nothing is counted twice and nothing can drift. A tiny HTTP/1.1 server on asyncio
streams serves it: no thread, so the store is only ever touched from the event loop.

    gatewayd_readings_received_total{device}         readings the driver delivered
    gatewayd_readings_stored_total{device}           of them new (not duplicates)
    gatewayd_readings_published_total{device}        acknowledged by the broker (PUBACK)
    gatewayd_readings_dropped_total{device,reason}   packets the driver discarded, by reason
    gatewayd_records_unreadable_total{device}        records passed over: damaged in the device
    gatewayd_device_clock_offset_seconds{device}     device clock minus hub clock (when known)
    gatewayd_outbox_depth                            readings waiting for the broker
    gatewayd_outbox_messages                         other messages waiting (alerts, discovery)
    gatewayd_mqtt_connected                          1 while the broker link is up
    gatewayd_mqtt_reconnects_total                   broker links lost or refused
    gatewayd_last_reading_timestamp_seconds{device}  measured time of the newest stored reading
    gatewayd_last_reading_age_seconds{device}        seconds since then
    gatewayd_device_state{device,state}              1 for the device's current link state
    gatewayd_build_info{version,hub}                 always 1

Counters restart from zero with the daemon (Prometheus' `rate()` handles that). No glucose
value is exposed. The default listen address is loopback: the endpoint has no authentication.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from gatewayd import __version__
from gatewayd.backoff import Backoff
from gatewayd.device_status import LinkState
from gatewayd.models import Reading
from gatewayd.ops.config import Config
from gatewayd.services import ServiceContext, ServiceSpec

#: Seconds a client may take to send its request head.
_REQUEST_TIMEOUT = 10.0
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_BAD_METHOD = (
    b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


@dataclass(frozen=True, slots=True)
class MetricsOptions:
    """`[metrics]`."""

    address: str = "127.0.0.1"
    port: int = 9464


def parse(config: Config) -> MetricsOptions | None:
    """Validate `[metrics]`; None when absent or `enabled = false`."""
    r = config.section("metrics")
    if r is None:
        return None
    enabled = r.boolean("enabled", True)
    address = r.string("address", "127.0.0.1")
    if address != "localhost":
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise r.error(
                "address", f"must be an IP address or localhost, got {address!r}"
            ) from None
    options = MetricsOptions(
        address=address, port=r.integer("port", 9464, minimum=1, maximum=65535)
    )
    r.finish()
    return options if enabled else None


class _Collector:
    """Reads the daemon's live counters at every scrape."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context

    def collect(self) -> Iterable[Metric]:
        """The metric families (called by `generate_latest` on the event loop)."""
        ctx = self.context
        labels = ["device"]
        received = CounterMetricFamily(
            "gatewayd_readings_received", "Readings the driver delivered.", labels=labels
        )
        stored = CounterMetricFamily(
            "gatewayd_readings_stored", "Readings stored as new (not duplicates).", labels=labels
        )
        published = CounterMetricFamily(
            "gatewayd_readings_published", "Readings acknowledged by the broker.", labels=labels
        )
        dropped = CounterMetricFamily(
            "gatewayd_readings_dropped",
            "Packets the driver discarded, by reason.",
            labels=["device", "reason"],
        )
        unreadable = CounterMetricFamily(
            "gatewayd_records_unreadable",
            "Records passed over because they stayed damaged in the device's memory.",
            labels=labels,
        )
        offset = GaugeMetricFamily(
            "gatewayd_device_clock_offset_seconds",
            "The device clock minus the hub's clock, as last measured.",
            labels=labels,
        )
        state = GaugeMetricFamily(
            "gatewayd_device_state",
            "1 for the device's current link state.",
            labels=[*labels, "state"],
        )
        for device in ctx.device_loops:
            received.add_metric([device.id], device.received)
            stored.add_metric([device.id], device.stored)
            for reason, count in sorted(device.dropped.items()):
                dropped.add_metric([device.id, reason], count)
            unreadable.add_metric([device.id], device.findings.unreadable)
            if device.findings.clock_offset_s is not None:
                offset.add_metric([device.id], device.findings.clock_offset_s)
            current = device.status.state if device.status is not None else None
            for link in LinkState:
                state.add_metric([device.id, str(link)], 1.0 if link == current else 0.0)
        for device_id in ctx.devices:
            published.add_metric([device_id], ctx.publisher.published[device_id])
        yield from (received, stored, published, dropped, unreadable, offset, state)
        yield from self._freshness()
        yield from self._broker()

    def _freshness(self) -> Iterable[Metric]:
        ctx = self.context
        stamp = GaugeMetricFamily(
            "gatewayd_last_reading_timestamp_seconds",
            "Measured time of the newest stored reading (Unix seconds).",
            labels=["device"],
        )
        age = GaugeMetricFamily(
            "gatewayd_last_reading_age_seconds",
            "Seconds since the measured time of the newest stored reading.",
            labels=["device"],
        )
        now = datetime.now(UTC)
        for device_id in ctx.devices:
            latest = ctx.store.latest(device_id)
            if latest is not None:
                stamp.add_metric([device_id], latest.time.timestamp())
                age.add_metric([device_id], (now - latest.time).total_seconds())
        return (stamp, age)

    def _broker(self) -> Iterable[Metric]:
        ctx = self.context
        messages = ctx.store.message_count()
        info = GaugeMetricFamily(
            "gatewayd_build_info", "The running gatewayd.", labels=["version", "hub"]
        )
        info.add_metric([__version__, ctx.topics.hub], 1.0)
        return (
            GaugeMetricFamily(
                "gatewayd_outbox_depth",
                "Readings stored but not yet acknowledged by the broker.",
                value=ctx.store.outbox_depth(),
            ),
            GaugeMetricFamily(
                "gatewayd_outbox_messages",
                "Other messages (alerts, summaries, discovery) waiting for the broker.",
                value=messages,
            ),
            GaugeMetricFamily(
                "gatewayd_mqtt_connected",
                "1 while the broker link is up.",
                value=1.0 if ctx.publisher.connected.is_set() else 0.0,
            ),
            CounterMetricFamily(
                "gatewayd_mqtt_reconnects",
                "Broker links lost or refused (each followed by a reconnect attempt).",
                value=ctx.publisher.reconnects,
            ),
            info,
        )


class Metrics:
    """Serves `/metrics` until cancelled; a port in use is retried, never fatal."""

    def __init__(self, options: MetricsOptions, context: ServiceContext) -> None:
        self.options = options
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(context))
        ProcessCollector(registry=self.registry)
        self.log = structlog.get_logger().bind(component="metrics")
        self.listening = asyncio.Event()

    async def run(self) -> None:
        """Listen, retrying with backoff while the address cannot be bound."""
        backoff = Backoff(1.0, 60.0)
        while True:
            try:
                server = await asyncio.start_server(
                    self._serve, self.options.address, self.options.port
                )
            except OSError as exc:
                delay = backoff.next()
                self.log.warning(
                    "metrics_listen_failed",
                    address=self.options.address,
                    port=self.options.port,
                    error=str(exc),
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
                continue
            async with server:
                self.log.info(
                    "metrics_listening", address=self.options.address, port=self.options.port
                )
                self.listening.set()
                await server.serve_forever()

    def on_reading(self, reading: Reading) -> None:
        """Nothing to do: values are read at scrape time."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                request = (await reader.readline()).decode("latin-1").split()
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
            writer.write(self._respond(request, headers))
            await writer.drain()
        except (TimeoutError, OSError, ValueError, asyncio.LimitOverrunError):
            pass  # a client that is too slow, gone, or not speaking HTTP: just hang up
        finally:
            writer.close()

    def _respond(self, request: list[str], headers: dict[str, str]) -> bytes:
        if len(request) != 3 or request[1].split("?")[0] != "/metrics":
            return _NOT_FOUND
        if request[0] not in ("GET", "HEAD"):
            return _BAD_METHOD
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        body = encoder(self.registry)
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        return head if request[0] == "HEAD" else head + body


def create(options: MetricsOptions, context: ServiceContext) -> Metrics:
    """Build the service."""
    return Metrics(options, context)


SPEC: ServiceSpec[MetricsOptions] = ServiceSpec("metrics", parse, create)
