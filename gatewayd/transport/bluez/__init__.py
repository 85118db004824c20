"""The BlueZ side of the BLE link: `agent` (the pairing agent on the system bus) and `watch`
(bluetoothd and adapter state, so a restart of bluetoothd is seen and survived)."""
