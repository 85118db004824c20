"""Simulated CGM: a plausible glucose trace with sensor sessions, backfill and link failures.

No hardware needed (transport "virtual"). The simulated person has a baseline around 110 mg/dL,
three meals a day at jittered times with imperfectly dosed insulin (post-meal highs of 180-250,
occasional lows below 70 and sometimes below 54), a dawn rise around 04:00-08:00 UTC, a slow
drift, and sensor noise. Values are whole mg/dL; below 40 or above 400 they are reported as
out of range LOW / HIGH. The trend is the sensor's own rate over 15 minutes.

The simulated sensor behaves like a real one: sessions of `session_days` with a `warmup`
without readings between them (each with a new session id, seq counting from 0), a memory of
the current and the previous session from which a reconnect backfills what the gateway missed,
lost notifications (backfilled in order before the next reading) and link dropouts (the sensor
stops advertising for a while). Everything is a pure function of the seed and the time: sessions
are aligned to a seed-derived epoch, so a restarted gateway sees the same session ids and seqs
for the same times and backfills exactly what it missed.

Options (all optional):

  interval          seconds between readings, > 0 (default 300)
  speed             how much faster than real time the `history` replay runs, >= 1
                    (default 1.0; once the simulated clock reaches the wall clock it runs in
                    real time, so no reading is ever dated in the future)
  history           seconds of simulated past to replay at `speed` before running in real
                    time, >= 0 (default 0: start at the wall clock). A first connection yields
                    nothing old: the replay arrives as live readings, `speed` times faster.
                    After a restart the replay starts at the newest stored reading instead,
                    so stored time is never replayed.
  seed              integer seed of the simulated person, sensors and link (default: derived
                    from the device id, so each device differs and stays the same)
  dropout_rate      probability per reading that the link drops, 0..1 (default 0.002)
  dropout_readings  intervals the link stays down after a dropout, >= 0 (default 3)
  missed_rate       probability per reading that a live notification is lost while the link
                    stays up, 0..1 (default 0.005)
  session_days      length of one sensor session in days, > 0 (default 10)
  warmup            seconds of warm-up without readings after each sensor change, >= 0
                    (default 7200)

Example::

    [[devices]]
    id = "sim1"
    driver = "simulator"
    interval = 60
    history = 86400
    speed = 720

Test hooks: `sensors.get(device_id)` is the simulated sensor of a device; its
`force_dropout()` and `force_miss()` make the next live reading drop the link or lose its
notification. `create_plugin(SensorRegistry(monotonic=..., sleep=...))` runs on virtual time.
"""

from __future__ import annotations

from functools import partial

from drivers.simulator.session import (
    SensorRegistry,
    SimulatorOptions,
    SimulatorSession,
    parse_options,
)
from gatewayd.plugin import DriverPlugin

__all__ = ["SensorRegistry", "SimulatorOptions", "create_plugin", "plugin", "sensors"]


def create_plugin(registry: SensorRegistry | None = None) -> DriverPlugin[SimulatorOptions]:
    """A simulator plugin whose sensors live in `registry` (a fresh one by default)."""
    return DriverPlugin(
        name="simulator",
        transport="virtual",
        help=__doc__ or "",
        parse_options=parse_options,
        open=partial(SimulatorSession, registry=registry or SensorRegistry()),
    )


#: The sensors of the process-wide plugin: they outlive sessions (reconnects see the same memory).
sensors = SensorRegistry()
plugin: DriverPlugin[SimulatorOptions] = create_plugin(sensors)
