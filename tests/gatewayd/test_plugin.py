"""The driver author's API (`gatewayd.plugin`): its exact public surface, pinned.

A change to any of these lists changes what third-party drivers may rely on: make it here,
deliberately, together with docs/drivers.md.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import drivers
import gatewayd

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = [
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
    "GattLink",
    "GatewayError",
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
EMULATION = [
    "BumbleHost",
    "InProcessLink",
    "SiblingLink",
    "add_peripheral",
    "bumble_session",
    "in_process_link",
    "refuse_pairing",
    "serve_sibling_link",
]
KIT = [
    "BOND_CHECKS",
    "CHECKS",
    "CLOCK_FAULTS",
    "CLOCK_TOLERANCE",
    "FAULT_CHECKS",
    "IN_FLIGHT_REPORTS",
    "LARGE_BACKFILL",
    "DriverKit",
    "FaultUnsupportedError",
    "Key",
    "KitGateway",
    "Target",
    "assert_contract",
    "check_backfill_after_link_drop",
    "check_clean_shutdown",
    "check_corrupt_packet_survived",
    "check_device_clock_ahead_1h",
    "check_device_clock_at_epoch",
    "check_device_clock_behind_7_months",
    "check_duplicated_and_out_of_order",
    "check_large_backfill",
    "check_link_drop_mid_report",
    "check_memory_reset",
    "check_name",
    "check_readings_arrive",
    "check_record_in_flight_before_reports",
    "check_records_damaged_in_memory",
    "check_refused_bond_parks",
    "run_gateway",
]


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("gatewayd.plugin", PLUGIN),
        ("gatewayd.plugin.emulation", EMULATION),
        ("gatewayd.plugin.kit", KIT),
    ],
)
def test_the_public_surface_is_exactly_this(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    assert sorted(imported.__all__) == sorted(names)
    for name in names:
        assert getattr(imported, name) is not None, name


def test_every_name_is_the_definition_itself() -> None:
    """Re-exports, not copies: `isinstance` and `except` see one class per name."""
    from gatewayd import driver, errors, plugin
    from gatewayd.transport import gatt

    assert plugin.DriverPlugin is driver.DriverPlugin
    assert plugin.LinkLost is errors.LinkLost
    assert plugin.GattLink is gatt.GattLink


def test_an_unknown_name_is_an_attribute_error() -> None:
    from gatewayd import plugin

    with pytest.raises(AttributeError, match="no attribute 'Store'"):
        _ = plugin.Store


def _loaded_by(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout))


def test_a_driver_importing_the_plugin_api_loads_no_daemon_no_kit_no_radio() -> None:
    loaded = _loaded_by("from gatewayd.plugin import DriverPlugin, OptionReader, Reading")
    for heavy in (
        "bleak",
        "bumble",
        "gatewayd.plugin.kit",
        "gatewayd.plugin.emulation",
        "gatewayd.supervisor",
        "gatewayd.store",
        "gatewayd.mqtt.publisher",
        "aiomqtt",
    ):
        assert heavy not in loaded, heavy


def test_the_ble_names_load_the_ble_transport_on_first_use() -> None:
    loaded = _loaded_by("from gatewayd.plugin import GattLink")
    assert {"bleak", "gatewayd.transport.gatt"} <= loaded
    assert "bumble" not in loaded


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _contract(name_start: str) -> dict[str, object]:
    return next(c for c in _contracts() if str(c["name"]).startswith(name_start))


def test_the_import_rule_forbids_drivers_every_other_gatewayd_module() -> None:
    contract = _contract("drivers import from gatewayd only the plugin API")
    others = {
        f"gatewayd.{info.name}"
        for info in pkgutil.iter_modules(gatewayd.__path__)
        if info.name not in ("plugin", "__main__")
    }
    assert contract["source_modules"] == ["drivers"]
    assert set(contract["forbidden_modules"]) == others  # type: ignore[arg-type]


def test_the_independence_rule_names_every_driver_family() -> None:
    contract = _contract("a driver family does not import another family's package")
    families = {
        f"drivers.{info.name}"
        for info in pkgutil.iter_modules(drivers.__path__)
        if info.ispkg and info.name != "emulation"
    }
    assert set(contract["modules"]) == families  # type: ignore[arg-type]
