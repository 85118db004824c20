"""Home Assistant: device-based MQTT discovery of the hub and every configured device.

One retained config per device on `<prefix>/device/gatewayd_<hub>_<device>/config` announces
(the device as its sensor reported itself, `via_device` the hub; QoS 1 on every component):

- `glucose`: `device_class: blood_glucose_concentration`, `state_class: measurement`, in the
  configured unit, from the device's retained `state` (an out-of-range reading shows as 39/401
  mg/dL or 2.2/22.3 mmol/L, Nightscout's LOW/HIGH, with `out_of_range` as an attribute, so
  that an automation on "below 70" still fires on a LOW);
- `trend` (per minute, same unit) and `direction` (the arrow in words, an enum; Nightscout's
  name as an attribute);
- `reading_time` (diagnostic timestamp of the newest reading: how stale the data is);
- `link` (diagnostic enum of the device's link state, with the reason as an attribute);
- `alert`: a `problem` binary sensor, ON while the device's retained `alerts` payload lists an
  active alert (only on a device that has alerts);
- the retained `summary` of 24 h and 14 d: time in range, below 70, above 180, GMI, CV, mean.

The hub's own config, `<prefix>/device/gatewayd_<hub>/config`: its connectivity (birth and last
will) and, from `<root>/<hub>/outbox` (`homeassistant_hub`), the readings waiting and the last
delivery.

The reading entities carry `expire_after` and are available while the hub says `online` AND
the device is neither `parked` nor `stopped` (`availability_mode: all`). A device that connects
between readings (most CGMs) stays available; staleness is what `expire_after` is for. `link`
needs the hub only, so a parked device shows why.

Configs are queued in the store's durable message outbox, again when `<prefix>/status` says
`online`. Anyone allowed to publish there can send thousands of `online`s: a burst of them (until
`_QUIET_S` pass without one, or `_MAX_WAIT_S` after its first) makes one re-announcement, and a
config that already waits in the outbox unchanged is not written again (the SD card's life).
Announced devices are remembered in the store; at start a device no longer configured (or every
device, with `enabled = false`) gets an empty retained config, which removes it.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

import structlog

from gatewayd import __version__
from gatewayd.device_status import LinkState
from gatewayd.errors import ConfigError
from gatewayd.integrations.alerts import settings as alert_settings
from gatewayd.integrations.summaries import options as summary_options
from gatewayd.integrations.summaries.payload import STANDARD_WINDOWS
from gatewayd.models import MGDL_PER_MMOLL, UNITS, Direction, Reading
from gatewayd.ops.config import Config
from gatewayd.services import ServiceContext, ServiceSpec

_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*\Z")
#: Leaf of the retained list of active alerts (published by the alerts service).
ALERTS_LEAF = "alerts"
#: The active alerts: the `active` list of the alerts payload (or the payload, if a bare list).
_ACTIVE = "{% set active = value_json.active if value_json is mapping else value_json %}"
#: The key of the hub itself among the announced nodes (no device id is empty).
HUB = ""
#: The direction sensor's states: Nightscout's arrows in words (the arrow is an attribute).
DIRECTION_NAMES: dict[Direction, str] = {
    Direction.DOUBLE_UP: "Rising fast",
    Direction.SINGLE_UP: "Rising",
    Direction.FORTY_FIVE_UP: "Rising slowly",
    Direction.FLAT: "Steady",
    Direction.FORTY_FIVE_DOWN: "Falling slowly",
    Direction.SINGLE_DOWN: "Falling",
    Direction.DOUBLE_DOWN: "Falling fast",
    Direction.NOT_COMPUTABLE: "Not computable",
    Direction.RATE_OUT_OF_RANGE: "Rate out of range",
}  # NONE (no arrow at all) leaves the state unknown
_DIRECTION_WORDS = {str(arrow): words for arrow, words in DIRECTION_NAMES.items()}
_DIRECTION_TEMPLATE = f"{{{{ {_DIRECTION_WORDS!r}.get(value_json.direction, 'None') }}}}"
_ORIGIN = {"name": "gatewayd", "sw": __version__}
#: What an out-of-range reading shows as (Nightscout's LOW and HIGH codes), per unit.
_OUT_OF_RANGE = {"mg/dL": ("39", "401"), "mmol/L": ("2.2", "22.3")}
#: An `online` burst ends once this many seconds pass without another; then one re-announcement
#: (Home Assistant itself waits a moment after its birth before it reads discovery).
_QUIET_S = 1.0
#: A storm that never pauses still gets one re-announcement per this many seconds (the configs
#: are retained: a Home Assistant that came online meanwhile has them from the broker already).
_MAX_WAIT_S = 60.0
_DDL = """
CREATE TABLE IF NOT EXISTS homeassistant_announced (
    device TEXT PRIMARY KEY,
    topic TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class HomeAssistantOptions:
    """`[homeassistant]`."""

    enabled: bool = True
    discovery_prefix: str = "homeassistant"
    unit: str = "mg/dL"
    #: Seconds without a new reading before the reading entities become unavailable (0: never).
    expire_after: int = 900


def parse(config: Config) -> HomeAssistantOptions | None:
    """Validate `[homeassistant]`; None when the table is absent."""
    r = config.section("homeassistant")
    if r is None:
        return None
    prefix = r.string("discovery_prefix", "homeassistant")
    if not _PREFIX.match(prefix):
        raise r.error(
            "discovery_prefix",
            f"must be topic levels of A-Z a-z 0-9 _ - joined by '/', got {prefix!r}",
        )
    options = HomeAssistantOptions(
        enabled=r.boolean("enabled", True),
        discovery_prefix=prefix,
        unit=r.choice("unit", UNITS, config.hub.unit),
        expire_after=r.integer("expire_after", 900, minimum=0, maximum=7 * 86400),
    )
    r.finish()
    nodes: dict[str, str] = {}
    for device in config.devices:
        node = node_id(config.hub.id, device.id)
        if node in nodes:
            raise ConfigError(
                config.file,
                f"{device.key}.id",
                f"{device.id!r} and {nodes[node]!r} map to one Home Assistant discovery topic "
                f"({node}); rename one ('.' becomes '_')",
            )
        nodes[node] = device.id
    return options


def node_id(hub: str, device: str) -> str:
    """The discovery node of a device, or of the hub itself for `HUB` (HA allows only
    A-Z a-z 0-9 _ - there)."""
    return (f"gatewayd_{hub}" if device == HUB else f"gatewayd_{hub}_{device}").replace(".", "_")


def config_topic(prefix: str, hub: str, device: str) -> str:
    """The device-based discovery topic of a device (or of the hub: `HUB`)."""
    return f"{prefix}/device/{node_id(hub, device)}/config"


def discovery_payload(
    context: ServiceContext, options: HomeAssistantOptions, device: str, driver: str
) -> dict[str, Any]:
    """The device-based discovery config of one device, or of the hub for `HUB`."""
    if device == HUB:
        return hub_payload(context)
    topics = context.topics
    uid = f"gatewayd_{context.topics.hub}_{device}"
    hub_online = {"topic": topics.hub_status, "payload_available": "online"}
    device_running = {
        "topic": topics.status(device),
        "value_template": (
            "{{ 'offline' if value_json.state in ('parked', 'stopped') else 'online' }}"
        ),
    }
    expiry = {"expire_after": options.expire_after} if options.expire_after else {}
    components: dict[str, dict[str, Any]] = {
        "glucose": {
            "p": "sensor",
            "name": "Glucose",
            "unique_id": f"{uid}_glucose",
            "device_class": "blood_glucose_concentration",
            "unit_of_measurement": options.unit,
            "state_class": "measurement",
            "suggested_display_precision": 0 if options.unit == "mg/dL" else 1,
            "value_template": _glucose_template(options.unit),
            "json_attributes_topic": topics.state(device),
            "json_attributes_template": (
                "{{ {'time': value_json.time, 'out_of_range': value_json.out_of_range, "
                "'backfilled': value_json.backfilled} | tojson }}"
            ),
            **expiry,
        },
        "trend": {
            "p": "sensor",
            "name": "Trend",
            "unique_id": f"{uid}_trend",
            "unit_of_measurement": f"{options.unit}/min",
            "state_class": "measurement",
            "suggested_display_precision": 1 if options.unit == "mg/dL" else 2,
            "icon": "mdi:chart-line-variant",
            "value_template": _trend_template(options.unit),
            **expiry,
        },
        "direction": {
            "p": "sensor",
            "name": "Direction",
            "unique_id": f"{uid}_direction",
            "device_class": "enum",
            "options": list(DIRECTION_NAMES.values()),
            # Discovery has no icon template, so one icon that points nowhere.
            "icon": "mdi:swap-vertical",
            "value_template": _DIRECTION_TEMPLATE,
            "json_attributes_topic": topics.state(device),
            "json_attributes_template": "{{ {'direction': value_json.direction} | tojson }}",
            **expiry,
        },
        "reading_time": {
            "p": "sensor",
            "name": "Last reading",
            "unique_id": f"{uid}_reading_time",
            "device_class": "timestamp",
            "entity_category": "diagnostic",
            "value_template": "{{ value_json.time }}",
        },
        "link": {
            "p": "sensor",
            "name": "Link",
            "unique_id": f"{uid}_link",
            "device_class": "enum",
            "options": [str(s) for s in LinkState],
            "entity_category": "diagnostic",
            "state_topic": topics.status(device),
            "value_template": "{{ value_json.state }}",
            "json_attributes_topic": topics.status(device),
            "json_attributes_template": "{{ {'reason': value_json.reason} | tojson }}",
            "availability": [hub_online],
        },
    }
    if device in _alert_devices(context.config):
        components["alert"] = {
            "p": "binary_sensor",
            "name": "Alert",
            "unique_id": f"{uid}_alert",
            "device_class": "problem",
            "state_topic": topics.device(device, ALERTS_LEAF),
            "value_template": _ACTIVE + "{{ 'ON' if active | length > 0 else 'OFF' }}",
            "json_attributes_topic": topics.device(device, ALERTS_LEAF),
            "json_attributes_template": _ACTIVE + "{{ {'alerts': active} | tojson }}",
        }
    if summary_options.read(context.config).enabled:
        summary = topics.device(device, "summary")
        components |= _summary_components(uid, summary, options.unit, [hub_online])
    identity = context.store.identity(device)
    dev = {"ids": [uid], "name": device, "mf": "gatewayd", "mdl": driver}
    if identity is not None:
        dev |= {"mf": identity.manufacturer, "mdl": identity.model}
        if identity.firmware:
            dev["sw"] = identity.firmware
    dev["via_device"] = node_id(topics.hub, HUB)
    return _config(
        dev,
        components,
        state_topic=topics.state(device),
        availability=[hub_online, device_running],
        availability_mode="all",
    )


def _config(
    dev: dict[str, Any], components: dict[str, dict[str, Any]], **shared: Any
) -> dict[str, Any]:
    """A device-based discovery config: QoS 1 for all, on each component too (Home Assistant
    2025.4 does not pass a device-level `qos` down to the components)."""
    for component in components.values():
        component["qos"] = 1
    return {"dev": dev, "o": _ORIGIN, "cmps": components, **shared, "qos": 1}


def hub_payload(context: ServiceContext) -> dict[str, Any]:
    """The hub as a device of its own: its link to the broker, what waits in its outbox."""
    topics = context.topics
    uid = node_id(topics.hub, HUB)
    hub_online = [{"topic": topics.hub_status, "payload_available": "online"}]
    components: dict[str, dict[str, Any]] = {
        "connectivity": {
            "p": "binary_sensor",
            "name": "Connectivity",
            "unique_id": f"{uid}_connectivity",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            # The hub's birth (`online`) and last will (`offline`): shown off, not unavailable.
            "state_topic": topics.hub_status,
            "payload_on": "online",
            "payload_off": "offline",
        },
        "outbox": {
            "p": "sensor",
            "name": "Readings waiting",
            "unique_id": f"{uid}_outbox",
            "state_topic": topics.hub_outbox,
            "value_template": "{{ value_json.readings_waiting }}",
            "unit_of_measurement": "readings",
            "state_class": "measurement",
            "icon": "mdi:tray-full",
            "entity_category": "diagnostic",
            "availability": hub_online,
        },
        "last_delivery": {
            "p": "sensor",
            "name": "Last delivery",
            "unique_id": f"{uid}_last_delivery",
            "device_class": "timestamp",
            "state_topic": topics.hub_outbox,
            "value_template": "{{ value_json.last_delivery or None }}",
            "entity_category": "diagnostic",
            "availability": hub_online,
        },
    }
    dev = {"ids": [uid], "name": f"gatewayd {topics.hub}", "mf": "gatewayd", "mdl": "CGM hub"}
    return _config(dev | {"sw": __version__}, components)


#: The summary sensors of each window: (key, name, the summary fields it adds up, unit).
SUMMARY_METRICS = (
    ("tir", "Time in range", ("tir_pct",), "%"),
    ("below_70", "Time below {low}", ("tbr1_pct", "tbr2_pct"), "%"),
    ("above_180", "Time above {high}", ("tar1_pct", "tar2_pct"), "%"),
    ("gmi", "GMI", ("gmi_pct",), "%"),
    ("cv", "CV", ("cv_pct",), "%"),
    ("mean", "Mean glucose", ("mean_mgdl",), ""),
)


def _summary_components(
    uid: str, topic: str, unit: str, availability: list[dict[str, str]]
) -> dict[str, dict[str, Any]]:
    """Sensors of the retained `summary`: each metric of each standard window (24h, 14d),
    available with the hub (the store has the summary whatever the device does)."""
    limits = {"low": "70 mg/dL", "high": "180 mg/dL"}
    if unit == "mmol/L":
        limits = {"low": "3.9 mmol/L", "high": "10.0 mmol/L"}
    components = {}
    for label, _ in STANDARD_WINDOWS:
        pick = f"{{% set w = value_json.windows | selectattr('window', 'eq', '{label}') | first %}}"
        for key, name, fields, metric_unit in SUMMARY_METRICS:
            total = " + ".join(f"w.{f}" for f in fields)
            value = f"({total})"
            if key == "mean" and unit == "mmol/L":
                value = f"({total} / {MGDL_PER_MMOLL})"
            present = " and ".join(f"w.{f} is not none" for f in fields)
            component: dict[str, Any] = {
                "p": "sensor",
                "name": f"{name.format(**limits)} ({label})",
                "unique_id": f"{uid}_{key}_{label}",
                "state_topic": topic,
                "value_template": (
                    f"{pick}{{% if w and {present} %}}{{{{ {value} | round(2) }}}}"
                    "{% else %}None{% endif %}"
                ),
                "unit_of_measurement": metric_unit or unit,
                "state_class": "measurement",
                "suggested_display_precision": 1,
                "availability": availability,
            }
            if key == "mean":
                component["device_class"] = "blood_glucose_concentration"
                component["suggested_display_precision"] = 0 if unit == "mg/dL" else 1
            components[f"{key}_{label}"] = component
    return components


def _glucose_template(unit: str) -> str:
    field = "glucose_mgdl" if unit == "mg/dL" else "glucose_mmoll"
    low, high = _OUT_OF_RANGE[unit]
    return (
        f"{{% if value_json.{field} is not none %}}{{{{ value_json.{field} }}}}"
        f"{{% elif value_json.out_of_range == 'low' %}}{low}"
        f"{{% elif value_json.out_of_range == 'high' %}}{high}"
        "{% else %}None{% endif %}"
    )


def _trend_template(unit: str) -> str:
    if unit == "mg/dL":
        return "{{ value_json.trend_mgdl_min }}"
    return (
        "{% if value_json.trend_mgdl_min is not none %}"
        f"{{{{ (value_json.trend_mgdl_min / {MGDL_PER_MMOLL}) | round(2) }}}}"
        "{% else %}None{% endif %}"
    )


def _alert_devices(config: Config) -> frozenset[str]:
    """The devices that have alerts (`[alerts]` for all, or their own `[devices.alerts]`)."""
    options = alert_settings.parse(config)
    return frozenset(options.devices) if options is not None else frozenset()


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class HomeAssistant:
    """Announces (and retracts) the hub's devices to Home Assistant."""

    def __init__(self, options: HomeAssistantOptions, context: ServiceContext) -> None:
        self.options = options
        self.context = context
        self.log = structlog.get_logger().bind(component="homeassistant")
        drivers = {d.id: d.driver for d in context.config.devices}
        self.devices = (
            {device: drivers.get(device, "unknown") for device in context.devices}
            if options.enabled
            else {}
        )
        if self.devices:  # the hub too, first: the parent (`via_device`) of its devices
            self.devices = {HUB: "hub", **self.devices}
        #: Set once the configs (and removals) of this start are queued.
        self.synced = asyncio.Event()
        #: `online` messages received since the last re-announcement.
        self.onlines = 0
        #: Re-announcements made since start (one per burst of `online`).
        self.announcements = 0
        self._online = asyncio.Event()
        context.store.ensure_schema(_DDL)
        if options.enabled:
            context.publisher.subscribe(f"{options.discovery_prefix}/status", self._on_ha_status)

    async def run(self) -> None:
        """Retract what is no longer configured, announce the rest, then re-announce once per
        burst of `online` from Home Assistant, until cancelled."""
        retracted = self.sync()
        self.synced.set()
        self.log.info("homeassistant_announced", devices=len(self.devices), removed=retracted)
        while True:
            await self._online.wait()
            await self._end_of_burst()
            self.log.info("homeassistant_online", devices=len(self.devices), messages=self.onlines)
            self.onlines = 0
            self.announce()

    async def _end_of_burst(self) -> None:
        """Return once `_QUIET_S` passed without an `online`, or `_MAX_WAIT_S` after the first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _MAX_WAIT_S
        while (left := deadline - loop.time()) > 0:
            self._online.clear()
            try:
                async with asyncio.timeout(min(_QUIET_S, left)):
                    await self._online.wait()
            except TimeoutError:
                return
        self._online.clear()

    def on_reading(self, reading: Reading) -> None:
        """Nothing to do: entities read the retained `state` topic."""

    def on_identity(self, device: str) -> None:
        """A device reported a new model or firmware: announce it again with them."""
        if device in self.devices:
            prefix, hub = self.options.discovery_prefix, self.context.topics.hub
            with self.context.store.transaction() as db:
                self._queue(db, device, config_topic(prefix, hub, device))
            self.context.publisher.notify()

    def sync(self) -> list[str]:
        """Queue the configs of configured devices and empty ones for the rest; the removed."""
        prefix = self.options.discovery_prefix
        hub = self.context.topics.hub
        known = dict(self.context.store.query("SELECT device, topic FROM homeassistant_announced"))
        removed = sorted(set(known) - set(self.devices))
        with self.context.store.transaction() as db:
            for device in removed:
                self.context.store.add_message(known[device], b"", retain=True, db=db)
                db.execute("DELETE FROM homeassistant_announced WHERE device = ?", (device,))
            for device in self.devices:
                topic = config_topic(prefix, hub, device)
                if known.get(device, topic) != topic:  # the prefix changed: clear the old one
                    self.context.store.add_message(known[device], b"", retain=True, db=db)
                self._queue(db, device, topic)
                db.execute(
                    "INSERT OR REPLACE INTO homeassistant_announced (device, topic) VALUES (?, ?)",
                    (device, topic),
                )
        self.context.publisher.notify()
        return removed

    def announce(self) -> None:
        """Queue every configured device's config again (Home Assistant came online)."""
        self.announcements += 1
        prefix, hub = self.options.discovery_prefix, self.context.topics.hub
        with self.context.store.transaction() as db:
            for device in self.devices:
                self._queue(db, device, config_topic(prefix, hub, device))
        self.context.publisher.notify()

    def _queue(self, db: sqlite3.Connection, device: str, topic: str) -> None:
        """Queue a device's config, unless the same one already waits in the outbox."""
        payload = discovery_payload(self.context, self.options, device, self.devices[device])
        self.context.store.replace_retained(topic, _json(payload), db=db)

    def _on_ha_status(self, topic: str, payload: bytes) -> None:
        if payload.strip() == b"online":
            self.onlines += 1
            self._online.set()  # `run` re-announces once the burst is over


def create(options: HomeAssistantOptions, context: ServiceContext) -> HomeAssistant:
    """Build the service (subscribes to Home Assistant's status before the publisher runs)."""
    service = HomeAssistant(options, context)
    context.identity_listeners.append(service.on_identity)
    return service


SPEC: ServiceSpec[HomeAssistantOptions] = ServiceSpec("homeassistant", parse, create)
