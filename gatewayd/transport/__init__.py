"""Device transports: how drivers reach their devices.

- `gatewayd.transport.ble`: the `[ble]` options (`BleConfig`) and what drivers pass to bleak's
  `BleakScanner` / `BleakClient` for the configured stack (BlueZ or Bumble), plus `establish`.
- `gatewayd.transport.bumble_backend`: a bleak backend on Bumble's host stack (a USB dongle, a TCP
  HCI socket or an in-process virtual controller), so unmodified bleak code runs without BlueZ;
  it gathers `bumble_host` (the stack), `bumble_registry` (one host per event loop),
  `bumble_scanner`, `bumble_client` and `bumble_gatt`.
- `gatewayd.transport.bumble_link`: virtual radios for tests and `gatewayd simulate`.

Nothing here imports Bumble until a Bumble module is imported, so BlueZ-only hubs pay nothing.
"""
