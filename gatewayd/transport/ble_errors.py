"""One mapping of bleak's errors (and BlueZ's D-Bus errors as bleak raises them) to the daemon's.

`ble_error` decides what a failed BLE step means to the supervisor: retried (`LinkLost`,
`DeviceNotFound`, `DeviceError`, `AttError`) or parked (`DeviceRefused`: a person must act).
`gatewayd.transport.gatt.GattLink` and `gatewayd.transport.ble.establish` use it; no bleak
exception ever reaches the supervisor. The `bond` policy (`Bond`: "auto" / "always" / "never")
words the reasons of devices that want a bond.

Error mapping (`ble_error`), the same for every driver and both stacks:

=============================================================  ===============================
what bleak (or the stack) raised                               gatewayd error
=============================================================  ===============================
`TimeoutError` (our bound, or the stack's own)                 `LinkLost` (retried)
`BleakDeviceNotFoundError` / bleak-retry-connector's
`BleakNotFoundError`                                           `DeviceNotFound` (retried)
`BleakGATTProtocolError` 0x05 / 0x0F / 0x0C after a bond, or
with ``bond = "never"``                                        `DeviceRefused` (parked)
`BleakGATTProtocolError`, any other code; `BleakDBusError`
``NotPermitted`` "Read / Write not permitted"                  `AttError` (`.code`; retried)
`BleakDBusError` ``org.bluez.Error.NotPermitted`` ("Not
paired"), ``AuthenticationFailed`` / ``AuthenticationRejected``
/ ``AuthenticationCanceled``                                   `DeviceRefused` (parked)
`BleakDBusError` ``InProgress``, ``Failed``, ``NotConnected``,
``NotReady``, ``DoesNotExist``, ``AuthenticationTimeout``,
``UnknownObject``, D-Bus ``NoReply`` / ``ServiceUnknown``      `LinkLost` (retried)
any other `BleakError` while pairing and still connected       `DeviceRefused` (parked)
any other `BleakError` while connecting                        `DeviceError` (retried)
any other `BleakError` once the link is down                   `LinkLost` (retried)
any other `BleakError`                                         `DeviceError` (retried)
=============================================================  ===============================
"""

from __future__ import annotations

from typing import Final, Literal

from bleak.exc import (
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)

from gatewayd.errors import AttError, DeviceError, DeviceNotFound, DeviceRefused, LinkLost

__all__ = ["BONDS", "SECURITY_ERRORS", "Bond", "Phase", "ble_error", "bond_never", "security_code"]

Bond = Literal["auto", "always", "never"]
BONDS: Final[tuple[Bond, ...]] = ("auto", "always", "never")
#: The step an error happened in: connecting (scan + connect), a GATT operation, or pairing.
Phase = Literal["connect", "gatt", "pair"]
#: ATT errors that mean "bond first": insufficient authentication / encryption / key size.
SECURITY_ERRORS: Final = frozenset({0x05, 0x0F, 0x0C})

# BlueZ's D-Bus errors (bluetoothd src/error.c, src/gatt-client.c) as bleak 3.x raises them.
_BLUEZ = "org.bluez.Error."
#: bluetoothd made (or tried) the bond itself and it failed, or the device refused it.
_BOND_FAILED: Final = frozenset(
    _BLUEZ + name
    for name in ("AuthenticationFailed", "AuthenticationRejected", "AuthenticationCanceled")
)
_NOT_PERMITTED: Final = _BLUEZ + "NotPermitted"
#: ... the ATT errors BlueZ reports as NotPermitted that are not about security.
_NOT_PERMITTED_ATT: Final = {
    "Read not permitted": BleakGATTProtocolErrorCode.READ_NOT_PERMITTED,
    "Write not permitted": BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED,
}
#: The link (or bluetoothd's view of it) is gone or busy: connecting again is expected to help.
_LINK_ERRORS: Final = frozenset(
    {
        *(
            _BLUEZ + name
            for name in (
                "InProgress", "Failed", "NotConnected", "NotReady", "DoesNotExist",
                "AuthenticationTimeout", "ConnectionAttemptFailed", "UnknownObject",
            )
        ),
        "org.freedesktop.DBus.Error.UnknownObject",
        "org.freedesktop.DBus.Error.NoReply",
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.Disconnected",
    }
)  # fmt: skip


def security_code(exc: BaseException) -> int | None:
    """The ATT code when `exc` is the device's "bond first" answer (0x05 / 0x0F / 0x0C)."""
    if isinstance(exc, BleakGATTProtocolError) and int(exc.code) in SECURITY_ERRORS:
        return int(exc.code)
    return None


