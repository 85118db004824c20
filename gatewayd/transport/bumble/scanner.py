"""`BumbleScanner`: bleak's scanner contract on a Bumble host.

`BleakScanner(backend=BumbleScanner)`, `BleakScanner.discover(backend=BumbleScanner)` and
`BleakScanner.find_device_by_filter(..., backend=BumbleScanner)` work unmodified. Each Bumble
advertisement becomes a bleak `AdvertisementData` (local name, 16/32/128-bit service UUID lists,
service data, manufacturer data, the TX Power Level field, RSSI), filtered by bleak's
`service_uuids`. `BLEDevice.address` is the plain ``AA:BB:CC:DD:EE:FF`` string; `BLEDevice.details`
is a `BumbleDetails` keeping the typed Bumble address, so a connection uses the right address type
(public or random) without another scan.

Advertising data and scan responses are merged by Bumble into one advertisement. When an
advertisement carries no name, the name last seen from that device is kept (as BlueZ does).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bumble.core import AdvertisingData
from bumble.device import Advertisement

from gatewayd.transport.bumble.host import BumbleHost
from gatewayd.transport.bumble.registry import current_bumble_host

if TYPE_CHECKING:
    from bumble import hci

__all__ = ["BumbleDetails", "BumbleScanner", "advertisement_data"]

_T = AdvertisingData.Type
_UUID_LISTS = {
    _T.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _T.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _T.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    _T.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    _T.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
    _T.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
}
_SERVICE_DATA = {
    _T.SERVICE_DATA_16_BIT_UUID: 2,
    _T.SERVICE_DATA_32_BIT_UUID: 4,
    _T.SERVICE_DATA_128_BIT_UUID: 16,
}
# Bluetooth Base UUID: a 16- or 32-bit UUID `x` stands for 0000xxxx-0000-1000-8000-00805f9b34fb.
_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"


@dataclass(frozen=True)
class BumbleDetails:
    """`BLEDevice.details` of this backend: the advertiser's typed Bumble address."""

    address: hci.Address

    @property
    def is_public(self) -> bool:
        """Whether the address is a public (IEEE-assigned) one rather than a random one."""
        return bool(self.address.is_public)


def uuid_from_le_bytes(raw: bytes) -> str:
    """The bleak (lower-case, 128-bit) form of a little-endian 2-, 4- or 16-byte UUID."""
    if len(raw) in (2, 4):
        return f"{int.from_bytes(raw, 'little'):08x}{_BASE_UUID_TAIL}"
    return str(uuid.UUID(bytes=raw[::-1]))


def advertisement_data(
    advertisement: Advertisement, previous_name: str | None = None
) -> AdvertisementData:
    """Bleak's view of one Bumble advertisement (AD structures in the order received)."""
    local_name: str | None = None
    short_name: str | None = None
    service_uuids: list[str] = []
    service_data: dict[str, bytes] = {}
    manufacturer_data: dict[int, bytes] = {}
    tx_power: int | None = None
    for ad_type, value in advertisement.data.ad_structures:
        if ad_type in _UUID_LISTS:
            size = _UUID_LISTS[ad_type]
            for offset in range(0, len(value) - size + 1, size):
                found = uuid_from_le_bytes(value[offset : offset + size])
                if found not in service_uuids:
                    service_uuids.append(found)
        elif ad_type in _SERVICE_DATA and len(value) >= _SERVICE_DATA[ad_type]:
            size = _SERVICE_DATA[ad_type]
            service_data[uuid_from_le_bytes(value[:size])] = bytes(value[size:])
        elif ad_type == _T.MANUFACTURER_SPECIFIC_DATA and len(value) >= 2:
            (company,) = struct.unpack_from("<H", value)
            manufacturer_data[company] = bytes(value[2:])
        elif ad_type == _T.COMPLETE_LOCAL_NAME:
            local_name = value.decode("utf-8", errors="replace")
        elif ad_type == _T.SHORTENED_LOCAL_NAME:
            short_name = value.decode("utf-8", errors="replace")
        elif ad_type == _T.TX_POWER_LEVEL and len(value) == 1:
            (tx_power,) = struct.unpack("<b", value)
    return AdvertisementData(
        local_name=local_name or short_name or previous_name,
        manufacturer_data=manufacturer_data,
        service_data=service_data,
        service_uuids=service_uuids,
        tx_power=tx_power,
        rssi=advertisement.rssi,
        platform_data=(advertisement,),
    )


class BumbleScanner(BaseBleakScanner):
    """Bleak scanner backend on the Bumble host of the running loop (or a bound one)."""

    #: Set on the subclasses made by `bumble_backend(host)`; None: the loop's configured host.
    bound_host: ClassVar[BumbleHost | None] = None

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        **kwargs: Any,  # bleak passes the other platforms' options (bluez=, cb=): not ours
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._active = scanning_mode != "passive"
        self._host: BumbleHost | None = None
        self._token: object | None = None

    @classmethod
    def host(cls) -> BumbleHost:
        """The host this scanner class uses."""
        return cls.bound_host or current_bumble_host()

    async def start(self) -> None:
        """Start scanning (the host shares one controller scan among its scanners)."""
        if self._token is not None:
            return
        self.seen_devices = {}
        self._host = type(self).host()
        self._token = await self._host.start_scan(self._on_advertisement, active=self._active)

    async def stop(self) -> None:
        """Stop delivering advertisements to this scanner."""
        host, token = self._host, self._token
        self._token = None
        if host is not None and token is not None:
            await host.stop_scan(token)

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        address = advertisement.address
        key = address.to_string(with_type_qualifier=True)  # public and random are distinct
        previous = self.seen_devices.get(key)
        data = advertisement_data(advertisement, previous[0].name if previous else None)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        device = self.create_or_update_device(
            key,
            address.to_string(with_type_qualifier=False),
            data.local_name,
            BumbleDetails(address),
            data,
        )
        self.call_detection_callbacks(device, data)
