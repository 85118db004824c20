"""doctor's machine checks: clock, disk, serial permissions, Bluetooth (BlueZ and Bumble).

Probes are handed in where the machine cannot be changed (a clock that is not synchronised, a
full disk, an adapter in sysfs); permissions are checked on real files and a real pty, as the
daemon's user (`Identity`) rather than as root, who may open anything.
"""

from __future__ import annotations

import os
import socket
import stat
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.ops.doctor.bluetooth import Probes, check_bluetooth
from gatewayd.ops.doctor.core import Identity, Result, Status
from gatewayd.ops.doctor.system import (
    ClockState,
    DiskUsage,
    adjtimex_probe,
    check_clock,
    check_disk,
    check_serial,
    serial_path,
    timedatectl_probe,
)
from gatewayd.transport.ble import BleConfig
from mosquitto import free_port
from privileges import NEEDS_ROOT

NOBODY = Identity("nobody", 65534, frozenset({65534}))
DIALOUT_GID = 4242
MEMBER = Identity("gatewayd", 65533, frozenset({65533, DIALOUT_GID}))


def one_line(result: Result) -> str:
    line = result.line()
    assert "\n" not in line
    assert line.startswith(result.status.value.ljust(6) + result.check.ljust(12))
    return line


# --- clock --------------------------------------------------------------------------------------


def test_clock_synchronised() -> None:
    result = check_clock(lambda: ClockState(True, "timedatectl"))
    assert (result.status, result.message, result.hint) == (
        Status.OK,
        "synchronised (timedatectl)",
        None,
    )


def test_clock_not_synchronised_warns_with_hint() -> None:
    result = check_clock(lambda: ClockState(False, "adjtimex", "STA_UNSYNC"))
    assert result.status == Status.WARN
    assert result.message == "not synchronised (adjtimex: STA_UNSYNC)"
    assert result.hint is not None
    assert "timedatectl set-ntp true" in result.hint
    assert one_line(result).startswith("warn  clock       not synchronised")


def test_clock_unknown_warns() -> None:
    result = check_clock(lambda: ClockState(None, "none"))
    assert result.status == Status.WARN
    assert "cannot tell" in result.message


def test_real_adjtimex_probe_answers() -> None:
    state = adjtimex_probe()
    assert state is not None  # Linux: the syscall is always there, read-only needs no privilege
    assert state.source == "adjtimex"
    assert isinstance(state.synchronised, bool)


