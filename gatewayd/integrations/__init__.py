"""What is built on top of the stored readings, each optional and isolated from the live path.

- `alerts/`: low/high/rate/stale alerts (a service); `summaries/`: glycaemic summaries (a service).
- `export/`: clinician outputs for `gatewayd export` (FHIR CGM IG bundle, CSV, AGP report).
- `homeassistant`: MQTT discovery; `homeassistant_hub`: the hub device's retained outbox state.
- `nightscout`: the Nightscout bridge; `prometheus`: the `/metrics` endpoint.
"""
