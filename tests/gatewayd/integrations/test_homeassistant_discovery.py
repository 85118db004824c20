"""Home Assistant discovery on a real broker: payloads against HA's documented keys, templates
rendered with Jinja2 against the real retained topics, re-announce on `online`, and removal."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gatewayd.device_status import DeviceStatus, LinkState
from gatewayd.errors import ConfigError
from gatewayd.integrations import homeassistant, homeassistant_hub
from gatewayd.integrations.homeassistant import SUMMARY_METRICS
from gatewayd.integrations.summaries.metrics import summarize
from gatewayd.integrations.summaries.payload import STANDARD_WINDOWS, summary_payload
from gatewayd.mqtt.publisher import Publisher
from gatewayd.services import ServiceContext, ServiceSpec
from gatewayd.store import Store
from gatewayd.store.codec import reading_payload, to_record
from subscriber import Received, Subscriber

pytestmark = pytest.mark.timeout(30)

SCHEMA = json.loads((Path(__file__).parent / "ha_device_discovery.schema.json").read_text())
JINJA = ImmutableSandboxedEnvironment()


def render(template: str, payload: Any) -> str:
    """What Home Assistant renders for a template on a JSON payload (`value_json`)."""
    text = json.dumps(payload)
    return JINJA.from_string(template).render(value=text, value_json=json.loads(text)).strip()


def schema_errors(payload: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(payload)]


async def fence(rig: Any, sub: Subscriber, prefix: str) -> None:
    """Publish a marker and wait for it: everything the broker had sent before has arrived."""
    marker = uuid.uuid4().hex.encode()
    async with aiomqtt.Client(
        "127.0.0.1", rig.broker.port, username=rig.broker.username, password=rig.broker.password
    ) as client:
        await client.publish(f"{prefix}/fence", marker, qos=1)
    await sub.wait_for(lambda m: any(x.payload == marker for x in m))


async def publish(rig: Any, topic: str, *payloads: bytes) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", rig.broker.port, username=rig.broker.username, password=rig.broker.password
    ) as client:
        for payload in payloads:
            await client.publish(topic, payload, qos=1)


async def drained(rig: Any, daemon: Any) -> None:
    """This start's discovery messages are queued, and the broker acknowledged them all."""
    await rig.wait_until(
        lambda: daemon.services[0].synced.is_set() and daemon.store.message_count() == 0,
        what="discovery outbox drained",
    )


def configs(messages: list[Received]) -> list[Received]:
    return [m for m in messages if m.topic.endswith("/config")]


def latest(messages: list[Received]) -> dict[str, Received]:
    """The newest config per topic (a config superseded before it was sent never is: only the
    newest retained value matters, so the hub sends only that one)."""
    return {m.topic: m for m in configs(messages)}


def identified(messages: list[Received], *topics: str) -> bool:
    """Every device config of `topics` was sent with the identity its sensor reported."""
    found = latest(messages)
    return all(t in found and "mf" in found[t].json()["dev"] for t in topics)


