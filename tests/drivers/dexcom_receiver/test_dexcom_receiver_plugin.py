"""The plugin as the daemon sees it: entry point, options, USB matching and port discovery."""

from __future__ import annotations

import re

import pytest
from serial.tools.list_ports_common import ListPortInfo

from drivers.dexcom_receiver import ReceiverOptions, plugin
from drivers.dexcom_receiver.link import find_receiver
from gatewayd import registry
from gatewayd.errors import ConfigError, DeviceNotFound
from gatewayd.options import OptionReader


def parse(table: dict[str, object]) -> ReceiverOptions:
    reader = OptionReader(table, "config.toml", "devices[0]")
    options = plugin.parse_options(reader)
    reader.finish()
    return options


def test_entry_point_loads_the_plugin() -> None:
    loaded = registry.load("dexcom_receiver")
    assert loaded is plugin
    assert (plugin.name, plugin.transport) == ("dexcom_receiver", "serial")
    assert plugin.match.usb_vid_pid == ((0x22A3, 0x0047),)
    assert plugin.summary.startswith("Dexcom G4 / G5 / G6 receiver")


def test_options_defaults_and_values() -> None:
    assert parse({}) == ReceiverOptions(None, 60.0, 24.0, 2.0)
    assert parse(
        {"path": "/dev/ttyACM0", "poll_interval": 30, "backfill_hours": 0, "timeout": 0.5}
    ) == ReceiverOptions("/dev/ttyACM0", 30.0, 0.0, 0.5)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"poll_interval": 0}, "devices[0].poll_interval: must be > 0"),
        ({"backfill_hours": -1}, "devices[0].backfill_hours: must be >= 0"),
        ({"timeout": "fast"}, "devices[0].timeout: must be a number"),
        ({"path": ""}, "devices[0].path: must not be empty"),
        ({"baud": 9600}, "devices[0].baud: unknown key"),
    ],
)
def test_bad_options_fail_with_file_key_and_reason(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"config.toml: {message}")):
        parse(table)


def port(device: str, vid: int | None, pid: int | None) -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid = vid, pid
    return info


def test_discovery_by_vid_pid() -> None:
    ports = [port("/dev/ttyUSB0", 0x0403, 0x6001), port("/dev/ttyACM1", 0x22A3, 0x0047)]
    assert find_receiver(ports) == "/dev/ttyACM1"


def test_discovery_without_or_with_several_receivers() -> None:
    with pytest.raises(DeviceNotFound, match="no Dexcom receiver"):
        find_receiver([port("/dev/ttyS0", None, None)])
    several = [port("/dev/ttyACM0", 0x22A3, 0x0047), port("/dev/ttyACM1", 0x22A3, 0x0047)]
    with pytest.raises(DeviceNotFound, match="set `path`"):
        find_receiver(several)
