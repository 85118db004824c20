"""Shared fixtures: one real mosquitto per test session (see mosquitto); one
private dbus-daemon per test session for the `org.bluez` stand-in (tests/support/fakebluez)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gatewayd.plugin.kit import DriverKit
from mosquitto import Mosquitto

from fakebluez import BluezKit, DbusDaemon


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A running mosquitto with password auth, a TLS and a client-certificate listener."""
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test alone, for tests that stop, kill or restart it."""
    server = Mosquitto(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dbus_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbusDaemon]:
    """A private dbus-daemon (the stand-in's "system bus"); skips when dbus is not installed."""
    if (missing := DbusDaemon.available()) is not None:
        pytest.skip(f"the BlueZ tests need a dbus-daemon: {missing}")
    daemon = DbusDaemon(tmp_path_factory.mktemp("dbus"))
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def system_bus(dbus_daemon: DbusDaemon, monkeypatch: pytest.MonkeyPatch) -> str:
    """Points bleak (and dbus-fast) at the private bus for this test; its address."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", dbus_daemon.address)
    return dbus_daemon.address


#: The hub's BLE stacks every BLE driver's kit runs on.
STACKS = ("bumble", "bluez")


@pytest.fixture(params=STACKS)
def on_stack(request: pytest.FixtureRequest) -> Callable[[DriverKit], DriverKit]:
    """Puts a BLE driver's kit on the parametrised stack: as it is (Bumble), or on BlueZ through
    the `org.bluez` stand-in (`BluezKit`)."""
    if request.param == "bumble":
        return lambda kit: kit
    request.getfixturevalue("system_bus")
    return BluezKit
