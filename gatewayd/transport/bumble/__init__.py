"""A bleak backend on Bumble's host stack (the optional `bumble` extra).

`backend` gathers `host` (the stack), `registry` (one host per event loop), `scanner`,
`client` and `gatt`; `link` makes virtual radios for tests and `gatewayd simulate` (drivers'
emulators reach it as `gatewayd.plugin.emulation`). Nothing here is imported unless
`[ble] stack = "bumble"` or an emulator asks for it.
"""
