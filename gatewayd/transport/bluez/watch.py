"""Who owns ``org.bluez`` on the system bus: bluetoothd starting, stopping or crashing.

bleak's BlueZ backend does not watch bluetoothd itself. When bluetoothd stops cleanly it
disconnects its devices first and bleak hears of it; when it crashes (or is killed) its D-Bus
objects vanish without a signal, the links drop in the kernel, and every bleak client keeps
reporting itself connected: a session waiting for notifications would wait forever. A
`BluezWatch` follows ``NameOwnerChanged`` of ``org.bluez`` and calls back on a new owner (the
hub's pairing agent registers again) and on a lost one (`establish` tells each client's owner
that its link is gone, `gatewayd.transport.ble`). One watch per event loop runs inside the
daemon's BlueZ `ble_session`; without it `when_bluez_lost` is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Final

import structlog
from dbus_fast import Message
from dbus_fast.aio import MessageBus

__all__ = ["BluezWatch", "bluez_watch", "when_bluez_lost"]

_MATCH: Final = (
    "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
    "member='NameOwnerChanged',arg0='org.bluez'"
)
Callback = Callable[[], None]

log = structlog.get_logger().bind(component="ble_bluez")
_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BluezWatch] = (
    weakref.WeakKeyDictionary()
)


class BluezWatch:
    """Calls back when ``org.bluez`` gets a new owner or loses its owner."""

    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus
        self._new: list[Callback] = []
        self._lost: list[Callback] = []

    async def start(self) -> None:
        """Subscribe to NameOwnerChanged of ``org.bluez``."""
        self._bus.add_message_handler(self._on_message)
        await self._bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[_MATCH],
            )
        )

    def close(self) -> None:
        """Stop calling back."""
        self._bus.remove_message_handler(self._on_message)
        self._new.clear()
        self._lost.clear()

    def on_new_owner(self, callback: Callback) -> None:
        """Call `callback` whenever bluetoothd (re)starts."""
        self._new.append(callback)

    def on_lost(self, callback: Callback) -> Callback:
        """Call `callback` once when bluetoothd goes; returns the function that cancels it."""
        self._lost.append(callback)

        def cancel() -> None:
            with contextlib.suppress(ValueError):
                self._lost.remove(callback)

        return cancel

    def _on_message(self, message: Message) -> None:
        if message.member != "NameOwnerChanged" or message.body[:1] != ["org.bluez"]:
            return
        if message.body[2]:
            log.info("bluez_started", owner=message.body[2])
            callbacks = list(self._new)
        else:
            log.warning("bluez_gone", owner=message.body[1])
            callbacks, self._lost = self._lost, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one broken listener must not starve the others
                log.exception("bluez_watch_callback_failed")


@contextlib.asynccontextmanager
async def bluez_watch(bus: MessageBus) -> AsyncIterator[BluezWatch]:
    """This event loop's watch on `bus` while inside."""
    loop = asyncio.get_running_loop()
    watch = BluezWatch(bus)
    await watch.start()
    _watches[loop] = watch
    try:
        yield watch
    finally:
        if _watches.get(loop) is watch:
            del _watches[loop]
        watch.close()


def when_bluez_lost(callback: Callback) -> Callback:
    """Call `callback` once if bluetoothd goes (a no-op without a watch in this loop); returns
    the function that cancels it."""
    watch = _watches.get(asyncio.get_running_loop())
    if watch is None:
        return lambda: None
    return watch.on_lost(callback)
