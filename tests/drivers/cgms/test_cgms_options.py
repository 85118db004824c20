"""The CGMS plugin as the daemon sees it: registration, help, options, emulator options, CLI."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from drivers.cgms import CgmsOptions, plugin
from drivers.cgms.emulator import parse_emulator_options
from drivers.cgms.options import expected_interval, parse_options
from gatewayd.errors import ConfigError
from gatewayd.options import OptionReader
from gatewayd.registry import load
from protocols.cgms.measurement import StatusOctetOrder
from protocols.cgms.state import SensorStatus
from protocols.cgms.uuids import CGMS_SERVICE


def parse(table: dict[str, Any]) -> CgmsOptions:
    reader = OptionReader(table, "config.toml", "devices[0]")
    options = parse_options(reader)
    reader.finish()
    return options


def test_the_plugin_is_registered_and_documented() -> None:
    assert load("cgms") is plugin
    assert plugin.transport == "ble"
    assert plugin.match.ble_service_uuids == (CGMS_SERVICE,)
    assert plugin.summary.startswith("Bluetooth CGM sensors")
    for word in ("SmartGuide", "address", "status_octet_order", "start_session", "bond"):
        assert word in plugin.help


def test_defaults() -> None:
    options = parse({})
    assert options == CgmsOptions()
    assert options.interval is None
    assert options.status_octet_order is StatusOctetOrder.SIG
    assert options.bond == "auto"
    assert expected_interval(options) == 300.0


def test_every_option() -> None:
    options = parse(
        {
            "address": "c0:26:da:01:02:03",
            "name": "SmartGuide",
            "interval": 1,
            "status_octet_order": "nordic",
            "start_session": True,
            "scan_timeout": 5,
            "bond": "never",
        }
    )
    assert options == CgmsOptions(
        address="C0:26:DA:01:02:03",
        name="SmartGuide",
        interval=1,
        status_octet_order=StatusOctetOrder.NORDIC,
        start_session=True,
        scan_timeout=5.0,
        bond="never",
    )
    assert expected_interval(options) == 60.0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("address", "C0:26:DA", "Bluetooth address"),
        ("interval", 0, ">= 1"),
        ("interval", 255, "<= 254"),
        ("status_octet_order", "msb", "sig, nordic"),
        ("bond", "sometimes", "auto, always, never"),
        ("scan_timeout", 0, "> 0"),
        ("start_session", "yes", "true or false"),
        ("colour", "red", "unknown key"),
    ],
)
def test_bad_options_fail_with_file_and_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        parse({key: value})
    assert str(error.value).startswith(f"config.toml: devices[0].{key}: ")


def test_emulator_options() -> None:
    reader = OptionReader(
        {"interval": 1, "e2e_crc": False, "annunciation": ["device_battery_low"], "away": 0.5},
        "--set",
        "",
    )
    options = parse_emulator_options(reader)
    assert options.sensor.interval == 1
    assert not options.sensor.e2e_crc
    assert options.sensor.annunciation == SensorStatus.DEVICE_BATTERY_LOW
    assert options.away == 0.5
    assert not options.sensor.refuse_bonding
    refusing = parse_emulator_options(
        OptionReader({"bonding": True, "refuse_bonding": True}, "--set", "")
    )
    assert (refusing.sensor.bonding, refusing.sensor.refuse_bonding) == (True, True)
    with pytest.raises(ConfigError, match="status names"):
        parse_emulator_options(OptionReader({"annunciation": ["bad"]}, "--set", ""))
    faults = {
        "damaged": ["start", 300],
        "clock_skew": -3600,
        "clock_epoch": True,
        "disorder": 2,
        "drop_in_report": 40,
        "in_flight": 3,
    }
    options = parse_emulator_options(OptionReader(faults, "--set", ""))
    assert options.sensor.damaged == ("start", 300)
    assert (options.sensor.clock_skew, options.sensor.clock_epoch) == (-3600, True)
    assert (options.disorder, options.drop_in_report, options.in_flight) == (2, 40, 3)
    assert parse_emulator_options(OptionReader({}, "--set", "")).drop_in_report is None
    with pytest.raises(ConfigError, match="damaged: must be a list"):
        parse_emulator_options(OptionReader({"damaged": ["top"]}, "--set", ""))
    with pytest.raises(ConfigError, match="replay: must be <= 10"):
        parse_emulator_options(OptionReader({"age": 10, "replay": 20}, "--set", ""))


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hci", "usb:0"], "tcp-server:HOST:PORT"),
        (["--hci", "tcp-server:127.0.0.1:0", "--set", "interval=0"], "--set: interval: must be"),
    ],
)
def test_gatewayd_simulate_refuses_bad_arguments_in_one_line(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gatewayd", "simulate", "--device", "cgms", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
