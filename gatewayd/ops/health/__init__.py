"""Health and systemd integration: sd_notify, the data-path health model, the watchdog task.

- `notify`: a dependency-free sd_notify client (READY, WATCHDOG, STATUS, STOPPING).
- `model`: the pure health model (devices silent while connected, a publisher owing PUBACKs).
- `watchdog`: the daemon task that pings systemd only while the model says healthy.

See docs/operations.md for the systemd unit and what the watchdog does and does not restart.
"""

from gatewayd.ops.health.model import (
    DEFAULT_INTERVAL,
    DeviceSample,
    HealthModel,
    HealthPolicy,
    PublisherSample,
    Verdict,
)
from gatewayd.ops.health.notify import Notifier, watchdog_interval

__all__ = [
    "DEFAULT_INTERVAL",
    "DeviceSample",
    "HealthModel",
    "HealthPolicy",
    "Notifier",
    "PublisherSample",
    "Verdict",
    "watchdog_interval",
]
