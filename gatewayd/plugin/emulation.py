"""Virtual BLE radios for emulators and tests (the optional ``bumble`` extra).

An emulated BLE device is a Bumble GATT server on a virtual controller; the gateway's radio is
another virtual controller on the same simulated air (a `LocalLink`):

* `in_process_link()` — both radios in this process: an `InProcessLink` whose `peripheral` is
  the emulator's Bumble `Device` and whose `central` is the gateway's `BumbleHost` (use it with
  `bumble_session(link.central)`, or the kit's `Target(radio=...)`);
* `serve_sibling_link(bind=, port=)` — for ``gatewayd simulate``: the gateway's controller is
  served as HCI over TCP, so a gateway in another process configures
  ``[ble] stack = "bumble"``, ``hci = SiblingLink.hci`` (``tcp-client:HOST:PORT``);
* `add_peripheral(link.link, name=, address=)` — one more device in the same air;
* `refuse_pairing(device)` — the device refuses every bond (a sensor bonded elsewhere);
* `bumble_session(host_or_hci)` — make a host (or an HCI transport) the radio of this event loop.

Importing this module imports Bumble: drivers use it in their emulators and kits only, never in
the code the daemon runs.
"""

from __future__ import annotations

from gatewayd.transport.bumble.host import BumbleHost
from gatewayd.transport.bumble.link import (
    InProcessLink,
    SiblingLink,
    add_peripheral,
    in_process_link,
    refuse_pairing,
    serve_sibling_link,
)
from gatewayd.transport.bumble.registry import bumble_session

__all__ = [
    "BumbleHost",
    "InProcessLink",
    "SiblingLink",
    "add_peripheral",
    "bumble_session",
    "in_process_link",
    "refuse_pairing",
    "serve_sibling_link",
]
