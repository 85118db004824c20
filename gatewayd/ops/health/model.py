"""Is the data path healthy? A pure model over periodic samples and an injected clock.

The watchdog pings systemd only while this says healthy, so systemd restarts a gateway that is
alive but useless (the "zombie gateway": process up, broker link `online`, nothing delivered).
What a restart cannot fix is not a fault here: it would only turn an honest retry into a
restart loop.

Per device (one `DeviceSample` per tick):

- `connected`: healthy while a reading arrived (duplicates count: the link delivers) within
  `max(grace * expected_interval, min_silence)` of the later of the connection and the previous
  reading. Beyond that the device is **wedged**: connected, yet silent. An infinite expected
  interval opts a device out (a relay whose source may legitimately go quiet).
- `connecting`, `backoff`, `parked`, `stopped`, or not reported yet: healthy. The device is
  honestly not connected (out of range, unplugged, refused) and says so on its status topic;
  the supervisor's own backoff is the remedy, a restart is not.

The broker link (one `PublisherSample` per tick):

- connected, readings waiting in the outbox, and no PUBACK for `publisher_stall` seconds:
  **wedged** (a publish that never completes, a drain loop that stopped).
- disconnected: healthy. The publisher retries with backoff and every reading waits in the
  store; restarting does not make an unreachable broker reachable. `STATUS=` says so.
- connected with an empty outbox: healthy (nothing is owed).

Progress is detected by change between samples (a device's `received` counter, a new status
phase, the publisher's `delivered` and `reconnects` counters), so the model needs no hooks in
the data path, and a sample is a handful of attribute reads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from gatewayd.device_status import LinkState

#: Seconds between readings when neither the driver nor the options say (CGMs: 1 or 5 min).
DEFAULT_INTERVAL = 300.0


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """The limits of the health model (defaults are the production values)."""

    #: A connected device may be silent this many expected intervals (a lost notification or
    #: two is normal: the driver backfills it with the next one).
    grace: float = 3.0
    #: ...but never less than this many seconds (1-second simulators, slow BLE reconnects).
    min_silence: float = 60.0
    #: Expected interval of a device whose driver and options do not give one.
    default_interval: float = DEFAULT_INTERVAL
    #: Seconds a connected publisher may owe readings without any PUBACK. Above the publish
    #: timeout (10 s) and the keep-alive detection (1.5 * keepalive), which end a dead link
    #: honestly (-> disconnected) long before this.
    publisher_stall: float = 180.0

    def silence_limit(self, expected_interval: float) -> float:
        """Seconds a connected device with this expected interval may stay silent."""
        return max(self.grace * expected_interval, self.min_silence)


@dataclass(frozen=True, slots=True)
class DeviceSample:
    """One device's loop as seen at one tick."""

    id: str
    #: None until the supervisor reported the device for the first time.
    state: LinkState | None
    #: When the current state began (a new value is a new phase, e.g. a reconnect).
    since: datetime | None
    #: Readings the driver delivered since start (new or duplicate).
    received: int
    #: Seconds between readings while connected.
    expected_interval: float


@dataclass(frozen=True, slots=True)
class PublisherSample:
    """The broker link as seen at one tick."""

    connected: bool
    #: Readings acknowledged by the broker since start.
    delivered: int
    #: Broker links lost or refused since start.
    reconnects: int
    #: Readings waiting in the store for the broker.
    outbox: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """The model's answer for one tick."""

    healthy: bool
    #: One short line per wedged part ("cgm-1: connected, no reading for 930 s (limit 900 s)").
    problems: tuple[str, ...]
    #: A short human summary for `STATUS=` (devices by state, broker, outbox).
    summary: str

    @property
    def status(self) -> str:
        """The `STATUS=` line: the problems first, then the summary."""
        if self.healthy:
            return self.summary
        shown = "; ".join(self.problems[:2])
        more = f" (+{len(self.problems) - 2} more)" if len(self.problems) > 2 else ""
        return f"WEDGED: {shown}{more} | {self.summary}"


@dataclass(slots=True)
class _DeviceMemory:
    phase: tuple[LinkState | None, datetime | None]
    received: int
    progress_at: float


@dataclass(slots=True)
class _PublisherMemory:
    sample: PublisherSample
    progress_at: float


class HealthModel:
    """Remembers when each part last made progress; `observe` once per tick."""

    def __init__(self, policy: HealthPolicy | None = None) -> None:
        self.policy = policy or HealthPolicy()
        self._devices: dict[str, _DeviceMemory] = {}
        self._publisher: _PublisherMemory | None = None

    def observe(
        self, now: float, devices: list[DeviceSample], publisher: PublisherSample
    ) -> Verdict:
        """Judge one tick's samples; `now` is monotonic seconds."""
        problems = [p for d in devices if (p := self._device(now, d)) is not None]
        if (p := self._broker(now, publisher)) is not None:
            problems.append(p)
        return Verdict(not problems, tuple(problems), _summary(devices, publisher))

    def _device(self, now: float, sample: DeviceSample) -> str | None:
        phase = (sample.state, sample.since)
        memory = self._devices.get(sample.id)
        if memory is None or memory.phase != phase or memory.received != sample.received:
            self._devices[sample.id] = _DeviceMemory(phase, sample.received, now)
            return None
        if sample.state is not LinkState.CONNECTED:
            return None
        silent = now - memory.progress_at
        limit = self.policy.silence_limit(sample.expected_interval)
        if silent <= limit:
            return None
        return f"{sample.id}: connected, no reading for {silent:.0f} s (limit {limit:.0f} s)"

    def _broker(self, now: float, sample: PublisherSample) -> str | None:
        memory = self._publisher
        if (
            memory is None
            or not sample.connected
            or sample.outbox == 0
            or not memory.sample.connected
            or memory.sample.outbox == 0
            or sample.delivered != memory.sample.delivered
            or sample.reconnects != memory.sample.reconnects
        ):
            self._publisher = _PublisherMemory(sample, now)
            return None
        memory.sample = sample
        stalled = now - memory.progress_at
        if stalled <= self.policy.publisher_stall:
            return None
        return (
            f"broker: connected, {sample.outbox} readings owed, no PUBACK for {stalled:.0f} s "
            f"(limit {self.policy.publisher_stall:.0f} s)"
        )


def _summary(devices: list[DeviceSample], publisher: PublisherSample) -> str:
    states = Counter(str(d.state) if d.state is not None else "starting" for d in devices)
    order = [str(s) for s in LinkState] + ["starting"]
    parts = ", ".join(f"{states[s]} {s}" for s in order if states[s])
    device_text = f"{len(devices)} device{'s' if len(devices) != 1 else ''}"
    if parts:
        device_text += f" ({parts})"
    broker = "broker connected" if publisher.connected else "broker unreachable, retrying"
    return f"{device_text}; {broker}; outbox {publisher.outbox}; delivered {publisher.delivered}"