async def test_discovery_is_valid_and_its_templates_read_the_real_topics(rig: Any) -> None:
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    config = rig.config(
        ("cgm-a", "cgm-b"),
        homeassistant={"discovery_prefix": prefix, "unit": "mmol/L", "expire_after": 600},
        alerts={},
    )
    root = f"gatewayd/{rig.hub}"
    topic_a = f"{prefix}/device/gatewayd_{rig.hub}_cgm-a/config"
    topic_hub = f"{prefix}/device/gatewayd_{rig.hub}/config"
    async with (
        Subscriber(rig.broker, [f"{prefix}/#", f"{root}/#"]) as sub,
        rig.running(rig.daemon(config, homeassistant.SPEC)),
    ):
        rig.feed("cgm-a", rig.reading("cgm-a", 1, 99.0, trend=-2.5))
        await sub.wait_for(
            lambda m: (
                # the hub and two devices, with the identity they reported
                topic_hub in latest(m)
                and identified(m, topic_a, topic_a.replace("cgm-a", "cgm-b"))
                and any(x.topic == f"{root}/cgm-a/state" for x in m)
                and any(x.topic == f"{root}/cgm-a/status" and b"connected" in x.payload for x in m)
            )
        )
        async with Subscriber(rig.broker, [f"{prefix}/#"]) as late:
            await fence(rig, late, prefix)
            retained = {m.topic: m for m in configs(late.messages)}
        # What the broker holds for the device while it runs.
        state = [m for m in sub.messages if m.topic == f"{root}/cgm-a/state"][-1].json()
        status = [m for m in sub.messages if m.topic == f"{root}/cgm-a/status"][-1].json()
    assert set(retained) == {topic_hub, topic_a, topic_a.replace("cgm-a", "cgm-b")}
    assert all(m.retain for m in retained.values())
    assert all(schema_errors(m.json()) == [] for m in retained.values())
    payload = retained[topic_a].json()
    summaries = {f"{k}_{w}" for k, *_ in SUMMARY_METRICS for w in ("24h", "14d")}
    assert set(payload["cmps"]) == {
        "glucose",
        "trend",
        "direction",
        "reading_time",
        "link",
        "alert",
        *summaries,
    }
    # Home Assistant 2025.4 reads `qos` per component only.
    assert {c["qos"] for c in payload["cmps"].values()} == {1}
    # The device as the sensor reported itself, under the hub.
    assert payload["dev"] == {
        "ids": [f"gatewayd_{rig.hub}_cgm-a"],
        "name": "cgm-a",
        "mf": "Test Co",
        "mdl": "Fed CGM",
        "via_device": f"gatewayd_{rig.hub}",
    }
    hub = retained[topic_hub].json()
    assert hub["dev"]["ids"] == [f"gatewayd_{rig.hub}"]
    assert set(hub["cmps"]) == {"connectivity", "outbox", "last_delivery"}
    assert hub["cmps"]["connectivity"]["state_topic"] == f"{root}/status"
    glucose = payload["cmps"]["glucose"]
    assert glucose["device_class"] == "blood_glucose_concentration"
    assert glucose["unit_of_measurement"] == "mmol/L"
    assert glucose["state_class"] == "measurement"
    assert glucose["expire_after"] == 600
    assert payload["state_topic"] == f"{root}/cgm-a/state"
    assert payload["availability_mode"] == "all"
    assert [a["topic"] for a in payload["availability"]] == [
        f"{root}/status",
        f"{root}/cgm-a/status",
    ]
    assert payload["cmps"]["alert"]["state_topic"] == f"{root}/cgm-a/alerts"
    unique_ids = [c["unique_id"] for p in retained.values() for c in p.json()["cmps"].values()]
    assert len(set(unique_ids)) == len(unique_ids) == 2 * (6 + 12) + 3

    # The templates, on the real payloads.
    cmps = payload["cmps"]
    assert render(glucose["value_template"], state) == "5.5"
    assert json.loads(render(glucose["json_attributes_template"], state))["out_of_range"] is None
    assert render(cmps["trend"]["value_template"], state) == "-0.14"
    assert render(cmps["direction"]["value_template"], state) == "Falling"
    assert render(cmps["direction"]["value_template"], state) in cmps["direction"]["options"]
    assert json.loads(render(cmps["direction"]["json_attributes_template"], state)) == {
        "direction": "SingleDown"
    }
    assert cmps["direction"]["icon"] == "mdi:swap-vertical"
    assert render(cmps["reading_time"]["value_template"], state) == state["time"]
    assert render(cmps["link"]["value_template"], status) == "connected"
    hub_online, device_running = payload["availability"]
    assert hub_online["payload_available"] == "online"
    assert render(device_running["value_template"], status) == "online"


