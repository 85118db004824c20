"""GATT UUID helpers and the Device Information Service UUIDs, shared by the BLE families.

* `uuid16(0x2AA7) -> "00002aa7-0000-1000-8000-00805f9b34fb"` (the form bleak reports) and
  `normalize_uuid(value)` (accepts that form in any case, "2AA7", "0x2aa7" or an int).
* Device Information Service (0x180A) UUIDs, read by both collectors' drivers (§1.10 step 3):
  `DEVICE_INFORMATION_SERVICE`, `MANUFACTURER_NAME` (0x2A29), `MODEL_NUMBER` (0x2A24),
  `SERIAL_NUMBER` (0x2A25), `FIRMWARE_REVISION` (0x2A26), `HARDWARE_REVISION` (0x2A27),
  `SOFTWARE_REVISION` (0x2A28).
"""

from __future__ import annotations

from typing import Final

_BASE_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"


def uuid16(short: int) -> str:
    """The 128-bit lowercase string of a 16-bit SIG UUID."""
    return f"0000{short:04x}{_BASE_SUFFIX}"


def normalize_uuid(value: str | int) -> str:
    """`value` as a 128-bit lowercase UUID string (16-bit forms are expanded)."""
    if isinstance(value, int):
        return uuid16(value)
    text = value.strip().lower()
    text = text.removeprefix("0x")
    if len(text) == 4:
        try:
            return uuid16(int(text, 16))
        except ValueError:
            pass
    return text


DEVICE_INFORMATION_SERVICE: Final = uuid16(0x180A)
MANUFACTURER_NAME: Final = uuid16(0x2A29)
MODEL_NUMBER: Final = uuid16(0x2A24)
SERIAL_NUMBER: Final = uuid16(0x2A25)
FIRMWARE_REVISION: Final = uuid16(0x2A26)
HARDWARE_REVISION: Final = uuid16(0x2A27)
SOFTWARE_REVISION: Final = uuid16(0x2A28)
