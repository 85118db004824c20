"""The configuration file: TOML in, typed frozen objects out, or one clear error.

Every key is documented in the README's config reference. Unknown keys, wrong types and bad
values fail at start with a one-line `ConfigError` naming the file, the dotted key and the reason.
Driver options are validated by each driver's plugin (see `gatewayd.registry`).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gatewayd.driver import options_table
from gatewayd.errors import ConfigError
from gatewayd.models import UNITS
from gatewayd.ops import credentials
from gatewayd.ops.privacy import PRIVACY_LEVELS
from gatewayd.options import OptionReader

#: Ids appear in MQTT topics: keep them to characters every broker and shell treat literally.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_TOPIC_ROOT = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*\Z")


#: The glucose units a person may choose to see (`[hub] unit`).


@dataclass(frozen=True, slots=True)
class HubConfig:
    """`[hub]`: the hub's own identity (used in topics; choose one that names no person)."""

    id: str
    #: How glucose is shown to people (reports, Home Assistant); stored and published values
    #: carry both units whatever this says.
    unit: str = "mg/dL"
    #: `gatewayd run` keeps its threads on one CPU (gatewayd.ops.cpu).
    one_cpu: bool = True


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """`[store]`: the local SQLite store every reading lands in before anything else."""

    path: Path
    retention_days: float = 90.0
    #: SQLite `synchronous` level; FULL survives power loss, NORMAL survives process crashes.
    synchronous: str = "full"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """One broker (node) of `[mqtt] url`."""

    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        """The broker URL (never with credentials: safe to log)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


#: Default `[mqtt] backoff_max`: a broker back from an outage is used again within this (7.5 s
#: on average at the cap, jittered over [7.5, 15] s so a fleet does not reconnect in lock-step).
MQTT_BACKOFF_MAX = 15.0


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """`[mqtt]`: the broker link. `host`, `port`, `tls` are the first URL of `[mqtt] url`;
    `alternates` the further ones (nodes of a cluster), tried in turn on every reconnect."""

    host: str = "localhost"
    port: int = 1883
    tls: bool = False
    alternates: tuple[BrokerAddress, ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_root: str = "gatewayd"
    client_id: str | None = None
    protocol: str = "5"
    keepalive: int = 60
    inflight: int = 32
    include_serial: bool = False
    #: Seconds between two retained `state` publishes of one device (0: after every drain).
    state_interval: float = 1.0
    #: Seconds between connection attempts: doubling from min to max, jittered (gatewayd.backoff).
    backoff_min: float = 1.0
    backoff_max: float = MQTT_BACKOFF_MAX

    @property
    def brokers(self) -> tuple[BrokerAddress, ...]:
        """Every configured broker, in the order they are tried."""
        return (BrokerAddress(self.host, self.port, self.tls), *self.alternates)

    def node(self, index: int) -> MqttConfig:
        """This config with `brokers[index]` as its only broker (doctor checks each one)."""
        broker = self.brokers[index]
        return replace(self, host=broker.host, port=broker.port, tls=broker.tls, alternates=())

    @property
    def url(self) -> str:
        """The (first) broker URL without credentials (safe to log)."""
        return self.brokers[0].url

    @property
    def urls(self) -> str:
        """Every broker URL, comma-separated (safe to log)."""
        return ", ".join(b.url for b in self.brokers)


@dataclass(frozen=True, slots=True)
class LogConfig:
    """`[log]`: level and format (auto = JSON when stdout is not a terminal), and privacy:
    "strict" also redacts serials, glucose values and raw device bytes (gatewayd.ops.privacy)."""

    level: str = "info"
    format: str = "auto"
    privacy: str = "normal"


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """`[supervisor]`: reconnect pacing for every device."""

    backoff_min: float = 1.0
    backoff_max: float = 300.0


#: Top-level tables that belong to optional services (alerts, Home Assistant, ...). They are
#: kept raw here and validated at start by each service's own parser (gatewayd.services).
SERVICE_TABLES = ("alerts", "ble", "homeassistant", "metrics", "nightscout", "summaries")
#: Sub-tables of a `[[devices]]` table read by services rather than by the driver.
DEVICE_SERVICE_KEYS = ("alerts",)


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One `[[devices]]` table: the daemon's keys plus the driver's own, validated later."""

    driver: str
    id: str
    enabled: bool
    options: Mapping[str, Any]
    #: Where the table lives, for driver option errors: `devices[0]`.
    key: str
    #: Per-device service tables (e.g. `[devices.alerts]`), validated by the services.
    services: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    file: Path | None
    hub: HubConfig
    store: StoreConfig
    mqtt: MqttConfig
    log: LogConfig
    supervisor: SupervisorConfig
    devices: tuple[DeviceConfig, ...]
    #: The raw service tables present in the file (see SERVICE_TABLES).
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def reader(self, device: DeviceConfig) -> OptionReader:
        """An `OptionReader` over a device's driver options, for the driver's plugin."""
        return OptionReader(device.options, self.file, device.key)

    def section(self, name: str) -> OptionReader | None:
        """A reader over the service table `[name]`, or None when the file has none."""
        table = self.sections.get(name)
        return None if table is None else OptionReader(table, self.file, name)

    def device_section(self, device: DeviceConfig, name: str) -> OptionReader | None:
        """A reader over a device's service sub-table (`[devices.alerts]`), or None."""
        table = device.services.get(name)
        return None if table is None else OptionReader(table, self.file, f"{device.key}.{name}")