async def test_out_of_range_alerts_and_availability_templates(rig: Any) -> None:
    config = rig.config(("cgm-a",), homeassistant={}, alerts={})
    options = homeassistant.parse(config)
    assert options is not None
    assert options.unit == "mg/dL"
    assert options.expire_after == 900
    store = Store(rig.folder / "unused.db")
    publisher = Publisher(config.mqtt, rig.hub, store)
    context = ServiceContext(config, store, publisher, publisher.topics, ("cgm-a",))
    payload = homeassistant.discovery_payload(context, options, "cgm-a", "fed")
    store.close()
    assert schema_errors(payload) == []
    cmps = payload["cmps"]
    # The schema is not vacuous: each of these mistakes fails it.
    for mistake in [
        {"unit_of_measurement": "mg/dl"},
        {"expire": 60},
        {"state_class": "measurement", "device_class": "timestamp"},
        {"p": "switch"},
    ]:
        broken = json.loads(json.dumps(payload))
        broken["cmps"]["glucose"].update(mistake)
        assert schema_errors(broken), mistake
    assert schema_errors({**payload, "cmps": {"x": {"p": "sensor", "name": "No unique id"}}})
    assert schema_errors({**payload, "availability_mode": "every"})

    def state(glucose: float | None, side: str | None = None) -> dict[str, Any]:
        r = rig.reading("cgm-a", 1, glucose, out_of_range=side, trend=None)
        return reading_payload(to_record(r), rig.hub)

    glucose = cmps["glucose"]["value_template"]
    assert render(glucose, state(99.0)) == "99.0"
    assert render(glucose, state(None, "low")) == "39"
    assert render(glucose, state(None, "high")) == "401"
    low_attrs = json.loads(render(cmps["glucose"]["json_attributes_template"], state(None, "low")))
    assert low_attrs["out_of_range"] == "low"
    assert render(cmps["trend"]["value_template"], state(99.0)) == "None"  # HA: unknown

    alert = cmps["alert"]["value_template"]
    active = {
        "schema": "gatewayd/alerts/1",
        "active": [{"kind": "low", "severity": "warning"}],
    }
    assert render(alert, {"schema": "gatewayd/alerts/1", "active": []}) == "OFF"
    assert render(alert, active) == "ON"
    assert render(alert, []) == "OFF"
    assert render(alert, [{"kind": "low"}]) == "ON"
    attrs = json.loads(render(cmps["alert"]["json_attributes_template"], active))
    assert attrs == {"alerts": active["active"]}

    running = payload["availability"][1]["value_template"]
    since = datetime.now(UTC)
    for link, expected in [
        (LinkState.CONNECTED, "online"),
        (LinkState.CONNECTING, "online"),
        (LinkState.BACKOFF, "online"),
        (LinkState.PARKED, "offline"),
        (LinkState.STOPPED, "offline"),
    ]:
        status = DeviceStatus("cgm-a", "fed", link, since, reason="why").payload(rig.hub)
        assert render(running, status) == expected, link
        assert render(cmps["link"]["value_template"], status) == str(link)
    # `link` stays available while parked (to show why): it follows the hub only.
    assert [a["topic"] for a in cmps["link"]["availability"]] == [
        payload["availability"][0]["topic"]
    ]


async def test_reannounces_when_home_assistant_comes_online(rig: Any) -> None:
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    config = rig.config(("cgm-a",), homeassistant={"discovery_prefix": prefix})
    async with (
        Subscriber(rig.broker, [f"{prefix}/#"]) as sub,
        rig.running(rig.daemon(config, homeassistant.SPEC)) as daemon,
    ):
        # The hub and its device, with the identity the device reported.
        topic_a = f"{prefix}/device/gatewayd_{rig.hub}_cgm-a/config"
        await sub.wait_for(lambda m: len(latest(m)) == 2 and identified(m, topic_a))
        await drained(rig, daemon)
        await fence(rig, sub, prefix)
        before = {t: m.payload for t, m in latest(sub.messages).items()}
        mark = len(configs(sub.messages))
        await publish(rig, f"{prefix}/status", b"offline", b"online")
        await sub.wait_for(lambda m: len(configs(m)) >= mark + 2)
        await drained(rig, daemon)
        await fence(rig, sub, prefix)
        again = configs(sub.messages)[mark:]  # `offline` announced nothing
        assert {m.topic: m.payload for m in again} == before
        assert len(again) == 2


