"""Device transports: how drivers reach their devices.

- `gatewayd.transport.ble`: the `[ble]` options (`BleConfig`) and what drivers pass to bleak's
  `BleakScanner` / `BleakClient` for the configured stack (BlueZ or Bumble), plus `establish`.
- `gatewayd.transport.gatt`: `GattLink`, the one connected BLE device a driver talks to
  (bounded GATT operations, the bond policy, the notification queue) and `ble_error`, the one
  mapping of bleak's errors to the daemon's.
- `gatewayd.transport.collector`: `CollectorLoop`, which runs a sans-I/O GATT collector on a link.
- `gatewayd.transport.ble_errors`: the one mapping of bleak's and BlueZ's errors to the daemon's.
- `gatewayd.transport.bluez`: the pairing agent and the bluetoothd watch (the default stack).
- `gatewayd.transport.bumble`: a bleak backend on Bumble's host stack (a USB dongle, a TCP HCI
  socket or an in-process virtual controller), so unmodified bleak code runs without BlueZ, and
  the virtual radios for tests and `gatewayd simulate`.

Nothing here imports Bumble until a Bumble module is imported, so BlueZ-only hubs pay nothing.
"""