_ATT_NAMES: Final = {int(c): c.name.lower().replace("_", " ") for c in BleakGATTProtocolErrorCode}


def _att_name(code: int) -> str:
    if code in _ATT_NAMES:
        return _ATT_NAMES[code]
    return "application error" if 0x80 <= code <= 0x9F else "unknown error"


def _bluez_not_found(exc: BaseException) -> bool:
    if isinstance(exc, BleakDeviceNotFoundError):
        return True
    from bleak_retry_connector import BleakNotFoundError

    return isinstance(exc, BleakNotFoundError)


def ble_error(  # noqa: PLR0911 - one return per row of the mapping table
    exc: BaseException,
    what: str,
    *,
    device: str | None = None,
    bond: Bond = "auto",
    phase: Phase = "gatt",
    connected: bool = True,
    noun: str = "device",
) -> DeviceError:
    """What a bleak error (or timeout) `exc` during `what` means to the supervisor.

    The one mapping of the project (table in the module docstring). `phase` is the step that
    failed, `connected` whether the link was still up afterwards, `bond` the policy in force
    (it words the reason of a device that wants a bond), `noun` what the device is called in
    messages ("sensor", "meter", "transmitter"). A `DeviceError` is returned as it is.
    """
    if isinstance(exc, DeviceError):
        return exc
    if isinstance(exc, TimeoutError):
        return LinkLost(f"{what}: no answer from the {noun}", device=device)
    if _bluez_not_found(exc):
        return DeviceNotFound(f"{what}: {exc}", device=device)
    if (code := security_code(exc)) is not None:
        detail = f"ATT 0x{code:02x} {_att_name(code)}"
        if bond == "never":
            return bond_never(what, detail, device=device, noun=noun)
        return DeviceRefused(
            f"{what}: the {noun} still refuses ({detail}) although the hub bonded with it: "
            f"the bond is stale; remove the hub from the {noun}'s paired devices and the "
            f"{noun} from the hub's, then restart gatewayd to pair again",
            device=device,
        )
    if isinstance(exc, BleakGATTProtocolError):
        code = int(exc.code)
        return AttError(
            f"{what}: the {noun} answered ATT 0x{code:02x} ({_att_name(code)})", code, device=device
        )
    if isinstance(exc, BleakDBusError):
        return _dbus_error(exc, what, device=device, bond=bond, noun=noun)
    if phase == "pair" and connected:
        return _bond_refused(what, str(exc) or type(exc).__name__, device=device, noun=noun)
    if phase == "connect":
        return DeviceError(f"{what}: {exc or type(exc).__name__}", device=device)
    if not connected:
        return LinkLost(f"{what}: the {noun} dropped the link ({exc})", device=device)
    return DeviceError(f"{what}: {exc or type(exc).__name__}", device=device)


def _dbus_error(
    exc: BleakDBusError, what: str, *, device: str | None, bond: Bond, noun: str
) -> DeviceError:
    name, details = exc.dbus_error, exc.dbus_error_details or ""
    if name == _NOT_PERMITTED and details in _NOT_PERMITTED_ATT:
        code = int(_NOT_PERMITTED_ATT[details])
        return AttError(f"{what}: the {noun} answered {details}", code, device=device)
    if name == _NOT_PERMITTED or name in _BOND_FAILED:
        # bluetoothd pairs by itself on an ATT security error: this is its bond that failed
        reason = f"{name.removeprefix(_BLUEZ)}{': ' + details if details else ''}"
        if bond == "never":
            return bond_never(what, reason, device=device, noun=noun)
        return _bond_refused(what, reason, device=device, noun=noun)
    if name in _LINK_ERRORS:
        return LinkLost(f"{what}: {exc}", device=device)
    return DeviceError(f"{what}: {exc}", device=device)


def bond_never(what: str, detail: str, *, device: str | None, noun: str) -> DeviceRefused:
    """The refusal of a device that requires a bond while the policy is ``bond = "never"``."""
    return DeviceRefused(
        f'{what}: the {noun} requires bonding ({detail}) and bond = "never": set bond = "auto" '
        f"to let the hub pair with it, then restart gatewayd",
        device=device,
    )


def _bond_refused(what: str, detail: str, *, device: str | None, noun: str) -> DeviceRefused:
    return DeviceRefused(
        f"{what}: bonding refused by the {noun} ({detail}): remove the hub from the {noun}'s "
        f"paired devices or put the {noun} in pairing mode, then restart gatewayd",
        device=device,
    )
