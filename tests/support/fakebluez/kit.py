"""`BluezKit`: any BLE driver's `DriverKit`, with the gateway on BlueZ (through the stand-in).

The wrapped kit's emulator and hooks are used as they are; only the hub's side changes: the
driver gets ``[ble] stack = "bluez"`` (so `gatewayd.transport.ble.establish` takes its
bleak-retry-connector branch and bleak its BlueZ backend), and the hub's radio becomes the
`org.bluez` stand-in on the Bumble host the wrapped kit would have used, with the daemon's own
`ble_session` inside it (which registers the hub's pairing agent, as in production).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from gatewayd.driver import DriverPlugin
from gatewayd.models import Reading
from gatewayd.plugin.kit import DriverKit, Key, Target
from gatewayd.transport.ble import BleConfig, ble_session
from gatewayd.transport.bumble.registry import current_bumble_host

from .standin import FakeBluez, Faults

__all__ = ["BLUEZ", "BluezKit"]

#: The hub's `[ble]` on BlueZ (the default stack).
BLUEZ = BleConfig(stack="bluez")
_SETTINGS = ("readings_before", "readings_after", "live", "drops", "timeout", "redelivers",
             "backfills_after_drop", "device_id")  # fmt: skip


class BluezKit(DriverKit):
    """`kit` with the hub on BlueZ: same emulator, same hooks, same checks.

    `agent`: the daemon's `ble_session` runs (it registers the hub's pairing agent), as in
    production; False: it does not, as with bleak alone.
    """

    def __init__(self, kit: DriverKit, faults: Faults | None = None, *, agent: bool = True) -> None:
        self.kit = kit
        self.faults = faults or Faults()
        self.agent = agent
        self._bluez: FakeBluez | None = None
        for name in _SETTINGS:
            setattr(self, name, getattr(kit, name))

    def make_plugin(self) -> DriverPlugin[Any]:
        return self.kit.make_plugin()

    @contextlib.asynccontextmanager
    async def start_emulator(self) -> AsyncIterator[Target]:
        async with self.kit.start_emulator() as target:
            yield replace(target, ble=BLUEZ, radio=lambda: self._radio(target))

    @contextlib.asynccontextmanager
    async def _radio(self, target: Target) -> AsyncIterator[None]:
        inner = target.radio() if target.radio is not None else ble_session(target.ble)
        async with inner:
            self._bluez = FakeBluez(current_bumble_host(), self.faults)
            await self._bluez.start()
            try:
                if self.agent:
                    async with ble_session(BLUEZ):
                        yield
                else:
                    yield
            finally:
                await self.standin().stop()
            if not self.standin().calls["StartDiscovery"]:
                raise AssertionError("the gateway never went through org.bluez (no discovery)")

    def standin(self) -> FakeBluez:
        """The running stand-in (the last one, after a restart)."""
        if self._bluez is None:
            raise RuntimeError("the org.bluez stand-in is not running")
        return self._bluez

    async def restart_bluez(self, *, crash: bool = False) -> FakeBluez:
        """bluetoothd restarts: the running stand-in stops (`FakeBluez.stop`: cleanly, or by a
        `crash`) and a new one takes ``org.bluez``; returns the new one."""
        old = self.standin()
        await old.stop(crash=crash)
        self._bluez = FakeBluez(old.host, self.faults)
        await self._bluez.start()
        return self._bluez

    async def force_link_drop(self) -> None:
        await self.kit.force_link_drop()

    async def corrupt_next(self) -> None:
        await self.kit.corrupt_next()

    def expected_sequence(self, readings: Sequence[Reading]) -> Sequence[Key]:
        return self.kit.expected_sequence(readings)

    async def make_readings(self, count: int) -> None:
        await self.kit.make_readings(count)
