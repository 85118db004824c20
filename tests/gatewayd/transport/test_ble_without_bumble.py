"""A hub installed without the optional Bumble stack (32-bit Raspberry Pi OS cannot have it).

Each test runs the real `gatewayd` in a subprocess whose import system refuses `bumble` (a
`sitecustomize` on PYTHONPATH), as on an install without the `bumble` extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GATEWAYD = str(Path(sys.executable).parent / "gatewayd")

BLOCKER = """
import sys

class _NoBumble:
    def find_spec(self, name, path=None, target=None):
        if name == "bumble" or name.startswith("bumble."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoBumble())
"""


@pytest.fixture
def no_bumble(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": str(site)}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEWAYD, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_the_blocker_blocks(no_bumble: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import bumble"], env=no_bumble, capture_output=True, check=False
    )
    assert done.returncode == 1
    assert b"No module named 'bumble'" in done.stderr


def test_every_driver_loads_and_bluez_configs_are_accepted(
    no_bumble: dict[str, str], tmp_path: Path
) -> None:
    drivers = run(no_bumble, "drivers")
    assert drivers.returncode == 0, drivers.stderr
    for name in ("cgms", "glucose", "dexcom_g6", "dexcom_receiver", "simulator"):
        assert f"{name} (" in drivers.stdout
    config = tmp_path / "config.toml"
    config.write_text(
        '[hub]\nid = "hub-1"\n[store]\npath = "store.db"\n[ble]\nstack = "bluez"\n'
        '[[devices]]\nid = "cgm-1"\ndriver = "cgms"\n'
    )
    status = run(no_bumble, "status", "--config", str(config))
    # the config is valid (no store yet is the only complaint)
    assert "config error" not in status.stderr
    assert "does not exist yet" in status.stderr


def test_stack_bumble_is_a_one_line_config_error(no_bumble: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[hub]\nid = "hub-1"\n[ble]\nstack = "bumble"\nhci = "usb:0"\n'
        '[[devices]]\nid = "cgm-1"\ndriver = "cgms"\n'
    )
    done = run(no_bumble, "run", "--config", str(config))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"{config}: ble.stack:" in lines[0]
    assert "gatewayd[bumble]" in lines[0]


def test_a_ble_emulator_says_what_to_install(no_bumble: dict[str, str]) -> None:
    done = run(no_bumble, "simulate", "--device", "cgms", "--hci", "tcp-server:127.0.0.1:0")
    assert done.returncode == 2
    assert "gatewayd[bumble]" in done.stderr
    assert "Traceback" not in done.stderr
