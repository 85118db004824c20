"""`gatewayd scan`: emulated peripherals on a Bumble virtual link, read by the real command.

The CGMS sensor and the glucose meter are the drivers' own emulators; a third peripheral (a
heart-rate monitor) advertises a service no driver reads. They share one simulated air with the
gateway's controller, served as HCI over TCP: `gatewayd scan --config` opens it as
``[ble] stack = "bumble"`` does on a hub.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bumble.core import AdvertisingData
from serial.tools.list_ports_common import ListPortInfo

import drivers.dexcom_g6
import drivers.dexcom_receiver
import drivers.glucose
from drivers.cgms.emulator import CgmsPeripheral, CgmsSensor, SensorConfig
from drivers.glucose.emulator import GlucoseMeterEmulator
from gatewayd.cli import main
from gatewayd.cli.scan import Advertiser, match_ble, match_serial
from gatewayd.plugin.emulation import SiblingLink, add_peripheral, serve_sibling_link
from mosquitto import free_port

pytestmark = pytest.mark.timeout(60)

CGMS = "F0:00:00:00:18:1F"
METER = "F0:00:00:00:18:08"
HEART_RATE = "F0:00:00:00:18:0D"


@pytest.fixture
async def air() -> AsyncIterator[SiblingLink]:
    """A CGMS sensor, a glucose meter and a heart-rate monitor advertising to one gateway radio."""
    async with serve_sibling_link(peripheral_name="CGMS Emulator", peripheral_address=CGMS) as link:
        sensor = CgmsPeripheral(link.peripheral, CgmsSensor(SensorConfig()), name="CGMS Emulator")
        await sensor.start()
        meter = GlucoseMeterEmulator(
            await add_peripheral(link.link, name="meter", address=METER), name="CareSens EMU"
        )
        await meter.start()
        monitor = await add_peripheral(link.link, name="hrm", address=HEART_RATE)
        ad = AdvertisingData
        await monitor.start_advertising(
            advertising_data=bytes(
                ad(
                    [
                        (ad.FLAGS, bytes([0x06])),
                        (ad.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, bytes.fromhex("0d18")),
                        (ad.COMPLETE_LOCAL_NAME, b"Heart Rate"),
                    ]
                )
            ),
            advertising_interval_min=20,
            advertising_interval_max=20,
        )
        try:
            yield link
        finally:
            await meter.stop()
            await sensor.close()
            await monitor.power_off()


def _config(tmp_path: Path, hci: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[hub]\nid = "hub"\n\n[ble]\nstack = "bumble"\nhci = "{hci}"\n')
    return path


async def test_scan_lists_the_cgms_sensor_and_the_meter_with_their_driver_and_config(
    air: SiblingLink, tmp_path: Path
) -> None:
    config = _config(tmp_path, air.hci)
    scan = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gatewayd", "scan", "--config", str(config), "--timeout", "1.5"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await scan.communicate()
    out = stdout.decode()
    assert scan.returncode == 0, stderr.decode()
    assert out.startswith(f"Listened 1.5 s on BLE (bumble {air.hci}): 3 device(s) heard;"), out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("F0:")}
    assert set(rows) == {CGMS, METER}, out  # the heart-rate monitor is not listed
    assert (rows[CGMS][1:3], rows[CGMS][-1]) == (["CGMS", "Emulator"], "cgms")
    assert (rows[METER][1:3], rows[METER][-1]) == (["CareSens", "EMU"], "glucose")
    assert all(row[-2] == "dBm" for row in rows.values())
    assert HEART_RATE not in out
    assert f'[[devices]]\nid = "cgms-181f"\ndriver = "cgms"\naddress = "{CGMS}"' in out
    assert f'[[devices]]\nid = "glucose-1808"\ndriver = "glucose"\naddress = "{METER}"' in out


def _scan(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatewayd", "scan", "--timeout", "0.5", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_an_hci_transport_that_does_not_open_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = _scan(["--config", str(_config(tmp_path, f"tcp-client:127.0.0.1:{free_port()}"))])
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("gatewayd: scan: no usable BLE radio: ")
    assert done.stderr.count("\n") == 1, done.stderr


def test_no_bluetoothd_is_one_line_and_exit_1(tmp_path: Path) -> None:
    bus = f"unix:path={tmp_path / 'no-such-bus'}"
    done = _scan([], env={"DBUS_SYSTEM_BUS_ADDRESS": bus})
    assert done.returncode == 1
    assert done.stderr.startswith("gatewayd: scan: no usable BLE radio: ")
    assert done.stderr.count("\n") == 1, done.stderr


def test_a_bad_timeout_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--timeout", "0"]) == 2
    assert capsys.readouterr().err == "gatewayd: --timeout: must be > 0, got 0.0\n"


def test_a_dexcom_transmitter_is_recognised_by_its_name_and_needs_its_id() -> None:
    heard = [Advertiser("D0:00:00:00:00:01", "Dexcom8G", -60, ())]
    (found,) = match_ble([drivers.dexcom_g6.plugin, drivers.glucose.plugin], heard)
    assert found.driver.name == "dexcom_g6"
    assert found.snippet().splitlines()[-1] == (
        'transmitter_id = ""  # the 6 characters printed on the transmitter'
    )


def test_a_receiver_port_is_recognised_by_its_usb_ids() -> None:
    receiver = ListPortInfo("/dev/ttyACM0", skip_link_detection=True)
    receiver.vid, receiver.pid, receiver.product = 0x22A3, 0x0047, "Dexcom Receiver"
    modem = ListPortInfo("/dev/ttyACM1", skip_link_detection=True)
    modem.vid, modem.pid = 0x1546, 0x01A7
    plain = ListPortInfo("/dev/ttyS0", skip_link_detection=True)
    (found,) = match_serial([drivers.dexcom_receiver.plugin], [modem, plain, receiver])
    assert (found.address, found.name, found.where()) == (
        "/dev/ttyACM0",
        "Dexcom Receiver",
        "USB 22a3:0047",
    )
    assert found.snippet() == (
        '[[devices]]\nid = "dexcom_receiver-acm0"\ndriver = "dexcom_receiver"\n'
        'path = "/dev/ttyACM0"'
    )
