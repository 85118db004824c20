"""Optional services beside the data path: alerts, summaries, Home Assistant, sinks, metrics.

A service is declared by a `ServiceSpec`: `parse(config)` validates its config tables at start
(returning None when the service is not configured) and `create(options, context)` builds it
once the store and publisher exist. The daemon runs every created service's `run()` in its task
group and calls `on_reading` for every newly stored reading. Add a service by appending its
module's name to `_MODULES` below: it must define `SPEC: ServiceSpec[...]`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from gatewayd.models import Reading
from gatewayd.mqtt.publisher import Publisher
from gatewayd.mqtt.topics import Topics
from gatewayd.ops.config import Config
from gatewayd.store import Store
from gatewayd.supervisor import Device

OptionsT = TypeVar("OptionsT")


class Service(Protocol):
    """A running service."""

    async def run(self) -> None:
        """Work until cancelled (return early if there is nothing periodic to do)."""
        ...

    def on_reading(self, reading: Reading) -> None:
        """A new reading was stored (not called for duplicates); must be quick."""
        ...


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """What a service is given: the daemon's store, publisher and configuration."""

    config: Config
    store: Store
    publisher: Publisher
    topics: Topics
    #: Ids of the enabled devices, in config order.
    devices: tuple[str, ...]
    #: The device loops with their live counters and status (read-only; used by metrics).
    device_loops: tuple[Device, ...] = ()
    #: Called with a device id when it reports a new identity, already in the store
    #: (`Store.identity`); a service that shows it appends itself. Must not block.
    identity_listeners: list[Callable[[str], None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ServiceSpec(Generic[OptionsT]):
    """How to validate and build one service."""

    name: str
    parse: Callable[[Config], OptionsT | None]
    create: Callable[[OptionsT, ServiceContext], Service]


#: Modules defining a `SPEC`, in start order.
_MODULES: tuple[str, ...] = (
    "gatewayd.integrations.alerts",
    "gatewayd.integrations.summaries",
    "gatewayd.integrations.homeassistant",
    "gatewayd.integrations.homeassistant_hub",
    "gatewayd.integrations.nightscout",
    "gatewayd.integrations.prometheus",
)


def specs() -> list[ServiceSpec[Any]]:
    """Every known service (imported on first use: `gatewayd drivers` needs none of them)."""
    found: list[ServiceSpec[Any]] = []
    for name in _MODULES:
        spec = importlib.import_module(name).SPEC
        if not isinstance(spec, ServiceSpec):
            raise TypeError(f"{name}.SPEC is not a ServiceSpec")
        found.append(spec)
    return found


def parse_all(config: Config) -> list[tuple[ServiceSpec[Any], Any]]:
    """Validate every service's config (fails at start); the configured ones with options."""
    return [(spec, options) for spec in specs() if (options := spec.parse(config)) is not None]
