"""gatewayd.transport.ble: the `[ble]` table and the bleak arguments it turns into."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatewayd.errors import ConfigError
from gatewayd.options import OptionReader
from gatewayd.transport.ble import BleConfig, client_kwargs, parse_ble_config, scanner_kwargs
from gatewayd.transport.bumble.client import BumbleClient
from gatewayd.transport.bumble.scanner import BumbleScanner

FILE = Path("/etc/gatewayd/config.toml")


def parse(table: dict[str, Any]) -> BleConfig:
    return parse_ble_config(OptionReader(table, FILE, "ble"))


def error(table: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(table)
    return info.value


def test_defaults_to_bluez_on_its_default_adapter() -> None:
    assert parse({}) == BleConfig(stack="bluez", hci=None, adapter=None)
    assert parse({"stack": "bluez", "adapter": "hci1"}) == BleConfig("bluez", None, "hci1")


@pytest.mark.parametrize(
    "hci", ["usb:0", "tcp-client:127.0.0.1:9001", "serial:/dev/ttyUSB0,1000000"]
)
def test_bumble_takes_an_hci_transport(hci: str) -> None:
    assert parse({"stack": "bumble", "hci": hci}) == BleConfig("bumble", hci, None)


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        ({"stack": "bumble"}, "ble.hci", 'is required with stack = "bumble"'),
        ({"stack": "bumble", "hci": "bluetooth0"}, "ble.hci", "must be a Bumble HCI transport"),
        ({"stack": "bumble", "hci": "tcp-client:9001"}, "ble.hci", "tcp-client:HOST:PORT"),
        ({"stack": "bumble", "hci": "tcp-client:h:99999"}, "ble.hci", "tcp-client:HOST:PORT"),
        ({"stack": "bumble", "hci": ""}, "ble.hci", "must not be empty"),
        ({"stack": "bumble", "hci": 0}, "ble.hci", "must be a string"),
        ({"stack": "bumble", "hci": "usb:0", "adapter": "hci0"}, "ble.adapter", "BlueZ option"),
        ({"hci": "usb:0"}, "ble.hci", 'only used with stack = "bumble"'),
        ({"adapter": "usb0"}, "ble.adapter", 'like "hci0"'),
        ({"stack": "android"}, "ble.stack", "must be one of bluez, bumble"),
        ({"stack": "bluez", "adaptor": "hci0"}, "ble.adaptor", "unknown key"),
    ],
)
def test_errors_name_file_key_and_reason(table: dict[str, Any], key: str, reason: str) -> None:
    err = error(table)
    assert str(err).startswith(f"{FILE}: {key}: "), str(err)
    assert err.key == key
    assert reason in err.reason, err.reason


def test_bleak_arguments_for_bluez() -> None:
    assert scanner_kwargs(BleConfig()) == {}
    assert client_kwargs(BleConfig()) == {}
    on_hci1 = BleConfig(adapter="hci1")
    assert scanner_kwargs(on_hci1) == {"bluez": {"adapter": "hci1"}}
    assert client_kwargs(on_hci1) == {"bluez": {"adapter": "hci1"}}


def test_bleak_arguments_for_bumble() -> None:
    cfg = BleConfig(stack="bumble", hci="usb:0")
    assert scanner_kwargs(cfg) == {"backend": BumbleScanner}
    assert client_kwargs(cfg) == {"backend": BumbleClient}
