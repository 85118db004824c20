"""Shared fixtures: one real mosquitto per test session (see gatewayd.testing.mosquitto)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.testing.mosquitto import Mosquitto


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
