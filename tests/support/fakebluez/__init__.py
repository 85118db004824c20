"""An `org.bluez` stand-in for tests: bleak's real BlueZ backend over the project's Bumble host.

This machine kind has no Bluetooth in the kernel, so bluetoothd cannot run. bleak finds BlueZ
through ``DBUS_SYSTEM_BUS_ADDRESS``, so a private `dbus-daemon` (`DbusDaemon`) and this
stand-in, which owns ``org.bluez`` on it, let the production code path run unmodified in tests:
bleak's BlueZ backend (``bleak.backends.bluezdbus``), bleak-retry-connector's
``establish_connection`` and the ``bluez`` branch of ``gatewayd.transport.ble.establish``.

**The stand-in is the only emulated part.** It emulates bluetoothd's D-Bus behaviour
(Adapter1, Device1, GattService1/Characteristic1/Descriptor1, AgentManager1; StartNotify and
AcquireNotify) as BlueZ's documentation and source describe it, and uses the project's own
Bumble host (`gatewayd.transport.bumble.host.BumbleHost`) on the emulated link as its radio, so
the project's device emulators answer. It cannot show bugs inside bluetoothd or the kernel, nor
radio timing; see docs/ble.md for the list of what it reproduces and what only hardware shows.

* `FakeBluez(host, faults)` - the service (`standin`), `Faults` - its fault knobs;
* `BluezKit(kit, faults)` - any BLE `DriverKit` run over BlueZ through the stand-in (`kit`).
"""

from .daemon import DbusDaemon
from .kit import BLUEZ, BluezKit
from .standin import FakeBluez, Faults

__all__ = ["BLUEZ", "BluezKit", "DbusDaemon", "FakeBluez", "Faults"]
