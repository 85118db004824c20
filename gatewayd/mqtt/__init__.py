"""The broker floor: the MQTT contract on the wire.

- `publisher`: drains the store's outbox to the broker with QoS 1, in order, and keeps the
  retained statuses; `broker_state` is its view of the broker link (failover, back-off).
- `topics`: the topic tree (`<root>/<hub>/<device>/reading`, …); `tls`: the TLS context.

The payloads' JSON Schemas stay in `gatewayd/schemas/` (their documented location).
"""
