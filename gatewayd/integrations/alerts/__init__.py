"""Alerts: lows, highs, fast change, predicted lows, signal loss, sensor and battery state.

Computed from stored readings by a pure engine (`engine.evaluate`) and published on
`<root>/<hub>/<device>/alert` (QoS 1) with the retained list of active alerts on `…/alerts`.
"""

from __future__ import annotations

from gatewayd.integrations.alerts.service import create
from gatewayd.integrations.alerts.settings import AlertsOptions, parse
from gatewayd.services import ServiceSpec

SPEC: ServiceSpec[AlertsOptions] = ServiceSpec(name="alerts", parse=parse, create=create)
