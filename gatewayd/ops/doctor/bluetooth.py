"""The Bluetooth check: a BlueZ adapter that is up and usable, or a reachable Bumble controller.

- `[ble] stack = "bluez"` (the default): an adapter in /sys/class/bluetooth (the configured one,
  else any), not blocked by rfkill, up (HCIGETDEVINFO, where the kernel offers AF_BLUETOOTH),
  `bluetoothd` running, and the daemon's user in group `bluetooth` (BlueZ's D-Bus policy).
- `[ble] stack = "bumble"`: the HCI transport: `tcp-client:HOST:PORT` accepts a connection;
  `usb:...` names a USB Bluetooth controller that is present and that the daemon's user may
  open (/dev/bus/usb/BBB/DDD); `serial:/dev/tty...` is checked like a serial device.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gatewayd.ops.doctor.core import Identity, Result, fail, ok, owner_text, skip, warn
from gatewayd.ops.doctor.system import check_serial

if TYPE_CHECKING:
    from gatewayd.transport.ble import BleConfig

#: HCIGETDEVINFO = _IOR('H', 211, int); `struct hci_dev_info` has `flags` at byte 16.
_HCIGETDEVINFO = 0x800448D3
_HCI_UP = 1 << 0
_FLAGS_OFFSET = 16
#: USB class/subclass/protocol of a Bluetooth HCI controller (Wireless, RF, Bluetooth).
_BT_CLASS = ("e0", "01", "01")
#: USB device classes whose interfaces carry the function (composite devices).
_COMPOSITE = ("00", "ef")


def hci_up(name: str) -> bool | None:
    """Whether adapter `hciN` is up, from the kernel; None when the kernel cannot tell us."""
    family = getattr(socket, "AF_BLUETOOTH", None)
    proto = getattr(socket, "BTPROTO_HCI", None)
    if family is None or proto is None or not name[3:].isdigit():
        return None
    try:
        sock = socket.socket(family, socket.SOCK_RAW, proto)
    except OSError:
        return None
    with sock:
        buf = bytearray(128)
        struct.pack_into("=H", buf, 0, int(name[3:]))
        try:
            fcntl.ioctl(sock.fileno(), _HCIGETDEVINFO, buf, True)
        except OSError:
            return None
    (flags,) = struct.unpack_from("=I", buf, _FLAGS_OFFSET)
    return bool(flags & _HCI_UP)


def process_running(name: str, proc: Path = Path("/proc")) -> bool | None:
    """Whether a process called `name` runs (None when /proc cannot be read)."""
    try:
        entries = list(proc.iterdir())
    except OSError:
        return None
    for entry in entries:
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    return True
            except OSError:
                continue
    return False


@dataclass(frozen=True, slots=True)
class Probes:
    """Where the check looks (tests point these at a fake tree)."""

    sysfs: Path = Path("/sys")
    dev: Path = Path("/dev")
    proc: Path = Path("/proc")
    adapter_up: Callable[[str], bool | None] = hci_up


def check_bluetooth(
    ble: BleConfig | None,
    *,
    needed: bool,
    identity: Identity,
    probes: Probes | None = None,
    timeout: float = 3.0,
) -> Result:
    """The configured BLE stack can be used by the daemon's user."""
    probes = probes or Probes()
    if ble is None and not needed:
        return skip("bluetooth", "no BLE device configured")
    if ble is not None and ble.stack == "bumble" and ble.hci is not None:
        return _bumble(ble.hci, identity, probes, timeout)
    return _bluez(ble.adapter if ble is not None else None, identity, probes)


def _bluez(adapter: str | None, identity: Identity, probes: Probes) -> Result:
    folder = probes.sysfs / "class" / "bluetooth"
    try:
        found = sorted(p.name for p in folder.iterdir() if ":" not in p.name)
    except OSError:
        found = []
    if not found or (adapter is not None and adapter not in found):
        what = f"adapter {adapter} not found" if adapter else "no Bluetooth adapter"
        return fail(
            "bluetooth",
            f"{what} ({folder}: {', '.join(found) or 'empty'})",
            "check `dmesg | grep -i bluetooth` (on a Pi: sudo systemctl enable --now hciuart), or "
            'use [ble] stack = "bumble" with a USB controller',
        )
    name = adapter or found[0]
    for rfkill in sorted((folder / name).glob("rfkill*")):
        for kind in ("hard", "soft"):
            try:
                blocked = (rfkill / kind).read_text().strip() == "1"
            except OSError:
                continue
            if blocked:
                return fail(
                    "bluetooth",
                    f"{name} is blocked by rfkill ({kind})",
                    "sudo rfkill unblock bluetooth"
                    if kind == "soft"
                    else "a hardware switch or firmware disables the radio",
                )
    up = probes.adapter_up(name)
    if up is False:
        return fail("bluetooth", f"{name} is down", "sudo bluetoothctl power on")
    running = process_running("bluetoothd", probes.proc)
    if running is False:
        return fail(
            "bluetooth", "bluetoothd is not running", "sudo systemctl enable --now bluetooth"
        )
    state = "up" if up else "present (up/down unknown: no AF_BLUETOOTH here)"
    member = identity.in_group("bluetooth")
    if member is False and not identity.is_root:
        return warn(
            "bluetooth",
            f"{name} {state}, but user {identity.name} is not in group bluetooth",
            f"BlueZ's D-Bus policy may refuse it: sudo usermod -aG bluetooth {identity.name}",
        )
    return ok("bluetooth", f"{name} {state} (BlueZ), usable by {identity.name}")


