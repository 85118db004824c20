"""BlueZ's D-Bus errors: names, and ATT error codes mapped as bluetoothd maps them.

`gatt_error(code)` follows bluetoothd's `create_gatt_dbus_error()` (src/gatt-client.c): the
security codes all become ``NotPermitted "Not paired"``, the two "not permitted" codes keep
their text (bleak tells read from write by it), and every code without a name of its own
becomes ``Failed "Operation failed with ATT error: 0xNN"`` (bleak parses the code back out).
"""

from __future__ import annotations

from dbus_fast.errors import DBusError

__all__ = [
    "ALREADY_CONNECTED",
    "ALREADY_EXISTS",
    "AUTHENTICATION_FAILED",
    "FAILED",
    "IN_PROGRESS",
    "NOT_CONNECTED",
    "NOT_PERMITTED",
    "SECURITY_CODES",
    "bluez_error",
    "gatt_error",
]

_PREFIX = "org.bluez.Error."
ALREADY_CONNECTED = _PREFIX + "AlreadyConnected"
ALREADY_EXISTS = _PREFIX + "AlreadyExists"
AUTHENTICATION_FAILED = _PREFIX + "AuthenticationFailed"
DOES_NOT_EXIST = _PREFIX + "DoesNotExist"
FAILED = _PREFIX + "Failed"
IN_PROGRESS = _PREFIX + "InProgress"
NOT_CONNECTED = _PREFIX + "NotConnected"
NOT_PERMITTED = _PREFIX + "NotPermitted"
NOT_SUPPORTED = _PREFIX + "NotSupported"

#: ATT codes on which bluetoothd raises the link's security and resends (shared/att.c):
#: insufficient authentication, insufficient encryption.
SECURITY_CODES = frozenset({0x05, 0x0F})

_BY_CODE: dict[int, tuple[str, str]] = {
    0x02: (NOT_PERMITTED, "Read not permitted"),
    0x03: (NOT_PERMITTED, "Write not permitted"),
    0x05: (NOT_PERMITTED, "Not paired"),
    0x06: (NOT_SUPPORTED, "Not supported"),
    0x07: (_PREFIX + "InvalidArguments", "Invalid offset"),
    0x08: (_PREFIX + "NotAuthorized", "Not authorized"),
    0x0C: (NOT_PERMITTED, "Not paired"),
    0x0D: (_PREFIX + "InvalidArguments", "Invalid Length"),
    0x0F: (NOT_PERMITTED, "Not paired"),
    0xFD: (_PREFIX + "ImproperlyConfigured", "Improperly configured"),
}


def bluez_error(name: str, text: str) -> DBusError:
    """A D-Bus error reply as bluetoothd sends it."""
    return DBusError(name, text)


def gatt_error(code: int) -> DBusError:
    """The D-Bus error bluetoothd answers a GATT method with after ATT error `code`."""
    name, text = _BY_CODE.get(code, (FAILED, f"Operation failed with ATT error: 0x{code:02x}"))
    return DBusError(name, text)
