"""`gatewayd doctor`: is this hub fit to run unattended for months? One line per check.

    ok    config      /etc/gatewayd/config.toml: hub hub-livingroom, 1 device (simulator)
    ok    store       /var/lib/gatewayd/gatewayd.db: 0600, WAL, quick_check ok, 25920 readings
    ok    disk        /var/lib/gatewayd: 11.2 GB free of 14.6 GB
    ok    broker      mqtts://broker.example.org:8883 reachable, TLS verified (TLSv1.3), ...
    skip  bluetooth   no BLE device configured
    FAIL  serial      cgm-2 /dev/ttyACM0: permission denied for user gatewayd — add the ...
    warn  clock       not synchronised (adjtimex: STA_UNSYNC) — enable NTP: ...
    ok    security    TLS with certificate verification; no sensor serial in topics; ...

Each check is a small function returning a `Result` (status, message, hint); the command prints
them as they complete and exits 0 when none failed (warnings allowed), 1 when one did, 2 when the
config cannot be used (as every command does). See docs/doctor.md.
"""

from __future__ import annotations

from gatewayd.ops.doctor.core import Identity, Result, Status

__all__ = ["Identity", "Result", "Status"]