def _bumble(hci: str, identity: Identity, probes: Probes, timeout: float) -> Result:
    scheme, _, spec = hci.partition(":")
    if scheme == "tcp-client":
        host, _, port = spec.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                pass
        except TimeoutError:
            return fail("bluetooth", f"{hci}: no answer in {timeout:g} s", _TCP_HINT)
        except OSError as exc:
            return fail("bluetooth", f"{hci}: {exc.strerror or exc}", _TCP_HINT)
        return ok("bluetooth", f"{hci} reachable (Bumble)")
    if scheme in ("usb", "pyusb"):
        return _usb(hci, spec, identity, probes)
    if scheme == "serial":
        result = check_serial("", Path(spec.split(",")[0]), identity)
        return Result("bluetooth", result.status, f"{hci}: {result.message}", result.hint)
    return ok("bluetooth", f"{hci} (Bumble; this transport is not checked)")


_TCP_HINT = "start the HCI bridge or emulator that should listen there, or fix [ble] hci"


@dataclass(frozen=True, slots=True)
class UsbDevice:
    """A USB device as sysfs lists it."""

    path: str  # `1-1.2`, also Bumble's bus-port moniker
    vendor: int
    product: int
    serial: str | None
    bluetooth: bool
    node: Path  # /dev/bus/usb/BBB/DDD


def usb_devices(sysfs: Path, dev: Path) -> list[UsbDevice]:
    """Every USB device in sysfs, in the order of their sysfs names."""
    folder = sysfs / "bus" / "usb" / "devices"
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError:
        return []

    def attr(path: Path, name: str) -> str | None:
        try:
            return (path / name).read_text().strip()
        except OSError:
            return None

    found = []
    for entry in entries:
        if ":" in entry.name or attr(entry, "idVendor") is None:
            continue  # an interface, not a device
        device_class = tuple(
            attr(entry, f"bDevice{k}") or "" for k in ("Class", "SubClass", "Protocol")
        )
        bluetooth = device_class == _BT_CLASS or (
            device_class[0] in _COMPOSITE
            and any(
                tuple(attr(i, f"bInterface{k}") or "" for k in ("Class", "SubClass", "Protocol"))
                == _BT_CLASS
                for i in folder.glob(f"{entry.name}:*")
            )
        )
        bus, num = attr(entry, "busnum") or "0", attr(entry, "devnum") or "0"
        found.append(
            UsbDevice(
                path=entry.name,
                vendor=int(attr(entry, "idVendor") or "0", 16),
                product=int(attr(entry, "idProduct") or "0", 16),
                serial=attr(entry, "serial"),
                bluetooth=bluetooth,
                node=dev / "bus" / "usb" / f"{int(bus):03d}" / f"{int(num):03d}",
            )
        )
    return found


def _select(spec: str, devices: list[UsbDevice]) -> UsbDevice | None:
    """The device Bumble's `usb:` moniker names (see bumble.transport.usb)."""
    spec = spec.removesuffix("!").split("+sco=")[0]
    if ":" in spec:
        vendor, product = spec.split(":", 1)
        serial, index = None, 0
        if "/" in product:
            product, serial = product.split("/", 1)
        elif "#" in product:
            product, number = product.split("#", 1)
            index = int(number) if number.isdigit() else 0
        matches = [
            d
            for d in devices
            if (d.vendor, d.product) == (int(vendor, 16), int(product, 16))
            and (serial is None or d.serial == serial)
        ]
        return matches[index] if index < len(matches) else None
    if "-" in spec:
        return next((d for d in devices if d.path == spec), None)
    index = int(spec) if spec.isdigit() else 0
    controllers = [d for d in devices if d.bluetooth]
    return controllers[index] if index < len(controllers) else None


def _usb(hci: str, spec: str, identity: Identity, probes: Probes) -> Result:
    devices = usb_devices(probes.sysfs, probes.dev)
    try:
        device = _select(spec, devices)
    except ValueError:
        return fail("bluetooth", f"{hci}: not a Bumble usb moniker", "see docs: usb:0, usb:VID:PID")
    if device is None:
        listed = sum(d.bluetooth for d in devices)
        return fail(
            "bluetooth",
            f"{hci}: no such USB Bluetooth controller ({listed} found)",
            "plug the controller in (`lsusb` lists it) or fix [ble] hci",
        )
    name = f"{device.vendor:04x}:{device.product:04x} at {device.node}"
    try:
        st = device.node.stat()
    except OSError as exc:
        return fail("bluetooth", f"{hci} -> {name}: {exc.strerror}")
    if not identity.may(st, read=True, write=True):
        return fail(
            "bluetooth",
            f"{hci} -> {name}: permission denied for user {identity.name} ({owner_text(st)})",
            f'a udev rule: SUBSYSTEM=="usb", ATTR{{idVendor}}=="{device.vendor:04x}", '
            f'ATTR{{idProduct}}=="{device.product:04x}", GROUP="{identity.name}", MODE="0660"',
        )
    return ok("bluetooth", f"{hci} -> {name} (Bumble), read/write as {identity.name}")
