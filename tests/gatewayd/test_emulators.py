"""`gatewayd simulate`: emulators are declared by the driver plugins and found through them."""

from __future__ import annotations

import importlib

import pytest

from gatewayd import emulators
from gatewayd.cli import main
from gatewayd.driver import Emulator
from gatewayd.errors import UsageError


def test_the_installed_plugins_declare_the_four_emulators() -> None:
    assert emulators.emulators() == {
        "cgms": Emulator("cgms", "drivers.cgms.emulator:simulate"),
        "dexcom-g6": Emulator("dexcom-g6", "drivers.dexcom_g6.serve:simulate"),
        "dexcom-receiver": Emulator("dexcom-receiver", "drivers.dexcom_receiver.simulate:simulate"),
        "glucose": Emulator("glucose", "drivers.glucose.serve:simulate"),
    }


@pytest.mark.parametrize("name", ["cgms", "dexcom-g6", "dexcom-receiver", "glucose"])
def test_each_device_name_resolves_to_its_runner(name: str) -> None:
    module, _, function = emulators.emulators()[name].runner.partition(":")
    assert emulators.resolve(name) is getattr(importlib.import_module(module), function)


def test_an_unknown_device_is_one_usage_line_naming_every_emulator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(UsageError, match="no emulator called 'nope'"):
        emulators.resolve("nope")
    assert main(["simulate", "--device", "nope"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "gatewayd: --device: no emulator called 'nope' "
        "(known: cgms, dexcom-g6, dexcom-receiver, glucose)\n"
    )