def _write_bytes() -> int:
    """What this process made the kernel write to storage (SQLite's fsynced commits)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise AssertionError("no write_bytes in /proc/self/io")


def _messages_written(daemon: Any) -> int:
    """Rows ever inserted into the message outbox (its AUTOINCREMENT counter)."""
    rows = daemon.store.query("SELECT seq FROM sqlite_sequence WHERE name = 'messages'")
    return int(rows[0][0]) if rows else 0


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_an_online_storm_makes_one_reannouncement_and_writes_no_duplicates(
    rig: Any,
) -> None:
    """1,000 `online` messages on `<prefix>/status` (anyone who may publish there can send them)
    make one re-announcement per burst, and no config is written to the store twice (issue 10.5).
    """
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    devices = ("cgm-a", "cgm-b")
    config = rig.config(devices, homeassistant={"discovery_prefix": prefix})
    async with (
        Subscriber(rig.broker, [f"{prefix}/device/#", f"{prefix}/fence"]) as sub,
        rig.running(rig.daemon(config, homeassistant.SPEC)) as daemon,
    ):
        service = daemon.services[0]
        announced = len(devices) + 1  # the hub is a device of its own
        await sub.wait_for(lambda m: len(latest(m)) == announced)
        await drained(rig, daemon)
        await fence(rig, sub, prefix)
        mark = len(configs(sub.messages))
        rows, written, cpu = _messages_written(daemon), _write_bytes(), time.process_time()
        await publish(rig, f"{prefix}/status", *[b"online"] * 1000)
        await rig.wait_until(lambda: service.announcements >= 1, what="a re-announcement")
        await drained(rig, daemon)
        await fence(rig, sub, prefix)
        stored_rows = _messages_written(daemon) - rows
        stored_bytes = _write_bytes() - written
        cpu_s = time.process_time() - cpu
        print(  # the closing note: bytes written to the store per storm
            f"storm of 1000 online: {service.announcements} re-announcement(s), "
            f"{len(configs(sub.messages)) - mark} configs published, "
            f"{stored_rows} rows and {stored_bytes} bytes written, {cpu_s:.2f} s CPU (test process)"
        )
        assert service.announcements == 1
        assert len(configs(sub.messages)) - mark == announced
        assert stored_rows == announced


async def test_a_device_removed_from_config_is_removed_from_home_assistant(rig: Any) -> None:
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    topic_a = f"{prefix}/device/gatewayd_{rig.hub}_cgm-a/config"
    topic_b = f"{prefix}/device/gatewayd_{rig.hub}_cgm-b/config"
    topic_hub = f"{prefix}/device/gatewayd_{rig.hub}/config"
    store = rig.folder / "gatewayd.db"

    def announced() -> list[str]:
        db = sqlite3.connect(store)
        try:
            return [d for (d,) in db.execute("SELECT device FROM homeassistant_announced")]
        finally:
            db.close()

    async def run(devices: tuple[str, ...], **options: Any) -> list[Received]:
        config = rig.config(devices, homeassistant={"discovery_prefix": prefix, **options})
        async with (
            Subscriber(rig.broker, [f"{prefix}/#"]) as sub,
            rig.running(rig.daemon(config, homeassistant.SPEC)) as daemon,
        ):
            await drained(rig, daemon)
            await fence(rig, sub, prefix)
            return [m for m in configs(sub.messages) if not m.retain]  # what this run sent

    async def retained() -> dict[str, bytes]:
        async with Subscriber(rig.broker, [f"{prefix}/#"]) as sub:
            await fence(rig, sub, prefix)
            return {m.topic: m.payload for m in configs(sub.messages)}

    await run(("cgm-a", "cgm-b"))
    assert set(await retained()) == {topic_hub, topic_a, topic_b}
    assert sorted(announced()) == ["", "cgm-a", "cgm-b"]  # "": the hub

    seen = await run(("cgm-a",))
    assert [m.payload for m in seen if m.topic == topic_b] == [b""]
    assert set(await retained()) == {topic_hub, topic_a}
    assert sorted(announced()) == ["", "cgm-a"]

    seen = await run(("cgm-a",), enabled=False)
    assert [m.payload for m in seen] == [b"", b""]
    assert await retained() == {}
    assert announced() == []


@pytest.mark.parametrize(
    ("table", "key", "fragment"),
    [
        ({"unit": "mg/dl"}, "homeassistant.unit", "mg/dL, mmol/L"),
        ({"discovery_prefix": "home/#"}, "homeassistant.discovery_prefix", "topic levels"),
        ({"expire_after": -1}, "homeassistant.expire_after", ">= 0"),
        ({"expire": 60}, "homeassistant.expire", "unknown key"),
    ],
)
def test_bad_config_fails_at_start(
    rig: Any, table: dict[str, Any], key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        homeassistant.parse(rig.config(homeassistant=table))
    assert info.value.key == key
    assert fragment in info.value.reason


def test_ids_that_collide_in_a_discovery_topic_fail_at_start(rig: Any) -> None:
    assert homeassistant.parse(rig.config()) is None
    with pytest.raises(ConfigError) as info:
        homeassistant.parse(rig.config(("cgm.a", "cgm_a"), homeassistant={}))
    assert info.value.key == "devices[1].id"


async def test_a_new_discovery_prefix_clears_the_old_configs(rig: Any) -> None:
    old, new = (f"ha-{uuid.uuid4().hex[:8]}" for _ in range(2))
    node = f"gatewayd_{rig.hub}_cgm-a"
    for prefix in (old, new):
        config = rig.config(homeassistant={"discovery_prefix": prefix})
        async with rig.running(rig.daemon(config, homeassistant.SPEC)) as daemon:
            await drained(rig, daemon)
    async with Subscriber(rig.broker, [f"{old}/#", f"{new}/#"]) as sub:
        await fence(rig, sub, new)
        assert sorted(m.topic for m in configs(sub.messages)) == [
            f"{new}/device/gatewayd_{rig.hub}/config",
            f"{new}/device/{node}/config",
        ]


def payload_of(rig: Any, config: Any, device: str) -> dict[str, Any]:
    """The discovery config of `device` under `config`, built as the service builds it."""
    options = homeassistant.parse(config)
    assert options is not None
    store = Store(rig.folder / "payload.db")
    publisher = Publisher(config.mqtt, rig.hub, store)
    context = ServiceContext(config, store, publisher, publisher.topics, ("cgm-a", "cgm-b"))
    try:
        return homeassistant.discovery_payload(context, options, device, "fed")
    finally:
        store.close()


def test_only_devices_with_alerts_get_an_alert_entity(rig: Any) -> None:
    config = rig.config(
        ("cgm-a", "cgm-b"), tables={"cgm-a": {"alerts": {"low": 75}}}, homeassistant={}
    )
    assert "alert" in payload_of(rig, config, "cgm-a")["cmps"]
    assert "alert" not in payload_of(rig, config, "cgm-b")["cmps"]
    everyone = rig.config(("cgm-a", "cgm-b"), homeassistant={}, alerts={})
    assert all("alert" in payload_of(rig, everyone, d)["cmps"] for d in ("cgm-a", "cgm-b"))
    nobody = rig.config(("cgm-a", "cgm-b"), homeassistant={})
    assert not any("alert" in payload_of(rig, nobody, d)["cmps"] for d in ("cgm-a", "cgm-b"))


@pytest.mark.parametrize("unit", ["mg/dL", "mmol/L"])
def test_summary_sensors_read_the_retained_summary(rig: Any, unit: str) -> None:
    end = datetime(2026, 3, 2, tzinfo=UTC)
    readings = [
        rig.reading("cgm-a", i, value, minutes_ago=0)
        for i, value in enumerate((50.0, 65.0, 100.0, 150.0, 200.0, 300.0, 120.0, 110.0))
    ]
    readings = [
        replace(r, time=end - timedelta(minutes=5 * (i + 1))) for i, r in enumerate(readings)
    ]
    windows = [summarize(readings, end - length, end, window=label) for label, length in
               STANDARD_WINDOWS]  # fmt: skip
    summary = summary_payload(rig.hub, "cgm-a", windows)
    cmps = payload_of(rig, rig.config(homeassistant={"unit": unit}), "cgm-a")["cmps"]
    assert schema_errors({"dev": {"ids": ["x"]}, "o": {"name": "x"}, "cmps": cmps}) == []
    assert render(cmps["tir_14d"]["value_template"], summary) == "50.0"
    assert render(cmps["below_70_24h"]["value_template"], summary) == "25.0"
    assert render(cmps["above_180_14d"]["value_template"], summary) == "25.0"
    mean = sum(r.glucose_mgdl or 0 for r in readings) / len(readings)
    expected = mean if unit == "mg/dL" else mean / 18.0156
    assert float(render(cmps["mean_14d"]["value_template"], summary)) == pytest.approx(
        expected, abs=0.01
    )
    assert cmps["mean_14d"]["unit_of_measurement"] == unit
    assert cmps["gmi_24h"]["state_class"] == "measurement"
    low_name = "Time below 70 mg/dL (24h)" if unit == "mg/dL" else "Time below 3.9 mmol/L (24h)"
    assert cmps["below_70_24h"]["name"] == low_name
    # No reading in the window: HA's unknown, not 0.
    empty = summary_payload(
        rig.hub, "cgm-a", [summarize([], end - timedelta(1), end, window="24h")]
    )
    assert render(cmps["tir_24h"]["value_template"], empty) == "None"
    assert render(cmps["tir_14d"]["value_template"], empty) == "None"  # no such window
    off = rig.config(homeassistant={}, summaries={"enabled": False})
    assert not [k for k in payload_of(rig, off, "cgm-a")["cmps"] if k.startswith("tir")]


async def test_the_hub_publishes_its_outbox_for_its_device(rig: Any) -> None:
    config = rig.config(("cgm-a",), homeassistant={})
    assert homeassistant_hub.parse(config) == homeassistant_hub.HubStateOptions()
    assert homeassistant_hub.parse(rig.config(("cgm-a",), homeassistant={"enabled": False})) is None
    quick = ServiceSpec(
        "hubstate",
        lambda c: homeassistant_hub.HubStateOptions(check_s=0.02),
        homeassistant_hub.SPEC.create,
    )
    topic = f"gatewayd/{rig.hub}/outbox"
    async with (
        Subscriber(rig.broker, [topic]) as sub,
        rig.running(rig.daemon(config, quick)),
    ):
        first = (await sub.wait_for(lambda m: len(m) >= 1))[0].json()
        assert first == {
            "schema": "gatewayd/outbox/1", "hub": rig.hub, "readings_waiting": 0,
            "last_delivery": None,
        }  # fmt: skip
        rig.feed("cgm-a", rig.reading("cgm-a", 1))
        delivered = await sub.wait_for(lambda m: m[-1].json()["last_delivery"] is not None)
    state = delivered[-1].json()
    assert state["readings_waiting"] == 0
    assert datetime.fromisoformat(state["last_delivery"]) > datetime.now(UTC) - timedelta(minutes=1)


def test_the_unit_follows_the_hubs_unless_set(rig: Any) -> None:
    hub = {"id": rig.hub, "unit": "mmol/L"}
    assert homeassistant.parse(rig.config(hub=hub, homeassistant={})).unit == "mmol/L"  # type: ignore[union-attr]
    chosen = rig.config(hub=hub, homeassistant={"unit": "mg/dL"})
    assert homeassistant.parse(chosen).unit == "mg/dL"  # type: ignore[union-attr]
