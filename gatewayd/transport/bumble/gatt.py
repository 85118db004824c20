"""Bumble's GATT client results and errors in bleak's terms (used by `BumbleClient`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Iterator

from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES, CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bumble import att
from bumble.core import UUID, BaseBumbleError
from bumble.core import TimeoutError as BumbleTimeoutError
from bumble.device import Connection

from gatewayd.cancellation import cancelling
from gatewayd.transport.bumble.scanner import uuid_from_le_bytes

__all__ = ["discover", "gatt_errors"]

#: ATT_Write_Command: opcode (1) + handle (2) before the value.
WRITE_COMMAND_HEADER = 3


def _uuid(value: UUID) -> str:
    return uuid_from_le_bytes(value.to_bytes())


def _properties(flags: int) -> list[CharacteristicPropertyName]:
    return [name for bit, name in CHARACTERISTIC_PROPERTIES.items() if flags & bit]


@contextlib.contextmanager
def gatt_errors(peer: str, what: str) -> Iterator[None]:
    """Bumble's exceptions as bleak's, saying what we were doing and with whom.

    ATT error response: `BleakGATTProtocolError` (its `.code` is the ATT code); no response in
    Bumble's 30 s: `TimeoutError`; the link went down under the request: `BleakError`; any other
    Bumble error: `BleakError`. A cancellation of the caller stays a cancellation.
    """
    try:
        yield
    except att.ATT_Error as exc:
        raise BleakGATTProtocolError(exc.error_code) from exc
    except BumbleTimeoutError as exc:
        raise TimeoutError(f"{what}: no response from {peer}") from exc
    except asyncio.CancelledError as exc:
        if cancelling():
            raise  # a real cancellation of the caller
        # Bumble cancels the pending request of a link that went down.
        raise BleakError(f"{what}: {peer} disconnected") from exc
    except BaseBumbleError as exc:
        raise BleakError(f"{what} with {peer} failed: {exc}") from exc


async def discover(
    connection: Connection, services: Collection[str] | None, mtu: Callable[[], int]
) -> BleakGATTServiceCollection:
    """Primary services (all, or those in `services`), their characteristics and descriptors.

    Bleak objects keep the Bumble proxies in `.obj`; characteristic handles are value handles.
    """
    gatt = connection.gatt_client
    wanted = [UUID(u) for u in services or ()]
    collection = BleakGATTServiceCollection()
    for service in await gatt.discover_services(wanted):
        bleak_service = BleakGATTService(service, service.handle, _uuid(service.uuid))
        collection.add_service(bleak_service)
        for char in await gatt.discover_characteristics((), service):
            bleak_char = BleakGATTCharacteristic(
                char,
                char.handle,
                _uuid(char.uuid),
                _properties(char.properties),
                lambda: mtu() - WRITE_COMMAND_HEADER,
                bleak_service,
            )
            collection.add_characteristic(bleak_char)
            for descriptor in await gatt.discover_descriptors(char):
                bleak_descriptor = BleakGATTDescriptor(
                    descriptor, descriptor.handle, _uuid(descriptor.type), bleak_char
                )
                collection.add_descriptor(bleak_descriptor)
            char.descriptors_discovered = True  # spares Bumble a rediscovery per subscribe
    return collection