@pytest.mark.parametrize(("answer", "expected"), [("yes", True), ("no", False)])
def test_timedatectl_probe_reads_ntpsynchronized(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: str, expected: bool
) -> None:
    fake = tmp_path / "timedatectl"
    fake.write_text(
        f'#!/bin/sh\n[ "$*" = "show -p NTPSynchronized --value" ] || exit 3\necho {answer}\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert timedatectl_probe() == ClockState(expected, "timedatectl")


def test_timedatectl_without_systemd_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "timedatectl"
    fake.write_text("#!/bin/sh\necho 'System has not been booted with systemd' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert timedatectl_probe() is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert timedatectl_probe() is None


# --- disk ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "status"),
    [
        (5_000_000_000, Status.OK),
        (200_000_001, Status.OK),
        (150_000_000, Status.WARN),
        (20_000_001, Status.WARN),
        (19_000_000, Status.FAIL),
        (0, Status.FAIL),
    ],
)
def test_disk_thresholds(tmp_path: Path, free: int, status: Status) -> None:
    seen: list[Path] = []

    def usage(path: Path) -> DiskUsage:
        seen.append(path)
        return DiskUsage(total=32_000_000_000, used=32_000_000_000 - free, free=free)

    result = check_disk(tmp_path / "not" / "yet" / "gatewayd.db", usage)
    assert result.status == status
    assert seen == [tmp_path]  # the nearest folder that exists: the store is not made yet
    assert "free of 32.0 GB" in result.message
    if status != Status.OK:
        assert result.hint is not None
        assert "retention_days" in result.hint


def test_disk_real(tmp_path: Path) -> None:
    result = check_disk(tmp_path / "gatewayd.db")
    assert result.status in (Status.OK, Status.WARN, Status.FAIL)
    assert result.message.startswith(f"{tmp_path}: ")


# --- serial -------------------------------------------------------------------------------------


@pytest.fixture
def pty_path() -> Iterator[Path]:
    controller, device = os.openpty()
    tty.setraw(device)
    path = Path(os.ttyname(device))
    mode = path.stat().st_mode
    try:
        yield path
    finally:
        path.chmod(stat.S_IMODE(mode))
        os.close(device)
        os.close(controller)


def test_serial_pty_permission_denied_then_allowed(pty_path: Path) -> None:
    pty_path.chmod(0o600)
    result = check_serial("cgm-2", pty_path, NOBODY)
    assert result.status == Status.FAIL
    assert result.message.startswith(f"cgm-2 {pty_path}: permission denied for user nobody (crw")
    assert result.hint is not None
    pty_path.chmod(0o666)
    result = check_serial("cgm-2", pty_path, NOBODY)
    assert result.status == Status.OK
    assert result.message == f"cgm-2 {pty_path}: character device, read/write as nobody"


@NEEDS_ROOT
def test_serial_group_hint_names_the_group(tmp_path: Path) -> None:
    device = tmp_path / "ttyACM0"
    device.write_bytes(b"")
    os.chown(device, 0, DIALOUT_GID)
    device.chmod(0o660)
    denied = check_serial("cgm-1", device, NOBODY)
    assert denied.status == Status.FAIL
    assert denied.hint is not None
    assert denied.hint.startswith(f"add the nobody user to {DIALOUT_GID} (sudo usermod -aG")
    allowed = check_serial("cgm-1", device, MEMBER)
    # Readable and writable by the group member, but a regular file is not a tty.
    assert allowed.status == Status.WARN
    assert "not a character device" in allowed.message


def test_serial_read_only_is_not_enough(tmp_path: Path) -> None:
    device = tmp_path / "ttyUSB0"
    device.write_bytes(b"")
    device.chmod(0o644)
    result = check_serial("cgm-1", device, NOBODY)
    assert result.status == Status.FAIL
    assert "permission denied" in result.message


@NEEDS_ROOT
def test_serial_owner_bits_apply_to_the_owner(tmp_path: Path) -> None:
    """POSIX: the owner gets the owner's bits even when others get more."""
    device = tmp_path / "tty"
    device.write_bytes(b"")
    os.chown(device, NOBODY.uid, 0)
    device.chmod(0o066)
    assert check_serial("d", device, NOBODY).status == Status.FAIL


def test_serial_missing_device() -> None:
    result = check_serial("cgm-1", Path("/dev/ttyACM-missing"), NOBODY)
    assert result.status == Status.FAIL
    assert result.message == "cgm-1 /dev/ttyACM-missing: no such device"
    assert result.hint is not None
    assert "/dev/serial/by-id/" in result.hint


def test_serial_path_from_driver_options() -> None:
    assert serial_path({"path": "/dev/ttyACM0"}) == Path("/dev/ttyACM0")
    assert serial_path({"port": "/dev/serial/by-id/usb-x"}) == Path("/dev/serial/by-id/usb-x")
    assert serial_path({"port": 1883, "interval": 60}) is None
    assert serial_path({"path": "socket://127.0.0.1:7000"}) is None


# --- bluetooth: BlueZ ---------------------------------------------------------------------------


def fake_sysfs(root: Path, adapters: dict[str, tuple[str, str]]) -> Probes:
    """/sys/class/bluetooth/<hciN>/rfkill0/{soft,hard}, /proc/<pid>/comm with bluetoothd."""
    for name, (soft, hard) in adapters.items():
        rfkill = root / "sys" / "class" / "bluetooth" / name / "rfkill0"
        rfkill.mkdir(parents=True)
        (rfkill / "soft").write_text(soft + "\n")
        (rfkill / "hard").write_text(hard + "\n")
    (root / "sys" / "class" / "bluetooth").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "412").mkdir(parents=True)
    (root / "proc" / "412" / "comm").write_text("bluetoothd\n")
    return Probes(
        sysfs=root / "sys", dev=root / "dev", proc=root / "proc", adapter_up=lambda n: True
    )


def test_bluetooth_skipped_without_ble_devices(tmp_path: Path) -> None:
    result = check_bluetooth(None, needed=False, identity=NOBODY, probes=fake_sysfs(tmp_path, {}))
    assert result.status == Status.SKIP


def test_bluez_no_adapter(tmp_path: Path) -> None:
    result = check_bluetooth(None, needed=True, identity=NOBODY, probes=fake_sysfs(tmp_path, {}))
    assert result.status == Status.FAIL
    assert result.message.startswith("no Bluetooth adapter")
    assert result.hint is not None
    assert "bumble" in result.hint


def test_bluez_adapter_up(tmp_path: Path) -> None:
    probes = fake_sysfs(tmp_path, {"hci0": ("0", "0"), "hci0:12": ("0", "0")})
    result = check_bluetooth(BleConfig(), needed=True, identity=Identity.current(), probes=probes)
    assert result.status == Status.OK, result.message
    assert result.message.startswith("hci0 up (BlueZ)")


def test_bluez_configured_adapter_missing(tmp_path: Path) -> None:
    probes = fake_sysfs(tmp_path, {"hci0": ("0", "0")})
    result = check_bluetooth(BleConfig(adapter="hci1"), needed=True, identity=NOBODY, probes=probes)
    assert result.status == Status.FAIL
    assert result.message.startswith("adapter hci1 not found")