def load(path: Path | str) -> Config:
    """Read and validate a config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    config = parse(data, path)
    if config.mqtt.password is not None and "password" in data["mqtt"]:  # a secret inline
        credentials.refuse_if_world_readable(
            path.stat().st_mode, path, "mqtt.password", path, "the broker password"
        )
    return config


def parse(data: Mapping[str, Any], file: Path | None = None) -> Config:
    """Validate a parsed TOML document (also used for the demo's built-in config)."""
    base = file.parent if file is not None else Path.cwd()
    top = OptionReader(data, file, "")
    hub = _hub(top.table("hub", required=True))
    supervisor = _supervisor(top.table("supervisor"))
    config = Config(
        file=file,
        hub=hub,
        store=_store(top.table("store"), base),
        mqtt=_mqtt(top.table("mqtt"), base, hub.id, supervisor),
        log=_log(top.table("log")),
        supervisor=supervisor,
        devices=_devices(top, file),
        sections={name: top.table(name).table_value() for name in SERVICE_TABLES if top.has(name)},
    )
    top.finish()
    return config


def _identifier(r: OptionReader, name: str, default: str | None = None) -> str:
    value = r.string(name) if default is None else r.string(name, default)
    if not _ID.match(value):
        raise r.error(
            name, f"must be 1-64 of A-Z a-z 0-9 _ . - (used in MQTT topics), got {value!r}"
        )
    return value


def _hub(r: OptionReader) -> HubConfig:
    hub = HubConfig(
        id=_identifier(r, "id"),
        unit=r.choice("unit", UNITS, "mg/dL"),
        one_cpu=r.boolean("one_cpu", True),
    )
    r.finish()
    return hub


def _store(r: OptionReader, base: Path) -> StoreConfig:
    state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    default = Path(state_dir) / "gatewayd.db" if state_dir else base / "gatewayd.db"
    store = StoreConfig(
        path=r.path("path", default, base=base),
        retention_days=r.number("retention_days", 90.0, minimum=0, exclusive_minimum=True),
        synchronous=r.choice("synchronous", ("full", "normal"), "full"),
    )
    r.finish()
    return store


def _mqtt(r: OptionReader, base: Path, hub_id: str, supervisor: SupervisorConfig) -> MqttConfig:
    first, *alternates = _broker_urls(r)
    tls = first.tls
    password = r.optional_string("password")
    password_file = r.optional_path("password_file", base=base)
    if password is not None and password_file is not None:
        raise r.error("password_file", "set either password or password_file, not both")
    credential = r.optional_string("password_credential")  # systemd LoadCredential=
    if credential is not None and (password is not None or password_file is not None):
        raise r.error(
            "password_credential", "set one of password, password_file, password_credential"
        )
    username = r.optional_string("username")
    if any(v is not None for v in (password, password_file, credential)) and username is None:
        raise r.error("username", "is required when a password is set")
    if password_file is not None:
        password = _read_secret(r, "password_file", password_file)
    if credential is not None:
        password = credentials.read_credential(r, "password_credential", credential)
    ca_file = _existing(r, "ca_file", base)
    cert_file = _existing(r, "cert_file", base)
    key_file = _existing(r, "key_file", base)
    if key_file is not None and cert_file is None:
        raise r.error("key_file", "needs cert_file (the client certificate) as well")
    if (ca_file or cert_file) and not tls:
        raise r.error("url", "ca_file/cert_file are set but the url is not mqtts://")
    if key_file is not None:
        credentials.check_private_file(r, "key_file", key_file, what="a private key")
    root = r.string("topic_root", "gatewayd")
    if not _TOPIC_ROOT.match(root):
        raise r.error(
            "topic_root", f"must be topic levels of A-Z a-z 0-9 _ . - joined by '/', got {root!r}"
        )
    # The minimum follows [supervisor] unless set: one knob paces every reconnect on the hub.
    low = r.number("backoff_min", supervisor.backoff_min, minimum=0, exclusive_minimum=True)
    high = r.number("backoff_max", max(MQTT_BACKOFF_MAX, low), minimum=0, exclusive_minimum=True)
    if high < low:
        raise r.error("backoff_max", f"must be >= backoff_min ({low}), got {high}")
    mqtt = MqttConfig(
        host=first.host,
        port=first.port,
        tls=tls,
        alternates=tuple(alternates),
        username=username,
        password=password,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        topic_root=root,
        client_id=r.string("client_id", f"gatewayd-{hub_id}"),
        protocol=r.choice("protocol", ("5", "3.1.1"), "5"),
        keepalive=r.integer("keepalive", 60, minimum=5, maximum=3600),
        inflight=r.integer("inflight", 32, minimum=1, maximum=1000),
        include_serial=r.boolean("include_serial", False),
        state_interval=r.number("state_interval", 1.0, minimum=0),
        backoff_min=low,
        backoff_max=high,
    )
    r.finish()
    return mqtt


def _broker_urls(r: OptionReader) -> list[BrokerAddress]:
    """`url`: one URL, or a list of them (the nodes of a cluster), all mqtt:// or all mqtts://."""
    value = r.raw("url", "mqtt://localhost:1883")
    urls = value if isinstance(value, list) else [value]
    if not urls:
        raise r.error("url", "must name at least one broker URL")
    brokers: list[BrokerAddress] = []
    for url in urls:
        if not isinstance(url, str):
            raise r.error("url", f"must be a string or a list of strings, got {value!r}")
        if not url:
            raise r.error("url", "must not be empty")
        broker = _broker_url(r, url)
        if broker in brokers:
            raise r.error("url", f"lists {broker.url} twice")
        brokers.append(broker)
    if len({b.tls for b in brokers}) > 1:
        raise r.error("url", "must be all mqtt:// or all mqtts:// (one TLS setting for all)")
    return brokers


def _broker_url(r: OptionReader, url: str) -> BrokerAddress:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise r.error("url", f"not a valid URL: {exc}") from None
    if parts.scheme not in {"mqtt", "mqtts"}:
        raise r.error("url", f"must start with mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise r.error("url", f"has no host, got {url!r}")
    if parts.username or parts.password:
        raise r.error("url", "must not carry credentials; use username and password_file")
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        raise r.error("url", f"must be mqtt[s]://host[:port] only, got {url!r}")
    if port == 0:
        raise r.error("url", f"port must be 1-65535, got {url!r}")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, port if port is not None else (8883 if tls else 1883), tls)


def _existing(r: OptionReader, name: str, base: Path) -> Path | None:
    path = r.optional_path(name, base=base)
    if path is not None and not path.is_file():
        raise r.error(name, f"no such file: {path}")
    return path


def _read_secret(r: OptionReader, name: str, path: Path) -> str:
    """A secret file's text; refused when missing, empty or readable by every user."""
    return credentials.read_secret(r, name, path, what="the broker password")


def _log(r: OptionReader) -> LogConfig:
    log = LogConfig(
        level=r.choice("level", ("debug", "info", "warning", "error"), "info"),
        format=r.choice("format", ("auto", "json", "console"), "auto"),
        privacy=r.choice("privacy", PRIVACY_LEVELS, "normal"),
    )
    r.finish()
    return log


def _supervisor(r: OptionReader) -> SupervisorConfig:
    low = r.number("backoff_min", 1.0, minimum=0, exclusive_minimum=True)
    high = r.number("backoff_max", 300.0, minimum=0, exclusive_minimum=True)
    if high < low:
        raise r.error("backoff_max", f"must be >= backoff_min ({low}), got {high}")
    r.finish()
    return SupervisorConfig(backoff_min=low, backoff_max=high)


def _devices(top: OptionReader, file: Path | None) -> tuple[DeviceConfig, ...]:
    tables = top.raw("devices", [])
    if not isinstance(tables, list):
        raise top.error("devices", "must be an array of tables ([[devices]])")
    devices: list[DeviceConfig] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        key = f"devices[{index}]"
        if not isinstance(table, Mapping):
            raise ConfigError(file, key, "must be a table ([[devices]])")
        r = OptionReader(table, file, key)
        driver = r.string("driver")
        device_id = _identifier(r, "id")
        if device_id in seen:
            raise r.error("id", f"duplicate device id {device_id!r}")
        seen.add(device_id)
        services = {
            name: r.table(name).table_value() for name in DEVICE_SERVICE_KEYS if r.has(name)
        }
        devices.append(
            DeviceConfig(
                driver=driver,
                id=device_id,
                enabled=r.boolean("enabled", True),
                options=options_table(table, exclude=DEVICE_SERVICE_KEYS),
                key=key,
                services=services,
            )
        )
    return tuple(devices)
