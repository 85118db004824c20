"""Driver plugins, found through the entry-point group ``gatewayd.drivers``.

Only drivers named in the config are imported, so a broken third-party driver that nobody
configured cannot stop the daemon; one that is configured fails at start with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from gatewayd.driver import DriverPlugin
from gatewayd.errors import PluginError

GROUP = "gatewayd.drivers"


@dataclass(frozen=True, slots=True)
class InstalledDriver:
    """An installed driver entry point, not yet imported."""

    name: str
    target: str
    distribution: str | None


def installed() -> list[InstalledDriver]:
    """Every installed driver entry point, by name."""
    found = [
        InstalledDriver(ep.name, ep.value, ep.dist.name if ep.dist is not None else None)
        for ep in entry_points(group=GROUP)
    ]
    return sorted(found, key=lambda d: d.name)


def load(name: str) -> DriverPlugin[Any]:
    """Import and check the plugin registered as `name`."""
    matches: list[EntryPoint] = list(entry_points(group=GROUP, name=name))
    if not matches:
        names = ", ".join(d.name for d in installed()) or "none"
        raise PluginError(f"driver {name!r} is not installed (installed drivers: {names})")
    if len(matches) > 1:
        owners = ", ".join(ep.value for ep in matches)
        raise PluginError(f"driver {name!r} is registered more than once: {owners}")
    entry = matches[0]
    try:
        plugin = entry.load()
    except Exception as exc:
        raise PluginError(
            f"driver {name!r} ({entry.value}) failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(plugin, DriverPlugin):
        raise PluginError(
            f"driver {name!r} ({entry.value}) is a {type(plugin).__name__}, not a DriverPlugin"
        )
    if plugin.name != name:
        raise PluginError(f"driver {name!r} ({entry.value}) calls itself {plugin.name!r}")
    return plugin