def test_bluez_rfkill_blocked(tmp_path: Path) -> None:
    probes = fake_sysfs(tmp_path, {"hci0": ("1", "0")})
    result = check_bluetooth(BleConfig(), needed=True, identity=NOBODY, probes=probes)
    assert (result.status, result.message, result.hint) == (
        Status.FAIL,
        "hci0 is blocked by rfkill (soft)",
        "sudo rfkill unblock bluetooth",
    )


def test_bluez_adapter_down(tmp_path: Path) -> None:
    base = fake_sysfs(tmp_path, {"hci0": ("0", "0")})
    probes = Probes(base.sysfs, base.dev, base.proc, adapter_up=lambda name: False)
    result = check_bluetooth(BleConfig(), needed=True, identity=NOBODY, probes=probes)
    assert (result.status, result.message) == (Status.FAIL, "hci0 is down")


def test_bluez_without_bluetoothd(tmp_path: Path) -> None:
    base = fake_sysfs(tmp_path, {"hci0": ("0", "0")})
    (base.proc / "412" / "comm").write_text("sshd\n")
    result = check_bluetooth(BleConfig(), needed=True, identity=NOBODY, probes=base)
    assert (result.status, result.message) == (Status.FAIL, "bluetoothd is not running")


# --- bluetooth: Bumble --------------------------------------------------------------------------


def test_bumble_tcp_client_reachable_and_not() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        hci = f"tcp-client:127.0.0.1:{port}"
        result = check_bluetooth(BleConfig("bumble", hci=hci), needed=True, identity=NOBODY)
        assert (result.status, result.message) == (Status.OK, f"{hci} reachable (Bumble)")
    hci = f"tcp-client:127.0.0.1:{free_port()}"
    result = check_bluetooth(BleConfig("bumble", hci=hci), needed=True, identity=NOBODY)
    assert result.status == Status.FAIL
    assert result.message.startswith(f"{hci}: ")
    assert result.hint is not None


def fake_usb(root: Path, *, vendor: str, product: str, bluetooth: bool, mode: int) -> Probes:
    """A USB device in sysfs (class via its interface, as most dongles) and its /dev node."""
    devices = root / "sys" / "bus" / "usb" / "devices"
    device = devices / "1-1.2"
    device.mkdir(parents=True)
    for name, value in {
        "idVendor": vendor,
        "idProduct": product,
        "bDeviceClass": "e0" if bluetooth else "00",
        "bDeviceSubClass": "01" if bluetooth else "00",
        "bDeviceProtocol": "01" if bluetooth else "00",
        "busnum": "1",
        "devnum": "7",
    }.items():
        (device / name).write_text(value + "\n")
    hub = devices / "usb1"
    hub.mkdir()
    (hub / "idVendor").write_text("1d6b\n")
    (hub / "bDeviceClass").write_text("09\n")
    node = root / "dev" / "bus" / "usb" / "001" / "007"
    node.parent.mkdir(parents=True)
    node.write_bytes(b"")
    node.chmod(mode)
    return Probes(sysfs=root / "sys", dev=root / "dev", proc=root / "proc")


@pytest.mark.parametrize("hci", ["usb:0", "usb:0a12:0001", "usb:1-1.2", "usb:0A12:0001!"])
def test_bumble_usb_present_and_usable(tmp_path: Path, hci: str) -> None:
    probes = fake_usb(tmp_path, vendor="0a12", product="0001", bluetooth=True, mode=0o666)
    result = check_bluetooth(
        BleConfig("bumble", hci=hci), needed=True, identity=NOBODY, probes=probes
    )
    assert result.status == Status.OK, result.message
    assert "0a12:0001 at " in result.message
    assert result.message.endswith("(Bumble), read/write as nobody")


def test_bumble_usb_permission_denied(tmp_path: Path) -> None:
    probes = fake_usb(tmp_path, vendor="0a12", product="0001", bluetooth=True, mode=0o664)
    result = check_bluetooth(
        BleConfig("bumble", hci="usb:0"), needed=True, identity=NOBODY, probes=probes
    )
    assert result.status == Status.FAIL
    assert "permission denied for user nobody" in result.message
    assert result.hint is not None
    assert 'ATTR{idVendor}=="0a12"' in result.hint


@pytest.mark.parametrize("hci", ["usb:0", "usb:1", "usb:0b05:17cb"])
def test_bumble_usb_missing(tmp_path: Path, hci: str) -> None:
    probes = fake_usb(tmp_path, vendor="046d", product="c52b", bluetooth=False, mode=0o666)
    result = check_bluetooth(
        BleConfig("bumble", hci=hci), needed=True, identity=NOBODY, probes=probes
    )
    assert result.status == Status.FAIL
    assert "no such USB Bluetooth controller (0 found)" in result.message


def test_bumble_serial_controller(pty_path: Path) -> None:
    pty_path.chmod(0o600)
    hci = f"serial:{pty_path},1000000"
    result = check_bluetooth(BleConfig("bumble", hci=hci), needed=True, identity=NOBODY)
    assert result.status == Status.FAIL
    assert result.message.startswith(f"{hci}: {pty_path}: permission denied")
