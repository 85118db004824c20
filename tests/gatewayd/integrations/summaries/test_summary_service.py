"""The summaries service: `[summaries]` options, and retained summaries through a real store,
publisher and mosquitto — at start, on the schedule and after a backfill."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from gatewayd import services
from gatewayd.backoff import Backoff
from gatewayd.errors import ConfigError
from gatewayd.integrations.summaries import options as summary_options
from gatewayd.integrations.summaries.options import SummaryOptions
from gatewayd.integrations.summaries.payload import WINDOW_KEYS
from gatewayd.integrations.summaries.service import SummaryService
from gatewayd.models import OutOfRange, Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.ops.config import Config, parse
from gatewayd.services import ServiceContext
from gatewayd.store import Store
from gatewayd.store.codec import json_schema
from mosquitto import Mosquitto
from polling import wait_until
from subscriber import Received, Subscriber

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
VALIDATOR = Draft202012Validator(json_schema("summary"), format_checker=FormatChecker())


def config(hub: str, tmp_path: Path, broker: Mosquitto | None = None, **table: Any) -> Config:
    data: dict[str, Any] = {
        "hub": {"id": hub},
        "store": {"path": str(tmp_path / "gw.db")},
        "devices": [{"driver": "simulator", "id": "cgm-1"}],
    }
    if broker is not None:
        data["mqtt"] = {
            "url": broker.url(),
            "username": broker.username,
            "password": broker.password,
        }
    if table:
        data["summaries"] = table
    return parse(data, tmp_path / "gw.toml")


# -- options -----------------------------------------------------------------------------------


def test_defaults_without_a_table(tmp_path: Path) -> None:
    assert summary_options.parse(config("h", tmp_path)) == SummaryOptions(
        enabled=True,
        every=timedelta(minutes=15),
        backfill_delay=timedelta(seconds=10),
        interval=None,
    )


def test_every_key(tmp_path: Path) -> None:
    cfg = config(
        "h",
        tmp_path,
        every_minutes=5,
        backfill_delay_seconds=2.5,
        interval_minutes=15,
    )
    assert summary_options.parse(cfg) == SummaryOptions(
        every=timedelta(minutes=5),
        backfill_delay=timedelta(seconds=2.5),
        interval=timedelta(minutes=15),
    )


def test_disabled_is_not_started_but_still_read(tmp_path: Path) -> None:
    cfg = config("h", tmp_path, enabled=False, interval_minutes=1)
    assert summary_options.parse(cfg) is None
    assert summary_options.read(cfg).interval == timedelta(minutes=1)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"every_minutes": 0}, "summaries.every_minutes: must be > 0"),
        ({"every_minutes": "often"}, "summaries.every_minutes: must be a number"),
        ({"interval_minutes": 61}, "summaries.interval_minutes: must be <= 60"),
        ({"backfill_delay_seconds": -1}, "summaries.backfill_delay_seconds: must be >= 0"),
        ({"enabled": "yes"}, "summaries.enabled: must be true or false"),
        ({"windows": ["7d"]}, "summaries.windows: unknown key"),
    ],
)
def test_bad_values_fail_with_file_and_key(
    tmp_path: Path, table: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        summary_options.parse(config("h", tmp_path, **table))
    assert str(caught.value).startswith(f"{tmp_path / 'gw.toml'}: {message}")


def test_registered_as_a_service() -> None:
    assert "gatewayd.integrations.summaries" in services._MODULES
    spec = importlib.import_module("gatewayd.integrations.summaries").SPEC
    assert isinstance(spec, services.ServiceSpec)
    assert spec.name == "summaries"


# -- the service against a real broker ---------------------------------------------------------


def reading(
    minutes_ago: float,
    mgdl: float | None,
    *,
    out: OutOfRange | None = None,
    backfilled: bool = False,
    device: str = "cgm-1",
) -> Reading:
    time = NOW - timedelta(minutes=minutes_ago)
    return Reading(
        device=device,
        driver="simulator",
        serial="SN1",
        session="s1",
        seq=int(minutes_ago * 60),
        time=time,
        received=time,
        glucose_mgdl=mgdl,
        out_of_range=out,
        backfilled=backfilled,
    )


@asynccontextmanager
async def running(
    tmp_path: Path,
    broker: Mosquitto,
    options: SummaryOptions,
    clock: Callable[[], datetime] = lambda: NOW,
    readings: tuple[Reading, ...] = (),
) -> AsyncIterator[tuple[SummaryService, Store, str]]:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    cfg = config(hub, tmp_path, broker)
    store = Store(cfg.store.path)
    for r in readings:
        store.add(r)
    publisher = Publisher(cfg.mqtt, hub, store, backoff=Backoff(0.05, 0.2))
    context = ServiceContext(cfg, store, publisher, publisher.topics, ("cgm-1",))
    service = SummaryService(options, context, clock=clock)
    tasks = [asyncio.create_task(publisher.run()), asyncio.create_task(service.run())]
    try:
        yield service, store, hub
    finally:
        tasks[1].cancel()
        publisher.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        store.close()


def summaries(messages: list[Received]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic.endswith("/summary")]


async def test_summary_at_start_is_valid_correct_and_retained(
    tmp_path: Path, broker: Mosquitto
) -> None:
    given = (
        reading(10, 100),
        reading(20, 120),
        reading(30, 140),
        reading(3 * 24 * 60, None, out="low"),  # only in the 14-day window
        reading(20 * 24 * 60, 300),  # in neither
    )
    options = SummaryOptions(every=timedelta(hours=1))
    async with running(tmp_path, broker, options, readings=given) as (service, store, hub):
        topic = f"gatewayd/{hub}/cgm-1/summary"
        async with Subscriber(broker, [f"gatewayd/{hub}/+/summary"]) as sub:
            await sub.wait_for(lambda ms: len(summaries(ms)) >= 1)
        payload = summaries(sub.messages)[0]
        VALIDATOR.validate(payload)
        assert (payload["schema"], payload["hub"], payload["device"]) == (
            "gatewayd/summary/1",
            hub,
            "cgm-1",
        )
        day, fortnight = payload["windows"]
        assert [tuple(w) for w in payload["windows"]] == [WINDOW_KEYS, WINDOW_KEYS]
        assert day == {
            "window": "24h",
            "from": "2026-03-14T12:00:00.000Z",
            "to": "2026-03-15T12:00:00.000Z",
            "n": 3,
            "days": 1,
            "coverage_pct": round(100 * 3 / 144, 2),  # 10-minute spacing estimated: 144 a day
            "mean_mgdl": 120.0,
            "sd_mgdl": 20.0,
            "cv_pct": 16.67,
            "gmi_pct": 6.18,
            "tbr2_pct": 0.0,
            "tbr1_pct": 0.0,
            "tir_pct": 100.0,
            "tar1_pct": 0.0,
            "tar2_pct": 0.0,
        }
        assert fortnight["window"] == "14d"
        assert fortnight["from"] == "2026-03-01T12:00:00.000Z"
        assert (fortnight["n"], fortnight["days"]) == (4, 2)
        assert (fortnight["tbr2_pct"], fortnight["tir_pct"]) == (25.0, 75.0)
        assert fortnight["mean_mgdl"] == 120.0  # the out-of-range low has no value

        async with Subscriber(broker, [topic]) as late:
            retained = await late.wait_for(lambda ms: len(ms) >= 1)
        assert retained[0].retain
        assert retained[0].json() == payload
        assert service.published == 1
        # The PUBACK's deletion is committed lazily by the writer thread (gatewayd.store.writer):
        # received by a subscriber is not yet deleted from the store.
        await wait_until(lambda: store.pending_messages(10) == [], 5, "the message deleted")
        assert store.pending_messages(10) == []


async def test_a_backfill_republishes_once_after_the_burst(
    tmp_path: Path, broker: Mosquitto
) -> None:
    options = SummaryOptions(every=timedelta(hours=1), backfill_delay=timedelta(seconds=0.05))
    given = (reading(10, 100),)
    async with running(tmp_path, broker, options, readings=given) as (service, store, hub):
        async with Subscriber(broker, [f"gatewayd/{hub}/+/summary"]) as sub:
            await sub.wait_for(lambda ms: len(summaries(ms)) >= 1)
            assert summaries(sub.messages)[0]["windows"][0]["n"] == 1

            live = reading(5, 110)
            other = reading(6, 110, backfilled=True, device="not-configured")
            burst = [reading(60 + 5 * i, 200, backfilled=True) for i in range(5)]
            for r in (live, other, *burst):
                store.add(r)
                service.on_reading(r)
            await sub.wait_for(lambda ms: len(summaries(ms)) >= 2)
        day = summaries(sub.messages)[1]["windows"][0]
        assert day["n"] == 7
        assert day["tar1_pct"] == round(100 * 5 / 7, 2)
        assert service.published == 2  # the whole burst made one summary


async def test_the_schedule_republishes_with_the_clock(tmp_path: Path, broker: Mosquitto) -> None:
    ticks = itertools.count()

    def clock() -> datetime:
        return NOW + timedelta(minutes=next(ticks))

    options = SummaryOptions(every=timedelta(seconds=0.05))
    async with (
        running(tmp_path, broker, options, clock, (reading(10, 100),)) as (_, _, hub),
        Subscriber(broker, [f"gatewayd/{hub}/+/summary"]) as sub,
    ):
        await sub.wait_for(lambda ms: len(summaries(ms)) >= 3)
    ends = [p["windows"][0]["to"] for p in summaries(sub.messages)]
    assert ends == sorted(ends)
    assert len(set(ends)) == len(ends)


async def test_an_undelivered_summary_is_replaced_by_the_newer_one(tmp_path: Path) -> None:
    cfg = config("hub-x", tmp_path)
    store = Store(cfg.store.path)
    store.add(reading(10, 100))
    store.add_message("gatewayd/hub-x/cgm-1/alert", b"keep", retain=False)
    publisher = Publisher(cfg.mqtt, "hub-x", store)
    context = ServiceContext(cfg, store, publisher, publisher.topics, ("cgm-1",))
    service = SummaryService(SummaryOptions(), context, clock=lambda: NOW)
    for i in range(3):
        store.add(reading(1 + i / 10, 180))
        await service.publish(["cgm-1"])
    pending = store.pending_messages(10)
    assert [(m.topic, m.retain) for m in pending] == [
        ("gatewayd/hub-x/cgm-1/alert", False),
        ("gatewayd/hub-x/cgm-1/summary", True),
    ]
    assert json.loads(pending[1].payload)["windows"][0]["n"] == 4  # the newest
    service.close()
    store.close()
