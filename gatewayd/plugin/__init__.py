"""The driver author's API: everything a driver package imports from gatewayd, in one place.

A driver family is a package that registers one `DriverPlugin` in the entry-point group
``gatewayd.drivers``::

    [project.entry-points."gatewayd.drivers"]
    mycgm = "mycgm_driver:plugin"

and imports from gatewayd only this module and its two companions (an import rule in
``pyproject.toml`` holds the built-in drivers to it):

* `gatewayd.plugin` (this module) — the contract and what a session is given and returns:

  - the plugin and its session: `DriverPlugin`, `DriverSession`, `DeviceContext`,
    `ResumePoint`, `DeviceFindings`, `DeviceMatch` (how `gatewayd scan` recognises a device),
    `Emulator` (the driver's emulated device for `gatewayd simulate`), `Transport`, `TimeBase`;
  - what a session yields: `Reading`, `DeviceIdentity`, `Direction`, `OutOfRange`;
  - what a driver raises: `DeviceError` and its kinds `LinkLost`, `DeviceNotFound`,
    `DeviceRefused` (parks the device), `AttError`; `ConfigError` (from `OptionReader.error`)
    and `UsageError` (an emulator's bad ``--set``), all under `GatewayError`;
  - options: `OptionReader` (a ``[[devices]]`` table, or an emulator's ``--set`` values);
  - the BLE link, stack-agnostic (BlueZ or Bumble, `[ble]`): `BleConfig`, `GattLink` (bounded
    GATT operations, the bond policy, the notification queue), `gatt_text`, `Bond`, `BONDS`,
    `read_bond` (the ``bond`` option), `ble_error` (bleak's errors as the daemon's),
    `CollectorLoop` / `Collector` (a sans-I/O GATT collector run on a link). These import bleak,
    so they are loaded on first use: a serial or virtual driver does not pay for them;
  - emulator runners: `SimulateContext` (what ``gatewayd simulate --device NAME`` gives one).

* `gatewayd.plugin.emulation` — the virtual BLE radios an emulator serves its device on (Bumble,
  the optional ``bumble`` extra): `in_process_link`, `serve_sibling_link`, `add_peripheral`,
  `refuse_pairing`, `bumble_session`, `BumbleHost`. For emulators and tests only.

* `gatewayd.plugin.kit` — the driver test kit: the contract checks that run the real supervisor
  and store against the driver's emulator. For tests only (it loads the daemon's core).

Everything here keeps its meaning across releases; the exact list is pinned by a test, so any
change to it is deliberate.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gatewayd.cancellation import honour_cancellation
from gatewayd.driver import (
    DeviceContext,
    DeviceFindings,
    DeviceMatch,
    DriverPlugin,
    DriverSession,
    Emulator,
    ResumePoint,
    TimeBase,
    Transport,
)
from gatewayd.emulators import SimulateContext
from gatewayd.errors import (
    AttError,
    ConfigError,
    DeviceError,
    DeviceNotFound,
    DeviceRefused,
    GatewayError,
    LinkLost,
    UsageError,
)
from gatewayd.models import DeviceIdentity, Direction, OutOfRange, Reading
from gatewayd.options import OptionReader

if TYPE_CHECKING:
    from gatewayd.transport.ble import BleConfig
    from gatewayd.transport.ble_errors import BONDS, Bond, ble_error
    from gatewayd.transport.collector import Collector, CollectorLoop
    from gatewayd.transport.gatt import GattLink, gatt_text, read_bond

__all__ = [
    "BONDS",
    "AttError",
    "BleConfig",
    "Bond",
    "Collector",
    "CollectorLoop",
    "ConfigError",
    "DeviceContext",
    "DeviceError",
    "DeviceFindings",
    "DeviceIdentity",
    "DeviceMatch",
    "DeviceNotFound",
    "DeviceRefused",
    "Direction",
    "DriverPlugin",
    "DriverSession",
    "Emulator",
    "GatewayError",
    "GattLink",
    "LinkLost",
    "OptionReader",
    "OutOfRange",
    "Reading",
    "ResumePoint",
    "SimulateContext",
    "TimeBase",
    "Transport",
    "UsageError",
    "ble_error",
    "gatt_text",
    "honour_cancellation",
    "read_bond",
]

#: The BLE names, imported on first use (they import bleak): name -> defining module.
_LAZY = {
    "BONDS": "gatewayd.transport.ble_errors",
    "BleConfig": "gatewayd.transport.ble",
    "Bond": "gatewayd.transport.ble_errors",
    "Collector": "gatewayd.transport.collector",
    "CollectorLoop": "gatewayd.transport.collector",
    "GattLink": "gatewayd.transport.gatt",
    "ble_error": "gatewayd.transport.ble_errors",
    "gatt_text": "gatewayd.transport.gatt",
    "read_bond": "gatewayd.transport.gatt",
}


def __getattr__(name: str) -> Any:
    """A BLE name of `__all__`, imported from its module the first time it is asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
