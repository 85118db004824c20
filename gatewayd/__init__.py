"""gatewayd: continuous glucose monitors over BLE and USB serial to MQTT, with nothing lost."""

__version__ = "0.1.0"
