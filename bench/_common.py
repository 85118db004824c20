"""What the benchmark scripts share: where and how a result lands (`bench/results/<name>.json`),
the config of a real daemon, a process's CPU time and the paired ratios every figure is quoted as.

Not a benchmark itself (`scripts/bench` skips files starting with `_`); the scripts import it as
a sibling module (`from _common import write_result`), like `_fleet_common`.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib.metadata import version
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Where every benchmark writes its JSON result (gitignored).
RESULTS = Path(__file__).resolve().parent / "results"
_TICK = os.sysconf("SC_CLK_TCK")


def result_header(name: str, *packages: str, **machine: Any) -> dict[str, Any]:
    """The keys every result starts with: `bench` (its name), `when` (UTC, to the second) and
    `machine`: Python, CPUs, the versions of `packages` ("paho-mqtt" as "paho_mqtt"), `machine`.
    """
    return {
        "bench": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            **{package.replace("-", "_"): version(package) for package in packages},
            **machine,
        },
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write `result` to `bench/results/<name>.json` (indented, newline-terminated); its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def toml_value(value: Any) -> str:
    """A Python scalar as a TOML value (strings quoted, booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def daemon_config(
    folder: Path,
    hub: str,
    broker: Any,
    devices: dict[str, dict[str, Any]],
    *,
    store: dict[str, Any] | None = None,
    mqtt: dict[str, Any] | None = None,
) -> Path:
    """Write `folder/gatewayd.toml` for a real `gatewayd run` against the test `broker` (a
    `mosquitto.Mosquitto`): the hub, its store in `folder`, the broker's
    credentials (password in a 0600 file: the daemon refuses one every user can read), JSON logs
    at info, and `devices` (id -> the `[[devices]]` keys, `driver` included); `store` and
    `mqtt` add keys to those sections. Its path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    password_file = folder / "mqtt.password"
    password_file.write_text(broker.password + "\n")
    password_file.chmod(0o600)
    lines = ["[hub]", f'id = "{hub}"', "[store]", f'path = "{folder / "gatewayd.db"}"']
    lines += [f"{key} = {toml_value(value)}" for key, value in (store or {}).items()]
    lines += [
        "[mqtt]",
        f'url = "mqtt://127.0.0.1:{broker.port}"',
        f'username = "{broker.username}"',
        f'password_file = "{password_file}"',
        *(f"{key} = {toml_value(value)}" for key, value in (mqtt or {}).items()),
        "[log]",
        'level = "info"',
        'format = "json"',
    ]
    for device_id, options in devices.items():
        lines += ["[[devices]]", f'id = "{device_id}"']
        lines += [f"{key} = {toml_value(value)}" for key, value in options.items()]
    config = folder / "gatewayd.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads), seconds, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15)


def paired(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """Per-round ratios a/b of paired measurements: their median, min and max, and the rounds.

    The figure every benchmark quotes: pairs are measured back to back in one run, so a machine
    whose speed drifts between rounds moves both sides of a pair alike. A pair with a zero, NaN
    or infinite side is left out.
    """
    ratios = sorted(a / b for a, b in pairs if b and math.isfinite(a) and math.isfinite(b))
    if not ratios:
        return {"median": None, "min": None, "max": None, "rounds": 0}
    middle = len(ratios) // 2
    median = ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2
    return {
        "median": round(median, 3),
        "min": round(ratios[0], 3),
        "max": round(ratios[-1], 3),
        "rounds": len(ratios),
    }


def round_pairs(
    runs: Iterable[T],
    a: str,
    b: str,
    value: Callable[[T], float],
    side: Callable[[T], str] = attrgetter("variant"),
    rounds: Callable[[T], int] = attrgetter("round"),
) -> list[tuple[float, float]]:
    """`(value(a's run), value(b's run))` for every round in which both sides `a` and `b` ran
    (`side` names a run's side, by default its `variant`; `rounds` its round, by default its
    `round`), in round order: what `paired()` takes."""
    first: dict[int, T] = {}
    second: dict[int, T] = {}
    for run in runs:
        if side(run) == a:
            first[rounds(run)] = run
        elif side(run) == b:
            second[rounds(run)] = run
    return [(value(first[n]), value(second[n])) for n in sorted(first.keys() & second.keys())]


def ratio_text(figure: dict[str, Any]) -> str:
    """`0.85 (0.80-0.91, 5 rounds)` for a `paired()` figure; a single pair says it has no spread."""
    if figure["median"] is None:
        return "n/a"
    if figure["rounds"] == 1:
        return f"{figure['median']:.2f} (one pair only: no spread)"
    return (
        f"{figure['median']:.2f} ({figure['min']:.2f}-{figure['max']:.2f}, "
        f"{figure['rounds']} rounds)"
    )


def wall_cpu_text(wall: dict[str, Any], cpu: dict[str, Any]) -> str:
    """A wall-time ratio with its CPU-time ratio beside it (two `paired()` figures)."""
    return f"{ratio_text(wall)}   CPU time {ratio_text(cpu)}"


class BenchSubscriber:
    """A paho subscriber thread of the bench process on the test broker, subscribed (SUBACK
    received) when the constructor returns; subclasses take each message in `on_message`, which
    runs on paho's thread (guard shared state with `self.lock`).
    """

    def __init__(self, broker: Any, client_id: str, filters: list[tuple[str, int]]) -> None:
        import threading

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.lock = threading.Lock()
        self._filters = filters
        ready = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311
        )
        self._client.username_pw_set(broker.username, broker.password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: ready.set()
        self._client.on_message = lambda _client, _userdata, msg: self.on_message(msg)
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()
        if not ready.wait(10.0):
            raise RuntimeError(f"{client_id} did not subscribe")

    def _on_connect(
        self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if not reason.is_failure:
            client.subscribe(self._filters)

    def on_message(self, msg: Any) -> None:
        """One message (paho's thread)."""
        raise NotImplementedError

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()
