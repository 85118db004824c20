"""The MQTT topic tree (the versioned contract documented in the README).

    <root>/<hub>/status              hub availability: "online" (birth) / "offline" (LWT), retained
    <root>/<hub>/<device>/reading    every reading, QoS 1, not retained
    <root>/<hub>/<device>/state      the newest reading, retained
    <root>/<hub>/<device>/status     device link state, retained
    <root>/<hub>/<device>/alert      alert events (integrations.alerts), QoS 1, not retained
    <root>/<hub>/<device>/alerts     the device's active alerts, retained
    <root>/<hub>/<device>/summary    rolling summaries (gatewayd.integrations.summaries), retained

Ids come from the config (validated to be topic-safe); no serial number or other identifier of
a person appears in a topic unless the operator chose it as an id.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names of one hub."""

    root: str
    hub: str

    @property
    def hub_status(self) -> str:
        """Hub availability (LWT)."""
        return f"{self.root}/{self.hub}/status"

    @property
    def hub_outbox(self) -> str:
        """What waits in the hub's outbox and its last delivery (retained; homeassistant_hub)."""
        return f"{self.root}/{self.hub}/outbox"

    def device(self, device: str, leaf: str) -> str:
        """A per-device topic: leaf is `reading`, `state` or `status`."""
        return f"{self.root}/{self.hub}/{device}/{leaf}"

    def reading(self, device: str) -> str:
        """Every reading of a device."""
        return self.device(device, "reading")

    def state(self, device: str) -> str:
        """The newest reading of a device (retained)."""
        return self.device(device, "state")

    def status(self, device: str) -> str:
        """The link state of a device (retained)."""
        return self.device(device, "status")
