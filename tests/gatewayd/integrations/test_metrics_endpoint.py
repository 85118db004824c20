"""The Prometheus endpoint, scraped over real HTTP while the daemon runs against real brokers."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gatewayd.errors import ConfigError
from gatewayd.integrations import prometheus
from mosquitto import free_port
from subscriber import Subscriber

pytestmark = pytest.mark.timeout(30)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(port: int, path: str = "/metrics", accept: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of one GET."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Accept": accept} if accept else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback http
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, "", ""
    except urllib.error.URLError:  # not listening (yet)
        return 0, "", ""


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def one(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def scrape_until(port: int, condition: Callable[[Samples], bool]) -> Samples:
    """Scrape until `condition` holds on what the endpoint says (a deadline, not a delay)."""
    deadline = time.monotonic() + 15
    while True:
        status, _, body = await asyncio.to_thread(get, port)
        found = samples(body) if status == 200 else {}
        if found and condition(found):
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"metrics never satisfied the condition; last: {found}")
        await asyncio.sleep(0.01)


async def test_scraped_counters_follow_the_data_path(rig: Any) -> None:
    port = free_port()
    config = rig.config(("cgm-a", "cgm-b"), metrics={"port": port})
    a = [rig.reading("cgm-a", seq) for seq in (1, 2, 3)]
    b = [rig.reading("cgm-b", seq) for seq in (1, 2)]
    root = f"gatewayd/{rig.hub}"
    async with (
        Subscriber(rig.broker, [f"{root}/+/reading"]) as sub,
        rig.running(rig.daemon(config, prometheus.SPEC)) as daemon,
    ):
        await asyncio.wait_for(daemon.services[0].listening.wait(), 10)
        crc, short = rig.drop("crc_mismatch"), rig.drop("short_packet")
        rig.feed("cgm-a", a[0], crc, a[1], crc, a[1], short, a[2])  # a[1] twice: one duplicate
        rig.feed("cgm-b", *b)
        await sub.wait_for(lambda m: len(m) == 5)
        found = await scrape_until(
            port,
            lambda s: (
                one(s, "gatewayd_readings_published_total", device="cgm-a") == 3
                and one(s, "gatewayd_readings_published_total", device="cgm-b") == 2
            ),
        )
        status, content_type, _ = await asyncio.to_thread(get, port)
        _, open_type, open_body = await asyncio.to_thread(
            get, port, "/metrics", "application/openmetrics-text; version=1.0.0"
        )
        missing = await asyncio.to_thread(get, port, "/")
    now = datetime.now(UTC)

    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert open_type.startswith("application/openmetrics-text")
    assert open_body.rstrip().endswith("# EOF")
    assert missing[0] == 404
    assert one(found, "gatewayd_readings_received_total", device="cgm-a") == 4
    assert one(found, "gatewayd_readings_stored_total", device="cgm-a") == 3
    assert one(found, "gatewayd_readings_received_total", device="cgm-b") == 2
    assert one(found, "gatewayd_readings_dropped_total", device="cgm-a", reason="crc_mismatch") == 2
    assert one(found, "gatewayd_readings_dropped_total", device="cgm-a", reason="short_packet") == 1
    assert not [k for k in found if k[0] == "gatewayd_readings_dropped_total" and "cgm-b" in str(k)]
    assert one(found, "gatewayd_records_unreadable_total", device="cgm-a") == 0
    assert not [k for k in found if k[0] == "gatewayd_device_clock_offset_seconds"]
    assert one(found, "gatewayd_outbox_depth") == 0
    assert one(found, "gatewayd_mqtt_connected") == 1
    assert one(found, "gatewayd_mqtt_reconnects_total") == 0
    assert one(found, "gatewayd_device_state", device="cgm-a", state="connected") == 1
    assert one(found, "gatewayd_device_state", device="cgm-a", state="parked") == 0
    newest = a[2].time
    assert one(found, "gatewayd_last_reading_timestamp_seconds", device="cgm-a") == (
        newest.timestamp()
    )
    age = one(found, "gatewayd_last_reading_age_seconds", device="cgm-a")
    assert 0 <= (now - newest).total_seconds() - age < 10
    assert one(found, "gatewayd_build_info", version="0.1.0", hub=rig.hub) == 1
    assert one(found, "process_resident_memory_bytes") > 0
    assert not [k for k in found if "glucose" in k[0]]  # no health values on this endpoint


async def test_a_broker_outage_shows_in_the_metrics(own_rig: Any) -> None:
    rig, port = own_rig, free_port()
    config = rig.config(metrics={"port": port})
    async with rig.running(rig.daemon(config, prometheus.SPEC)):
        await scrape_until(port, lambda s: one(s, "gatewayd_mqtt_connected") == 1)
        rig.broker.stop()
        await scrape_until(
            port,
            lambda s: (
                one(s, "gatewayd_mqtt_connected") == 0
                and one(s, "gatewayd_mqtt_reconnects_total") >= 1
            ),
        )
        rig.feed("cgm-a", rig.reading("cgm-a", 1), rig.reading("cgm-a", 2))
        down = await scrape_until(port, lambda s: one(s, "gatewayd_outbox_depth") == 2)
        assert one(down, "gatewayd_readings_stored_total", device="cgm-a") == 2
        assert one(down, "gatewayd_readings_published_total", device="cgm-a") == 0
        rig.broker.start()
        await scrape_until(
            port,
            lambda s: (
                one(s, "gatewayd_outbox_depth") == 0
                and one(s, "gatewayd_readings_published_total", device="cgm-a") == 2
                and one(s, "gatewayd_mqtt_connected") == 1
            ),
        )


async def test_a_port_in_use_does_not_stop_the_daemon(rig: Any) -> None:
    blocker = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    config = rig.config(metrics={"port": port})
    try:
        async with rig.running(rig.daemon(config, prometheus.SPEC)) as daemon:
            rig.feed("cgm-a", rig.reading("cgm-a", 1))
            await rig.wait_until(lambda: daemon.publisher.delivered == 1, what="data path")
            assert not daemon.services[0].listening.is_set()
            blocker.close()
            await blocker.wait_closed()
            await asyncio.wait_for(daemon.services[0].listening.wait(), 10)
            status, _, _ = await asyncio.to_thread(get, port)
            assert status == 200
    finally:
        blocker.close()


@pytest.mark.parametrize(
    ("table", "key", "fragment"),
    [
        ({"port": 0}, "metrics.port", ">= 1"),
        ({"address": "example.org"}, "metrics.address", "IP address"),
        ({"listen": "127.0.0.1"}, "metrics.listen", "unknown key"),
    ],
)
def test_bad_config_fails_at_start(
    rig: Any, table: dict[str, Any], key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        prometheus.parse(rig.config(metrics=table))
    assert info.value.key == key
    assert fragment in info.value.reason


def test_config_defaults(rig: Any) -> None:
    assert prometheus.parse(rig.config()) is None
    assert prometheus.parse(rig.config(metrics={"enabled": False})) is None
    options = prometheus.parse(rig.config(metrics={}))
    assert options == prometheus.MetricsOptions(address="127.0.0.1", port=9464)
