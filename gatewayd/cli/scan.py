"""`gatewayd scan`: the nearby devices an installed driver can read, with the config to paste.

    gatewayd scan [--timeout S] [--config PATH]

Listens to BLE advertisements for `--timeout` seconds (default 5) on the hub's radio (the
config's `[ble]`: BlueZ and its adapter, or a Bumble HCI transport; without `--config`, BlueZ's
default adapter) and lists the USB serial ports present. A device is listed when a driver's
`DeviceMatch` recognises it (advertised service UUID, advertised name, USB VID:PID), with its
address (or port), name, RSSI, the driver, and a ``[[devices]]`` table for the config. A radio
that cannot be used (no adapter, bluetoothd not running, an HCI transport that does not open)
is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from gatewayd import registry
from gatewayd.driver import DriverPlugin
from gatewayd.errors import PluginError, UsageError
from gatewayd.ops import logs
from gatewayd.options import OptionReader

#: Seconds of listening by default: BLE sensors advertise every 0.1-2 s; a meter or a
#: transmitter that advertises only now and then may need a longer `--timeout`.
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Advertiser:
    """One BLE device heard during the scan (its last advertisement)."""

    address: str
    name: str | None
    rssi: int | None
    service_uuids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Found:
    """A device that a driver can read."""

    driver: DriverPlugin[Any]
    #: The Bluetooth address, or the serial port's path.
    address: str
    name: str | None
    #: BLE: the signal strength in dBm; None for a serial port.
    rssi: int | None = None
    #: Serial: the port's USB VID:PID.
    usb: tuple[int, int] | None = None

    def where(self) -> str:
        """RSSI for a BLE device, the USB ids for a port."""
        if self.usb is not None:
            return f"USB {self.usb[0]:04x}:{self.usb[1]:04x}"
        return "" if self.rssi is None else f"{self.rssi} dBm"

    def snippet(self) -> str:
        """The ``[[devices]]`` table that makes the gateway read this device."""
        tail = re.sub(r"[^A-Za-z0-9]", "", self.address)[-4:].lower()
        lines = [
            "[[devices]]",
            f'id = "{self.driver.name}-{tail}"',
            f'driver = "{self.driver.name}"',
            f'{self.driver.address_option} = "{self.address}"',
        ]
        lines += [f'{key} = ""  # {hint}' for key, hint in self.driver.match.required_options]
        return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`gatewayd scan`'s options."""
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to listen for BLE advertisements (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--config", type=Path, help="use this config's [ble] radio (default: BlueZ's adapter)"
    )


def main(args: argparse.Namespace) -> int:
    """Scan, print what a driver can read; 1 when the radio cannot be used."""
    if not args.timeout > 0:
        raise UsageError("--timeout", f"must be > 0, got {args.timeout}")
    logs.configure(level="error", fmt="console", stream=sys.stderr)  # stdout is the listing
    ble = _ble_config(args.config)
    plugins = _plugins()
    ports = list(list_ports.comports())
    try:
        heard = asyncio.run(listen(ble, args.timeout))
    except RadioUnavailable as exc:
        print(f"gatewayd: scan: {exc}", file=sys.stderr)
        return 1
    found = match_ble(plugins, heard) + match_serial(plugins, ports)
    print(report(found, heard=len(heard), ports=len(ports), timeout=args.timeout, ble=ble))
    return 0


class RadioUnavailable(Exception):  # noqa: N818 - reads as the state it reports
    """The BLE radio cannot be used (no adapter, no bluetoothd, no HCI transport)."""


def _ble_config(path: Path | None) -> Any:
    """The config's `[ble]` (BleConfig); BlueZ's defaults without a config."""
    from gatewayd.ops.config import load
    from gatewayd.transport.ble import BleConfig, parse_ble_config

    if path is None:
        return BleConfig()
    config = load(path)
    return parse_ble_config(config.section("ble") or OptionReader({}, config.file, "ble"))


def _plugins() -> list[DriverPlugin[Any]]:
    """Every installed driver that loads (a broken one is named on stderr and passed over)."""
    plugins = []
    for entry in registry.installed():
        try:
            plugins.append(registry.load(entry.name))
        except PluginError as exc:
            print(f"gatewayd: scan: passing over a broken driver: {exc}", file=sys.stderr)
    return plugins


async def listen(ble: Any, timeout: float) -> list[Advertiser]:  # noqa: ASYNC109 - the scan's length
    """Every BLE device advertising within `timeout` s, strongest first."""
    from bleak import BleakScanner
    from bleak.exc import BleakError

    from gatewayd.transport.ble import scanner_kwargs

    heard: dict[str, Advertiser] = {}

    def on_advertisement(device: Any, data: Any) -> None:
        heard[device.address] = Advertiser(
            device.address, data.local_name, data.rssi, tuple(data.service_uuids)
        )

    try:
        async with _radio(ble), BleakScanner(on_advertisement, **scanner_kwargs(ble)):
            await asyncio.sleep(timeout)
    except BleakError as exc:
        raise RadioUnavailable(f"no usable BLE radio: {exc}") from exc
    except OSError as exc:  # BlueZ: the system D-Bus (or bluetoothd) cannot be reached
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise RadioUnavailable(
            f"no usable BLE radio: cannot reach bluetoothd over the system D-Bus ({reason})"
        ) from exc
    return sorted(heard.values(), key=lambda a: (-(a.rssi or -999), a.address))


@contextlib.asynccontextmanager
async def _radio(ble: Any) -> AsyncIterator[None]:
    """The Bumble host of `[ble] hci` for this loop; nothing to open for BlueZ (a scan needs
    no pairing agent)."""
    if ble.stack != "bumble":
        yield
        return
    from gatewayd.transport.bumble.registry import bumble_session

    async with bumble_session(ble.hci):
        yield


def match_ble(plugins: Iterable[DriverPlugin[Any]], heard: Iterable[Advertiser]) -> list[Found]:
    """(device, driver) for every advertiser a BLE driver recognises."""
    ble = [p for p in plugins if p.transport == "ble"]
    return [
        Found(plugin, a.address, a.name, rssi=a.rssi)
        for a in heard
        for plugin in ble
        if plugin.match.matches_ble(a.name, a.service_uuids)
    ]


def match_serial(
    plugins: Iterable[DriverPlugin[Any]], ports: Iterable[ListPortInfo]
) -> list[Found]:
    """(port, driver) for every serial port whose USB VID:PID a serial driver recognises."""
    serial = [p for p in plugins if p.transport == "serial"]
    return [
        Found(plugin, port.device, port.product or port.description, usb=(port.vid, port.pid))
        for port in sorted(ports, key=lambda p: p.device)
        for plugin in serial
        if port.vid is not None
        and port.pid is not None
        and plugin.match.matches_usb(port.vid, port.pid)
    ]


def report(found: Sequence[Found], *, heard: int, ports: int, timeout: float, ble: Any) -> str:
    """The text `gatewayd scan` prints."""
    radio = f"bumble {ble.hci}" if ble.stack == "bumble" else f"bluez {ble.adapter or 'default'}"
    lines = [
        f"Listened {timeout:g} s on BLE ({radio}): {heard} device(s) heard; "
        f"{ports} serial port(s) present."
    ]
    if not found:
        lines.append("No device that an installed driver can read.")
        return "\n".join(lines)
    rows = [("ADDRESS", "NAME", "SIGNAL", "DRIVER")] + [
        (f.address, f.name or "-", f.where(), f.driver.name) for f in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines.append("")
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + f"  {row[3]}"
        for row in rows
    ]
    lines += ["", "To read them, add to the config:"]
    for one in found:
        lines += ["", one.snippet()]
    return "\n".join(lines)
